"""Image-space refiner after the latent restoration: fuses the scan, its restoration and the defect mask.

(x (B, 3, H, W) scan [0, 1], r (B, 3, H, W) = G_Y(T(E_RX(x), m)) [0, 1], m (B, 1, H, W) {0, 1}) -> (B, 3, H, W).
H and W must be multiples of 4.

Why: the latent path goes through a 64-channel code at 1/4 resolution, so even an intact tile comes back with
less detail than it had (about 27.6 dB on clean crops), and mild degradations (noise, JPEG, casts) come out
worse than they went in. The refiner learns, per pixel, how much of the scan's own detail to keep (gate a),
and a residual d for what neither has: out = r + a * (x - r) + d. Outside defects it can keep the scan's
detail; inside them, the restoration's content.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register
from ..ops.filters import gaussian_taps, masked_blur
from .global_context import GlobalContext


LOW_SIGMA = 2.0  # px: the latent path (1/4 resolution) keeps roughly what survives this blur


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True))


@register("refiner")
class Refiner(nn.Module):
    """A three-level encoder-decoder (full, 1/2, 1/4 resolution) with additive skips and tile-wide context at 1/4.

    width: channels at full resolution (2x, 4x at the coarser levels). bands: separate gates for the low and
    high band of x - r (see the module docstring). The output head starts at zero with the gates closed
    (a = sigmoid(-4) ~ 0.02, a_hi = 2 sigmoid(-4)), so an untrained refiner passes the restoration through nearly
    as is.
    """

    def __init__(self, width: int = 16, bands: bool = False):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.width, self.bands = width, bool(bands)
        gates = 2 if self.bands else 1
        c1, c2, c3 = width, 2 * width, 4 * width
        self.inc = nn.Sequential(_conv(7, c1), _conv(c1, c1))
        self.down1 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.down2 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))
        self.context = GlobalContext(c3)
        self.up2 = _conv(c3, c2)
        self.up1 = _conv(c2, c1)
        self.head = nn.Conv2d(c1, gates + 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([-4.0] * gates + [0.0, 0.0, 0.0]))
        # not a parameter and not saved: weights files stay the state of the trained layers only
        self.register_buffer("taps", gaussian_taps(LOW_SIGMA), persistent=False)

    def forward(self, x: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x scan, r restoration (B, 3, H, W) [0, 1], m (B, 1, H, W) {0, 1}, H and W multiples of 4 -> (B, 3, H, W),
        about [0, 1] (not clipped; the stage clips)."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"Refiner: expected x (B, 3, H, W) with H, W multiples of 4, got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if tuple(r.shape) != tuple(x.shape) or tuple(m.shape) != (b, 1, h, w):
            raise ValueError(f"Refiner: r must be {tuple(x.shape)} and m {(b, 1, h, w)}, got {tuple(r.shape)}, "
                             f"{tuple(m.shape)}")
        f1 = self.inc(torch.cat([x, r, m], 1))
        f2 = self.down1(f1)
        f3 = self.down2(f2)
        gamma, beta = self.context(f3, F.max_pool2d(m, 4))
        f3 = f3 * (1 + gamma) + beta
        u2 = self.up2(F.interpolate(f3, scale_factor=2, mode="bilinear", align_corners=False)) + f2
        u1 = self.up1(F.interpolate(u2, scale_factor=2, mode="bilinear", align_corners=False)) + f1
        if not self.bands:
            gate, residual = self.head(u1).split([1, 3], dim=1)
            return r + torch.sigmoid(gate) * (x - r) + residual
        g_lo, g_hi, residual = self.head(u1).split([1, 1, 3], dim=1)
        diff = x - r
        low = masked_blur(diff, m, self.taps).to(diff.dtype)
        return r + torch.sigmoid(g_lo) * low + 2 * torch.sigmoid(g_hi) * (diff - low) + residual

    def arch_kwargs(self) -> dict:
        return {"width": self.width, "bands": self.bands} if self.bands else {"width": self.width}
