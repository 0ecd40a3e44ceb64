"""Defect masks: grow, shrink to a latent grid, and a classical morphological detector (baseline).

Masks are (B, 1, H, W) float in [0, 1], 1 = defect. Images are (B, 1|3, H, W) float in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color import luma


def _check_mask(mask: torch.Tensor, what: str) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{what}: expected a (B, 1, H, W) mask, got {shape}")


def _max_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square max filter of odd `size`, same output size; borders replicate (no bias toward the edge)."""
    r = size // 2  # a square element is a row then a column: 2 size compares a pixel instead of size**2
    x = F.max_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, size), stride=1)
    return F.max_pool2d(F.pad(x, (0, 0, r, r), mode="replicate"), (size, 1), stride=1)


def dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Grow a (B, 1, H, W) mask by `radius` pixels with a square (2r+1)^2 element. radius 0 returns the mask."""
    _check_mask(mask, "dilate")
    if radius < 0:
        raise ValueError(f"dilate: radius must be >= 0, got {radius}")
    if radius == 0:
        return mask
    return _max_filter(mask, 2 * radius + 1)


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) mask -> (B, 1, h, w): a cell is as defective as its worst pixel (max pooling).

    Conservative on purpose: a latent cell touched by a scratch must not serve as a source of intact features.
    Sizes need not divide (adaptive pooling); upsampling is refused.
    """
    _check_mask(mask, "downsample_mask")
    h, w = int(size[0]), int(size[1])
    if not (0 < h <= mask.shape[2] and 0 < w <= mask.shape[3]):
        raise ValueError(f"downsample_mask: target {(h, w)} must be positive and <= the mask's {tuple(mask.shape[2:])}")
    return F.adaptive_max_pool2d(mask, (h, w))


def _gray(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected (B, 1 or 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
    return luma(x) if x.shape[1] == 3 else x


def tophat_response(x: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Classical scratch/dust response: max(white top-hat, black top-hat) of the luma, (B, 1, H, W) in [0, 1].

    White top-hat x - opening(x) lights up bright features thinner than `size` (white scratches, dust on the
    negative); black top-hat closing(x) - x lights up dark ones. `size` is the odd square element's edge.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"tophat_response: size must be odd and >= 3, got {size}")
    g = _gray(x, "tophat_response")
    opening = _max_filter(-_max_filter(-g, size), size)
    closing = -_max_filter(-_max_filter(g, size), size)
    return torch.maximum(g - opening, closing - g).clamp(0, 1)


def classical_detect(x: torch.Tensor, size: int = 7, threshold: float = 0.1) -> torch.Tensor:
    """Binary defect mask (B, 1, H, W) in {0, 1}: top-hat response above `threshold` (in luma units)."""
    return (tophat_response(x, size) > threshold).to(x.dtype)
