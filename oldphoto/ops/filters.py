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
    """Separable blur of d (B, C, H, W) with taps (K,) of odd length along both axes, edges replicated.

    Each axis is a sum of K shifted, weighted views of one padded copy: a depthwise conv2d computes the same
    sums but unfolds its input K times on the CPU (900 MB for the 1/4-size tone change of a 100-MP scan) and
    runs 4-17x slower.
    """
    if d.dim() != 4:
        raise ValueError(f"blur: expected (B, C, H, W), got shape {tuple(d.shape)}")
    if taps.dim() != 1 or taps.numel() % 2 == 0:
        raise ValueError(f"blur: expected taps of odd length (K,), got shape {tuple(taps.shape)}")
    weights = [float(t) for t in taps]
    pad = len(weights) // 2
    for dim in (2, 3):  # rows, then columns
        size = d.shape[dim]
        padded = F.pad(d, (0, 0, pad, pad) if dim == 2 else (pad, pad, 0, 0), mode="replicate")
        d = padded.narrow(dim, 0, size) * weights[0]
        for k in range(1, len(weights)):
            d.add_(padded.narrow(dim, k, size), alpha=weights[k])
        del padded
    return d


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
    if weighted.dim() != 4 or tuple(weight.shape) != (weighted.shape[0], 1, *weighted.shape[2:]):
        # a weight of another size could broadcast in the division and spread one pixel's weight over all
        raise ValueError(f"normalized_blur: expected weighted (B, C, H, W) and weight (B, 1, H, W), got "
                         f"{tuple(weighted.shape)} and {tuple(weight.shape)}")
    return blur(weighted, taps).div_(blur(weight, taps).clamp_min_(1e-3))  # in place: no third full-size copy
