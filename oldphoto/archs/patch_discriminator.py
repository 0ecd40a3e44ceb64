"""PatchGAN discriminator on images for the least-squares GAN losses of the VAEs."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register


@register("patch_discriminator")
class PatchDiscriminator(nn.Module):
    """(B, 3, H, W) [0, 1], H, W multiples of 2**layers -> scores (B, 1, H / 2**layers, W / 2**layers).

    Each score judges one receptive-field patch (real ~ 1, fake ~ 0 under LSGAN). `features(x)` returns every
    intermediate activation plus the scores, for feature matching.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        self.layers, blocks, c = layers, [], in_channels
        for i in range(layers):
            blocks.append(nn.Sequential(nn.Conv2d(c, width * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2)))
            c = width * 2**i
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 1, 3, padding=1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, in_channels, H, W) [0, 1] -> every block's activations, then the scores (B, 1, H/2**layers, ...)."""
        k, c = 2**self.layers, self.blocks[0][0].in_channels
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % k or x.shape[3] % k:
            raise ValueError(f"expected (B, {c}, H, W) with H, W multiples of {k}, got {tuple(x.shape)}")
        feats, h = [], x * 2 - 1
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        feats.append(self.head(h))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]
