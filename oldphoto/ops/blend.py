"""Scan blending: how much of the restorer's change to keep, outside the defects, for a mildly degraded scan.

The restorer is tuned for heavily damaged prints; on a scan with little wrong with it (a light cast, a stain, some
dust) it returns less than it got: its 1/4-resolution latent path softens detail, and it re-judges the tone. The
blend takes the restoration o and the scan x back apart, with the restorer's change d = o - x split into a low band
L (the tone: a blur of d over intact pixels, so a defect's fill does not leak into it) and the rest H = d - L:

    out = o - (1 - s_lo) L - (1 - m) (1 - s_hi) H

s_lo, s_hi in [0, 1] are strengths (1, 1 returns o). Outside the mask m this is x + s_lo L + s_hi H; inside it the
fill stays whole and only its tone moves with its surroundings, so every defect found is still filled and no tone
step appears at its edge. A gate (archs/blend_gate.py) picks the strengths from BLEND_FEATURES of (x, o, m).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .color import luma
from .filters import gaussian_taps, normalized_blur

# the low band: area means over LOW_SHRINK x LOW_SHRINK cells, blurred with LOW_SIGMA cells (8 px), as
# passes.even_tone's tone change
LOW_SHRINK = 4
LOW_SIGMA = 2.0
_QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
# one row per block: defect share; luma quantiles and spread of the scan, then of the restoration; the restorer's
# change (mean |L|, mean |H| outside defects, RMS of H); noise level and mean gradient of scan and restoration;
# saturation of both; mean |o - x| over RGB
BLEND_FEATURES = (
    "mask_share",
    *(f"scan_q{int(q * 100):02d}" for q in _QUANTILES), "scan_std",
    *(f"restored_q{int(q * 100):02d}" for q in _QUANTILES), "restored_std",
    "change_low", "change_high", "change_high_rms",
    "scan_noise", "restored_noise", "scan_gradient", "restored_gradient",
    "scan_saturation", "restored_saturation", "change_rgb",
)
MIN_SIDE = 8  # smaller images are left as restored (the statistics above need some pixels)
_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def _check(x: torch.Tensor, o: torch.Tensor, m: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or tuple(o.shape) != tuple(x.shape) or \
            tuple(m.shape) != (x.shape[0], 1, *x.shape[2:]) or min(x.shape[2:]) < MIN_SIDE:
        raise ValueError(f"scan blend: expected x and o (B, 3, H, W) with H, W >= {MIN_SIDE} and m (B, 1, H, W), got "
                         f"{tuple(x.shape)}, {tuple(o.shape)}, {tuple(m.shape)}")


def intact_low_band(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The low band of d (B, C, H, W) over the pixels outside m (B, 1, H, W) {0, 1}: area means over 4 x 4 cells of
    d * (1 - m) and 1 - m, a normalised Gaussian blur of LOW_SIGMA cells, bilinear back to (H, W). Inside a large
    defect it is interpolated from the intact pixels around it (zero where there are none within reach)."""
    if d.dim() != 4 or tuple(m.shape) != (d.shape[0], 1, *d.shape[2:]):
        raise ValueError(f"intact_low_band: expected d (B, C, H, W) and m (B, 1, H, W), got {tuple(d.shape)} and "
                         f"{tuple(m.shape)}")
    w = 1.0 - m.to(d.dtype)
    dw = F.avg_pool2d(d * w, LOW_SHRINK, ceil_mode=True)
    ws = F.avg_pool2d(w, LOW_SHRINK, ceil_mode=True)
    small = normalized_blur(dw, ws, gaussian_taps(LOW_SIGMA).to(d.device))
    return F.interpolate(small, size=d.shape[2:], mode="bilinear", align_corners=False)


def _noise(lum: torch.Tensor) -> torch.Tensor:
    """Robust per-image noise level of (B, 1, H, W): median |Laplacian| scaled to a Gaussian sigma."""
    h = F.conv2d(lum, _LAPLACE.to(lum)).abs().flatten(1)
    return h.median(dim=1).values / (0.6745 * 20 ** 0.5)


def _gradient(lum: torch.Tensor) -> torch.Tensor:
    gx = (lum[..., :, 1:] - lum[..., :, :-1]).abs().flatten(1).mean(1)
    gy = (lum[..., 1:, :] - lum[..., :-1, :]).abs().flatten(1).mean(1)
    return gx + gy


def blend_features(x: torch.Tensor, o: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x scan, o restoration (B, 3, H, W) [0, 1] (a gray scan repeated over the channels), m (B, 1, H, W) {0, 1}
    the restorer's defect mask -> (B, len(BLEND_FEATURES)) float32, in the order of BLEND_FEATURES."""
    _check(x, o, m)
    x, o, m = x.float(), o.float(), m.float()
    lx, lo = luma(x), luma(o)
    d = lo - lx
    low = intact_low_band(d, m)
    high = (d - low) * (1 - m)
    q = torch.tensor(_QUANTILES)
    columns = [m.flatten(1).mean(1),
               *torch.quantile(lx.flatten(1), q, dim=1), lx.flatten(1).std(1),
               *torch.quantile(lo.flatten(1), q, dim=1), lo.flatten(1).std(1),
               low.abs().flatten(1).mean(1), high.abs().flatten(1).mean(1), high.pow(2).flatten(1).mean(1).sqrt(),
               _noise(lx), _noise(lo), _gradient(lx), _gradient(lo),
               (x.amax(1) - x.amin(1)).flatten(1).mean(1), (o.amax(1) - o.amin(1)).flatten(1).mean(1),
               (o - x).abs().flatten(1).mean(1)]
    return torch.stack(columns, dim=1)


def blend(x: torch.Tensor, o: torch.Tensor, m: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """The module docstring's blend: x, o (B, C, H, W) [0, 1], m (B, 1, H, W) {0, 1}, strengths (B, 2) (s_lo,
    s_hi) in [0, 1] -> (B, C, H, W), clamped to [0, 1]. Strengths (1, 1) return o."""
    if x.dim() != 4 or tuple(strengths.shape) != (x.shape[0], 2) or tuple(o.shape) != tuple(x.shape) \
            or tuple(m.shape) != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f"scan blend: expected x, o (B, C, H, W), m (B, 1, H, W) and strengths (B, 2), got "
                         f"{tuple(x.shape)}, {tuple(o.shape)}, {tuple(m.shape)}, {tuple(strengths.shape)}")
    m = m.to(o.dtype)
    d = o - x
    low = intact_low_band(d, m)
    s_lo, s_hi = strengths[:, 0].view(-1, 1, 1, 1), strengths[:, 1].view(-1, 1, 1, 1)
    return (o - (1 - s_lo) * low - (1 - m) * (1 - s_hi) * (d - low)).clamp(0, 1)
