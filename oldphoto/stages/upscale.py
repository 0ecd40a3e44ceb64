"""Upscaler stage: a loaded super-resolution network as a tile function.

(B, 3, T, T) float in [0, 1] -> (B, 3, sT, sT) in [0, 1]. The pipeline merges the upscaled tiles with a feathered
overlap scaled by s, so the few border pixels a 3x3 conv stack gets wrong are blended away.
"""

from __future__ import annotations

import torch

from .. import registry
from ..registry import WeightsEntry
from .base import check_tiles


class Upscaler:
    """Wraps a network `model(x, scale) -> (B, 3, sH, sW)` (see archs/upscaler.py) at one fixed `scale`.

    entry: the registry entry (name, sha256, meta) for reports; None for ad-hoc models.
    """

    def __init__(self, model: torch.nn.Module, scale: int, entry: WeightsEntry | None = None):
        scales = tuple(getattr(model, "scales", ()))
        if int(scale) not in scales:
            raise ValueError(f"upscale factor {scale} not supported by this model (has {scales or 'none'})")
        # channels_last: oneDNN's direct convolutions are markedly faster in NHWC on CPU.
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.scale = int(scale)
        self.entry = entry

    @classmethod
    def from_registry(cls, name: str, scale: int, device: str | torch.device = "cpu") -> "Upscaler":
        """Load the "upscaler" entry `name`, run at `scale` (one of the model's scales, ValueError otherwise)."""
        entry = registry.get(name, "upscaler")
        return cls(registry.load_entry(entry, device), scale, entry)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles (B, 3, T, T) float in [0, 1] -> (B, 3, sT, sT) in [0, 1] (clipped), on the tiles' device."""
        check_tiles("Upscaler", tiles)
        with torch.inference_mode():
            x = tiles.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            out = self.model(x, self.scale)
            return out.clamp_(0.0, 1.0).contiguous().to(tiles.device)
