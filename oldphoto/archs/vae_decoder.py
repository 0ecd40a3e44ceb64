"""VAE decoder: latent (B, latent, h, w) -> image (B, 3, 4h, 4w) in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register
from .res_block import ResBlock


@register("vae_decoder")
class VAEDecoder(nn.Module):
    """G: (B, latent, h, w), any real values -> (B, 3, 4h, 4w) in [0, 1].

    Upsampling by convolution + pixel shuffle (no full-resolution convolution, for CPU speed, see the encoder).
    """

    def __init__(self, latent: int = 64, width: int = 64, half_width: int = 32, blocks: int = 2):
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(
            nn.Conv2d(latent, width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            *[ResBlock(width) for _ in range(blocks)],
            nn.Conv2d(width, 4 * half_width, 3, padding=1),
            nn.PixelShuffle(2),  # (B, half_width, 2h, 2w)
            nn.LeakyReLU(0.2, inplace=True),
            ResBlock(half_width),
            nn.Conv2d(half_width, 12, 3, padding=1),
            nn.PixelShuffle(2),  # (B, 3, 4h, 4w)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4 or z.shape[1] != self.latent:
            raise ValueError(f"expected latent (B, {self.latent}, h, w), got {tuple(z.shape)}")
        # tanh rather than clamp: keeps a gradient for outputs pushed past the range
        return (torch.tanh(self.net(z)) + 1) / 2
