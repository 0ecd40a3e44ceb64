"""Image quality metrics on (B, C, H, W) float tensors in [0, 1]; one value per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, shape (B,). Identical images give +inf."""
    _check(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(max_val**2 / mse)).float()


def _gaussian_taps(size: int, sigma: float, device, dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, valid region only; shape (B,).

    Channels are averaged. Images smaller than the window are compared with a window of their size. `dtype` is
    the working precision: float64 for reported metrics, float32 as a training loss (about 4x cheaper; on [0, 1]
    images the difference is below 1e-5).
    """
    _check(x, y)
    b, c, h, w = x.shape
    size = min(size, h, w)
    x, y = x.to(dtype), y.to(dtype)
    g = _gaussian_taps(size, sigma, x.device, x.dtype)
    # The Gaussian window is separable: a row pass then a column pass, 2*size taps instead of size**2.
    row = g.view(1, 1, 1, size).expand(c, 1, 1, size).contiguous()
    col = g.view(1, 1, size, 1).expand(c, 1, size, 1).contiguous()
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2

    def blur(t):
        return F.conv2d(F.conv2d(t, row, groups=c), col, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def tone_oracle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x with each image's channels mapped by the gain and offset that best fit y (least squares), clipped to
    [0, 1]: (B, C, H, W) -> (B, C, H, W).

    An evaluation diagnostic, not a method (it needs the clean target): the distance left between it and y is what
    no per-channel gain and offset applied to x can remove, so it splits a restoration's error into (affine) tone
    and the rest. Never further from y than x in mean squared error (gain 1, offset 0 is among the fits, and
    clipping to y's range only moves values closer). A constant channel gets the offset alone.
    """
    _check(x, y)
    xd, yd = x.double().flatten(2), y.double().flatten(2)
    mx, my = xd.mean(2, keepdim=True), yd.mean(2, keepdim=True)
    var = (xd - mx).pow(2).mean(2, keepdim=True)
    cov = ((xd - mx) * (yd - my)).mean(2, keepdim=True)
    gain = torch.where(var > 1e-12, cov / var.clamp_min(1e-12), torch.zeros_like(var))
    return (my + gain * (xd - mx)).clamp(0, 1).view_as(x).to(x.dtype)
