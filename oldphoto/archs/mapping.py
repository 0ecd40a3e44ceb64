"""Mapping T: degraded latent z_x (VAE1 space) + defect mask -> clean latent z_y (VAE2 space)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.masks import downsample_mask
from . import register
from .global_context import GlobalContext
from .partial_nonlocal import PartialNonLocal
from .res_block import ResBlock


@register("mapping")
class Mapping(nn.Module):
    """T: (z (B, latent, h, w) real values, mask (B, 1, 4h, 4w) [0, 1], 1 = defect) -> (B, latent, h, w).

    Local branch: residual blocks on [z, latent mask] (mask max-pooled to the latent grid, binarised at 0.5).
    Global branch: partial non-local attention whose result is fused under the mask (defect cells take the fused
    value, intact cells keep the local features). With `context`, statistics of the intact cells then modulate
    every cell's features (tile-wide tone: fading, casts), and more residual blocks refine everything.
    `use_global = False` switches the global branch off (ablation; not saved).
    """

    def __init__(self, latent: int = 64, width: int = 64, blocks_pre: int = 2, blocks_post: int = 2,
                 factor: int = 4, context: bool = False):
        super().__init__()
        self.latent, self.factor = latent, factor
        self.use_global = True
        self.conv_in = nn.Conv2d(latent + 1, width, 3, padding=1)
        self.pre = nn.Sequential(*[ResBlock(width) for _ in range(blocks_pre)])
        self.attention = PartialNonLocal(width)
        self.fuse = nn.Conv2d(2 * width + 1, width, 1)
        self.context = GlobalContext(width) if context else None
        self.post = nn.Sequential(*[ResBlock(width) for _ in range(blocks_post)])
        self.conv_out = nn.Conv2d(width, latent, 3, padding=1)
        self.skip = nn.Conv2d(latent, latent, 1)  # the two latent spaces differ, but mostly by a per-cell map
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape if z.dim() == 4 else (0, 0, 0, 0)
        if z.dim() != 4 or c != self.latent:
            raise ValueError(f"expected latent (B, {self.latent}, h, w), got {tuple(z.shape)}")
        if tuple(mask.shape) != (b, 1, h * self.factor, w * self.factor):
            raise ValueError(f"expected mask {(b, 1, h * self.factor, w * self.factor)} for latent "
                             f"{tuple(z.shape)}, got {tuple(mask.shape)}")
        # A latent cell is a defect if any of its pixels is: a thin scratch contaminates the whole cell's features.
        m = (downsample_mask(mask, (h, w)) > 0.5).float()
        f = self.pre(self.act(self.conv_in(torch.cat([z, m], 1))))
        if self.use_global and bool(m.any()):
            g = self.attention(f, m)
            fused = self.fuse(torch.cat([g, f, m], 1))
            f = f + m * (fused - f)
        if self.context is not None:
            gamma, beta = self.context(f, m)
            f = f * (1 + gamma) + beta
        return self.conv_out(self.post(f)) + self.skip(z)
