"""Tile-wide context for the mapping: feature statistics of the intact cells modulate every cell (FiLM)."""

from __future__ import annotations

import torch
import torch.nn as nn


class GlobalContext(nn.Module):
    """(features (B, C, h, w), latent mask (B, 1, h, w) {0, 1}) -> (gamma, beta), each (B, C, 1, 1).

    Fading, colour casts and exposure shifts are properties of the whole print, which 3x3 convolutions over a
    few cells cannot judge; the mean and spread of the intact cells' features can. The last layer starts at
    zero so the modulation starts as the identity (f * (1 + gamma) + beta with gamma = beta = 0).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * channels, channels), nn.LeakyReLU(0.2),
                                 nn.Linear(channels, 2 * channels))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, f: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = self.mlp[0].in_features // 2
        if f.dim() != 4 or f.shape[1] != channels or tuple(m.shape) != (f.shape[0], 1, *f.shape[2:]):
            # a mask of another size could broadcast against f and weigh the wrong cells without an error
            raise ValueError(f"GlobalContext: expected features (B, {channels}, h, w) and mask (B, 1, h, w), "
                             f"got {tuple(f.shape)} and {tuple(m.shape)}")
        intact = 1 - m
        # a tile that is all defect falls back to plain statistics over every cell
        weight = torch.where(intact.flatten(1).sum(1).view(-1, 1, 1, 1) > 0, intact, torch.ones_like(intact))
        norm = weight.sum((2, 3), keepdim=True)
        mean = (f * weight).sum((2, 3), keepdim=True) / norm
        std = ((f - mean).pow(2) * weight).sum((2, 3), keepdim=True).div(norm).add(1e-6).sqrt()
        gamma, beta = self.mlp(torch.cat([mean, std], 1).flatten(1)).chunk(2, dim=1)
        return gamma[..., None, None], beta[..., None, None]
