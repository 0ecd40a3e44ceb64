"""Classical restoration baseline (no learning), the yardstick of the restore evaluation.

classical mask (morphological top-hat, ops.masks.classical_detect) -> push-pull fill + diffusion inpainting of
the masked pixels -> bilateral denoise -> per-channel contrast stretch. Images (B, 3, H, W) float in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..ops.masks import classical_detect, dilate


@dataclass(frozen=True)
class BaselineConfig:
    # Values picked on validation crops of another seed (999) than the evaluation's: the best PSNR of each step.
    detect_size: int = 5  # top-hat structuring element edge (odd): defects thinner than this are found
    detect_threshold: float = 0.25  # top-hat response (luma units) above which a pixel is a defect
    dilate: int = 1  # grow the mask by this many pixels (scratch edges)
    diffusion_iters: int = 20  # Laplace smoothing iterations inside the holes after the push-pull fill
    bilateral_radius: int = 2  # window (2r+1)^2
    sigma_space: float = 1.5  # bilateral spatial std, px
    sigma_range: float = 0.15  # bilateral range std, in [0, 1] units (colour distance)
    stretch: bool = True  # contrast stretch last (on our validation data it costs PSNR: clean photos do not all
    #                       span the full range, so the evaluation also reports the baseline without it)
    stretch_low: float = 0.01  # quantile mapped to 0, per channel
    stretch_high: float = 0.99  # quantile mapped to 1, per channel


def _check(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")


def _box3(t: torch.Tensor) -> torch.Tensor:
    """3x3 sum, per channel, zero outside the image."""
    c = t.shape[1]
    return F.conv2d(t, t.new_ones(c, 1, 3, 3), padding=1, groups=c)


def _push_pull(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels from a pyramid of known-weighted averages (Gortler et al. push-pull)."""
    if bool((known > 0.5).all()) or min(x.shape[2:]) <= 1:
        return x
    s = F.avg_pool2d(x * known, 2, ceil_mode=True)
    c = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = _push_pull(s / c.clamp(min=1e-6), (c > 0).to(x.dtype))
    up = F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)
    return torch.where(known > 0.5, x, up)


def inpaint(x: torch.Tensor, mask: torch.Tensor, diffusion_iters: int = 20) -> torch.Tensor:
    """Fill mask == 1 pixels of x (B, C, H, W) from the intact ones; mask (B, 1, H, W) {0, 1}.

    A push-pull pyramid gives every hole pixel a smooth guess from the nearest intact pixels at any distance
    (cost O(H W), unlike a pixel-by-pixel march); then Jacobi iterations of the Laplace equation inside the
    holes relax it toward a harmonic fill while the intact pixels stay fixed. A sample without any intact
    pixel is returned unchanged.
    """
    known = (mask < 0.5).to(x.dtype)
    has_any = known.flatten(1).amax(1).view(-1, 1, 1, 1) > 0
    out = _push_pull(x * known, known)
    hole = known < 0.5
    norm = _box3(torch.ones_like(out[:, :1]))  # neighbours inside the image, so borders average correctly
    for _ in range(diffusion_iters):
        out = torch.where(hole, _box3(out) / norm, out)
    return torch.where(has_any, out, x)


def bilateral(x: torch.Tensor, radius: int = 2, sigma_space: float = 1.5, sigma_range: float = 0.08) -> torch.Tensor:
    """Edge-preserving smoothing of (B, C, H, W); weights from distance and colour difference. Same shape."""
    pad = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    h, w = x.shape[2:]
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[:, :1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = pad[:, :, radius + dy: radius + dy + h, radius + dx: radius + dx + w]
            diff = (shifted - x).pow(2).sum(1, keepdim=True)
            wgt = math.exp(-(dy * dy + dx * dx) / (2 * sigma_space**2)) * torch.exp(-diff / (2 * sigma_range**2))
            num += wgt * shifted
            den += wgt
    return num / den


def contrast_stretch(x: torch.Tensor, low: float = 0.005, high: float = 0.995) -> torch.Tensor:
    """Map each image's channel quantiles low/high to 0/1 (undoes fading and most colour casts); clipped."""
    b, c = x.shape[:2]
    flat = x.reshape(b * c, -1)
    q = torch.quantile(flat, torch.tensor([low, high], dtype=x.dtype, device=x.device), dim=1)  # (2, B*C)
    lo, hi = q[0].view(b, c, 1, 1), q[1].view(b, c, 1, 1)
    return ((x - lo) / (hi - lo).clamp(min=1e-3)).clamp(0, 1)


def classical_restore(x: torch.Tensor, cfg: BaselineConfig = BaselineConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) [0, 1] -> (restored (B, 3, H, W) [0, 1], classical mask (B, 1, H, W) {0, 1})."""
    _check(x, "classical_restore")
    mask = dilate(classical_detect(x, cfg.detect_size, cfg.detect_threshold), cfg.dilate)
    y = inpaint(x, mask, cfg.diffusion_iters)
    y = bilateral(y, cfg.bilateral_radius, cfg.sigma_space, cfg.sigma_range)
    return (contrast_stretch(y, cfg.stretch_low, cfg.stretch_high) if cfg.stretch else y), mask
