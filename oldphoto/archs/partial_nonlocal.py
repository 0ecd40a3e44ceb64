"""Partial non-local attention: defect positions of a latent map attend to intact positions only."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register


@register("partial_nonlocal")
class PartialNonLocal(nn.Module):
    """Global branch of the mapping (Wan et al. 2020, eq. for s_ij), bounded to one tile.

    forward(x (B, C, h, w) any values, m (B, 1, h, w) in {0, 1}, 1 = defect) -> (B, C, h, w).
    Only defect positions are computed (queries i with m_i = 1; zeros elsewhere). Keys and values are pooled 2x
    and a pooled key counts as intact only if none of its positions is a defect, so
    s_ij = (1 - m_j) f_ij / sum_k (1 - m_k) f_ik with f_ij = exp(<theta_i, phi_j> / sqrt(d)): a softmax over the
    intact keys. Cost per tile is (#defect positions) x (h w / 4) x (d + C): nothing for a tile without defects.
    A sample with no intact key at all gets zeros; the mapping still fuses that zero global result with its
    local features at the defect cells (archs/mapping.py), as it did in training.
    """

    def __init__(self, channels: int, inner: int | None = None):
        super().__init__()
        self.inner = inner or max(channels // 2, 1)
        self.theta = nn.Linear(channels, self.inner)
        self.phi = nn.Conv2d(channels, self.inner, 1)
        self.g = nn.Conv2d(channels, channels, 1)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        c = self.theta.in_features
        if x.dim() != 4 or x.shape[1] != c or tuple(m.shape) != (x.shape[0], 1, *x.shape[2:]):
            # checked up front: a tile without defects would otherwise return zeros of the wrong width unnoticed
            raise ValueError(f"PartialNonLocal: expected features (B, {c}, h, w) and mask (B, 1, h, w), "
                             f"got {tuple(x.shape)} and {tuple(m.shape)}")
        b, c, h, w = x.shape
        out = x.new_zeros(b, c, h * w)
        defect = m.flatten(1) > 0.5  # (B, hw)
        if not defect.any():
            return out.view(b, c, h, w)
        # Averages over 2x2 cells; a cell touched by a defect is excluded as a key (max pool of the mask).
        pooled = F.avg_pool2d(x, 2, ceil_mode=True)
        key_ok = F.max_pool2d(m, 2, ceil_mode=True).flatten(1) < 0.5  # (B, hw/4)
        keys = self.phi(pooled).flatten(2)  # (B, d, hw/4)
        values = self.g(pooled).flatten(2)  # (B, C, hw/4)
        feats = x.flatten(2)
        scale = 1.0 / math.sqrt(self.inner)
        for i in range(b):
            q_idx = defect[i].nonzero().squeeze(1)
            k_idx = key_ok[i].nonzero().squeeze(1)
            if q_idx.numel() == 0 or k_idx.numel() == 0:
                continue
            q = self.theta(feats[i][:, q_idx].t())  # (Nq, d)
            k = keys[i][:, k_idx]  # (d, Nk)
            v = values[i][:, k_idx].t()  # (Nk, C)
            attn = torch.softmax((q @ k) * scale, dim=1)  # rows sum to 1 over intact keys only
            out[i, :, q_idx] = self.out(attn @ v).t()
        return out.view(b, c, h, w)
