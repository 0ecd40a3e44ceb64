"""Colorizer stage: one global pass that predicts chroma from lightness at a reduced working resolution.

The pipeline converts the restored photo to CIE L*, shrinks it so the long side is at most `work_size`, calls the
stage once for the whole image, then upsamples ab (`upsample_ab`) and combines it band by band with the
full-resolution L (`combine`). Detail lives in L, which is never touched; chroma varies slowly, so a low-resolution
estimate costs little and keeps memory bounded. One pass over the whole image keeps the colours consistent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import registry
from ..ops.color import lab_to_rgb
from ..registry import WeightsEntry
from .base import shape_of

DEFAULT_WORK_SIZE = 512  # long side of the working resolution, used when the weights' meta does not say


def work_shape(height: int, width: int, work_size: int) -> tuple[int, int]:
    """Shape (h, w) of the working image: long side at most `work_size`, aspect ratio kept, never enlarged."""
    if height < 1 or width < 1 or work_size < 1:
        raise ValueError(f"work_shape: need positive sizes, got {height}x{width} and work size {work_size}")
    f = min(1.0, work_size / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


def shrink_lightness(l: torch.Tensor, work_size: int) -> torch.Tensor:
    """L (B, 1, H, W) in [0, 100] -> (B, 1, h, w) at `work_shape` (area averaging, so no aliasing)."""
    if l.dim() != 4 or l.shape[1] != 1:
        raise ValueError(f"shrink_lightness: expected (B, 1, H, W), got shape {tuple(l.shape)}")
    size = work_shape(l.shape[-2], l.shape[-1], work_size)
    return l if size == tuple(l.shape[-2:]) else F.interpolate(l, size=size, mode="area")


def upsample_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ab (B, 2, h, w) -> (B, 2, H, W) by bilinear interpolation (chroma is smooth; L keeps the edges)."""
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"upsample_ab: expected (B, 2, h, w), got shape {tuple(ab.shape)}")
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    return F.interpolate(ab, size=tuple(size), mode="bilinear", align_corners=False)


def combine(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """L (B, 1, H, W) in [0, 100] and ab (B, 2, H, W) of the same size -> sRGB (B, 3, H, W) in [0, 1] (clipped)."""
    if l.dim() != 4 or l.shape[1] != 1 or ab.dim() != 4 or ab.shape[1] != 2 or l.shape[-2:] != ab.shape[-2:]:
        raise ValueError(f"combine: expected L (B, 1, H, W) and ab (B, 2, H, W), got {tuple(l.shape)} and "
                         f"{tuple(ab.shape)}")
    return lab_to_rgb(torch.cat((l, ab.to(l.dtype)), 1))


class Colorizer:
    """Wraps a network L (B, 1, h, w) in [0, 100] -> ab (B, 2, h, w) in Lab units.

    work_size: long side of the working resolution the model was trained for; bigger inputs are shrunk inside
    the call and the prediction is upsampled back, so any input size gives an ab map of the same size.
    entry: the registry entry (name, sha256, meta) for reports; None for ad-hoc models.
    """

    amp = False  # one small pass per photo; float32 keeps GroupNorm and the ab scale exact

    def __init__(self, model: torch.nn.Module, work_size: int = DEFAULT_WORK_SIZE, entry: WeightsEntry | None = None):
        if int(work_size) < 16:
            raise ValueError(f"colorizer work size must be >= 16, got {work_size}")
        self.model = model.eval()
        self.work_size = int(work_size)
        self.entry = entry

    @classmethod
    def from_registry(cls, name: str, device: str | torch.device = "cpu", work_size: int | None = None) -> "Colorizer":
        """Load weights `name`; work_size None takes meta["work_size"] (what it was validated at)."""
        entry = registry.get(name, "colorizer_unet")
        if work_size is None:
            work_size = int(entry.meta.get("work_size", DEFAULT_WORK_SIZE))
        return cls(registry.load_entry(entry, device), work_size, entry)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, lightness: torch.Tensor) -> torch.Tensor:
        """lightness (B, 1, h, w) CIE L* in [0, 100] -> ab (B, 2, h, w) CIE a*, b* (about [-110, 110]),
        on the input's device, float32."""
        if not isinstance(lightness, torch.Tensor) or lightness.dim() != 4 or lightness.shape[1] != 1:
            raise ValueError(f"Colorizer: expected L (1, 1, h, w) in [0, 100], got {shape_of(lightness)}")
        if not lightness.is_floating_point():
            raise ValueError(f"Colorizer: expected float L in [0, 100], got dtype {lightness.dtype}")
        size = tuple(lightness.shape[-2:])
        with torch.inference_mode():
            l = lightness.to(self.device, torch.float32).clamp(0.0, 100.0)
            ab = self.model(shrink_lightness(l, self.work_size))
            return upsample_ab(ab, size).to(lightness.device)
