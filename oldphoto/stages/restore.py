"""Restorer stage: latent-space restoration G_Y(T(E_RX(x), m)) of a batch of tiles (Wan et al. 2020), then,
when a refiner is loaded, its image-space fusion F(x, G_Y(T(E_RX(x), m)), m) (archs/refiner.py).

(B, 3, T, T) float in [0, 1] + defect mask (B, 1, T, T) in [0, 1] (1 = defect) -> (B, 3, T, T) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import registry
from ..errors import WeightsError
from ..registry import WeightsEntry
from .base import shape_of

MULTIPLE = 4  # the latent grid is 1/4 of the tile


def restore_threshold(restorer, detector) -> float:
    """Detector threshold for masks handed to `restorer`: the detector's own restore_threshold where it has one
    (a TwoScaleDetector, whose combined probabilities run higher), else the one the restorer's mapping was tuned
    with, else the detector's."""
    own = getattr(detector, "restore_threshold", None)
    if own is not None:
        return float(own)
    preferred = getattr(restorer, "mask_threshold", None)
    return float(detector.threshold if preferred is None else preferred)


def _check_trained_with(entry: WeightsEntry, parts: dict[str, WeightsEntry], fix: str) -> None:
    """WeightsError when `entry`'s meta records other weights for any of `parts` than the entries given."""
    for key, part in parts.items():
        trained_with = entry.meta.get(key, {}).get("sha256")
        if trained_with is not None and trained_with != part.sha256:
            raise WeightsError(f"{entry.name} was trained with {key} weights {trained_with[:12]}… but {part.name} is "
                               f"{part.sha256[:12]}…; {fix}")


class Restorer:
    """Wraps the three networks: encoder E_RX of VAE1, mapping T, decoder G_Y of VAE2, and optionally the refiner.

    `entries` lists the registry entries (VAE1, mapping, VAE2, and the refiner when loaded) for the report. A
    tile whose three channels are equal (a grayscale scan fed as RGB) comes back gray: the networks' small colour
    drift is averaged away, so the stage never invents colour.
    """

    def __init__(self, encoder: torch.nn.Module, mapping: torch.nn.Module, decoder: torch.nn.Module,
                 entries: tuple[WeightsEntry, ...] = (), mask_threshold: float | None = None,
                 refiner: torch.nn.Module | None = None):
        # NHWC: oneDNN's convolutions run these networks ~1.3x faster on CPU (2 threads), same results to 1e-6
        self.encoder = encoder.eval().to(memory_format=torch.channels_last)
        self.mapping = mapping.eval().to(memory_format=torch.channels_last)
        self.decoder = decoder.eval().to(memory_format=torch.channels_last)
        self.refiner = None if refiner is None else refiner.eval().to(memory_format=torch.channels_last)
        self.entries = list(entries)
        # detector threshold that gives this mapping its best restorations (None: the detector's own)
        self.mask_threshold = None if mask_threshold is None else float(mask_threshold)

    @classmethod
    def from_registry(cls, vae1: str, mapping: str, vae2: str, device: str | torch.device = "cpu",
                      refiner: str | None = None) -> "Restorer":
        """Load weights: `vae1` and `vae2` are "vae" entries (their encoder / decoder are used), `mapping` a "mapping",
        `refiner` (optional) a "refiner".

        The mapping only works with the VAEs it was trained with, the refiner only with the networks whose outputs
        it was trained on: the sha256 recorded in their meta must match the entries given (WeightsError otherwise).
        """
        e1, em, e2 = registry.get(vae1, "vae"), registry.get(mapping, "mapping"), registry.get(vae2, "vae")
        _check_trained_with(em, {"vae1": e1, "vae2": e2}, "re-export the mapping run (it publishes its own VAEs)")
        entries, refine = (e1, em, e2), None
        if refiner:
            er = registry.get(refiner, "refiner")
            _check_trained_with(er, {"vae1": e1, "mapping": em, "vae2": e2}, "retrain the refiner on these networks")
            entries, refine = entries + (er,), registry.load_entry(er, device)
        return cls(registry.load_entry(e1, device).encoder, registry.load_entry(em, device),
                   registry.load_entry(e2, device).decoder, entries, em.meta.get("mask_threshold"), refine)

    @property
    def device(self) -> torch.device:
        return next(self.mapping.parameters()).device

    def __call__(self, tiles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tiles (B, 3, T, T) float [0, 1], mask (B, 1, T, T) [0, 1] -> restored (B, 3, T, T) [0, 1], tiles' device.

        Any H, W work (padded by reflection to a multiple of 4 and cropped back); square tiles are the usual case.
        """
        ok = isinstance(tiles, torch.Tensor) and tiles.dim() == 4 and tiles.shape[1] == 3
        if not ok or not tiles.is_floating_point():
            raise ValueError(f"Restorer: expected float tiles (B, 3, H, W) in [0, 1], got {shape_of(tiles)}")
        b, _, h, w = tiles.shape
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, 1, h, w):
            raise ValueError(f"Restorer: expected mask {(b, 1, h, w)} for tiles {tuple(tiles.shape)}, "
                             f"got {shape_of(mask)}")
        with torch.inference_mode():
            x = tiles.to(self.device, torch.float32)
            m = mask.to(self.device, torch.float32)
            ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
            if ph or pw:
                # reflection needs pad < size; tiles this small are not worth restoring anyway, replicate then
                mode = "reflect" if ph < h and pw < w else "replicate"
                x, m = F.pad(x, (0, pw, 0, ph), mode=mode), F.pad(m, (0, pw, 0, ph), mode=mode)
            mu, _ = self.encoder(x.contiguous(memory_format=torch.channels_last))
            y = self.decoder(self.mapping(mu, m)).float().clamp(0, 1)
            if self.refiner is not None:
                y = self.refiner(x.contiguous(memory_format=torch.channels_last), y, m).float().clamp(0, 1)
            y = y[:, :, :h, :w].contiguous()
            gray = (tiles.amax(1) - tiles.amin(1)).flatten(1).amax(1) <= 1e-6  # (B,) channels identical
            if bool(gray.any()):
                y = torch.where(gray.to(y.device).view(b, 1, 1, 1), y.mean(1, keepdim=True).expand_as(y), y)
            return y.to(tiles.device)
