"""Discriminator on latent maps: Z_R vs Z_X for VAE1, and T(z_x) vs z_y for the mapping."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register


@register("latent_discriminator")
class LatentDiscriminator(nn.Module):
    """(B, latent, h, w) real values, h and w even -> scores (B, 1, h/2, w/2).

    `features(z)` returns the intermediate activations plus the scores (for feature matching).
    """

    def __init__(self, latent: int = 64, width: int = 64):
        super().__init__()
        self.latent = latent
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(latent, width, 3, padding=1), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)),
        ])
        self.head = nn.Conv2d(2 * width, 1, 3, padding=1)

    def features(self, z: torch.Tensor) -> list[torch.Tensor]:
        if z.dim() != 4 or z.shape[1] != self.latent or z.shape[2] % 2 or z.shape[3] % 2:
            raise ValueError(f"expected latent (B, {self.latent}, h, w) with h, w even, got {tuple(z.shape)}")
        feats, h = [], z
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        feats.append(self.head(h))
        return feats

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(z)[-1]
