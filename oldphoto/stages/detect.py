"""Detector stage: a loaded defect-detection network as a tile function.

(B, 3, T, T) float in [0, 1] -> defect probability (B, 1, T, T) in [0, 1]. The pipeline merges the per-tile
probabilities (feathered overlap) and thresholds the merged map, so no seams come from thresholding per tile.
"""

from __future__ import annotations

import torch

from .. import registry
from ..registry import WeightsEntry
from .base import fold_batch_norms

DEFAULT_THRESHOLD = 0.5  # used only when weights carry no tuned threshold in their meta


class Detector:
    """Wraps a network returning defect logits (B, 1, H, W) for images (B, 1|3, H, W) in [0, 1].

    threshold: probability above which a pixel is a defect (tuned on validation, stored in the weights' meta).
    entry: the registry entry the weights came from (name, sha256, meta) for the report; None for ad-hoc models.
    """

    def __init__(self, model: torch.nn.Module, threshold: float = DEFAULT_THRESHOLD, entry: WeightsEntry | None = None):
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"detector threshold must be in (0, 1), got {threshold}")
        # NHWC: oneDNN's convolutions run ~1.3-1.4x faster on CPU with it, with the same results
        self.model = fold_batch_norms(model.eval()).to(memory_format=torch.channels_last)
        self.threshold = float(threshold)
        self.entry = entry

    @classmethod
    def from_registry(cls, name: str, device: str | torch.device = "cpu", threshold: float | None = None) -> "Detector":
        """Load weights `name`; threshold None takes meta["threshold"] (the value tuned on validation)."""
        entry = registry.get(name)
        if threshold is None:
            threshold = float(entry.meta.get("threshold", DEFAULT_THRESHOLD))
        return cls(registry.load_entry(entry, device), threshold, entry)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles (B, 3, T, T) float in [0, 1] -> probability (B, 1, T, T) in [0, 1], on the tiles' device."""
        if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4 or tiles.shape[1] not in (1, 3):
            shape = tuple(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
            raise ValueError(f"Detector: expected tiles (B, 3, T, T) float in [0, 1], got {shape}")
        if not tiles.is_floating_point():
            raise ValueError(f"Detector: expected float tiles in [0, 1], got dtype {tiles.dtype}")
        with torch.inference_mode():
            x = tiles.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            logits = self.model(x)
            return torch.sigmoid(logits).to(tiles.device).contiguous()

    def binarize(self, prob: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Probability map (any shape) -> {0, 1} float mask with the stage's (or the given) threshold."""
        t = self.threshold if threshold is None else float(threshold)
        return (prob > t).to(prob.dtype)
