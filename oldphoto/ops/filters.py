"""Gaussian low-pass filters on tensors, plain and over intact pixels only (normalised convolution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_taps(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (K,) float32 with K = 2 round(3 sigma) + 1."""
    if not sigma > 0:
        raise ValueError(f"gaussian_taps: sigma must be positive, got {sigma}")
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def blur(d: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable blur of d (B, C, H, W) with taps (K,) of odd length along both axes, edges replicated."""
    if d.dim() != 4:
        raise ValueError(f"blur: expected (B, C, H, W), got shape {tuple(d.shape)}")
    c, pad = d.shape[1], taps.numel() // 2
    kh = taps.to(d.dtype).view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = taps.to(d.dtype).view(1, 1, 1, -1).expand(c, 1, 1, -1)
    d = F.conv2d(F.pad(d, (0, 0, pad, pad), mode="replicate"), kh, groups=c)
    return F.conv2d(F.pad(d, (pad, pad, 0, 0), mode="replicate"), kw, groups=c)


def masked_blur(d: torch.Tensor, m: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Blur of d (B, C, H, W) over the intact pixels of m (B, 1, H, W) {0, 1 = defect} only (normalised
    convolution), in float32: defects neither leak into their surroundings nor keep their own values, they get
    their intact neighbours'; where no intact pixel is near, the result goes to zero."""
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[0] != d.shape[0] or m.shape[2:] != d.shape[2:]:
        raise ValueError(f"masked_blur: expected a mask (B, 1, H, W) for {tuple(d.shape)}, got {tuple(m.shape)}")
    with torch.autocast(device_type=d.device.type, enabled=False):
        w = 1 - m.float()
        return normalized_blur(d.float() * w, w, taps)


def normalized_blur(weighted: torch.Tensor, weight: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """blur(weighted) / blur(weight): the blur of d over weights w, given d * w (B, C, H, W) and w (B, 1, H, W)
    >= 0 (e.g. area means of both at a reduced size); where the blurred weight is below 1e-3 the result fades to
    zero instead of dividing by nothing."""
    return blur(weighted, taps) / blur(weight, taps).clamp_min(1e-3)
