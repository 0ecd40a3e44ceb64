"""VAE encoder: image (B, 3, H, W) in [0, 1] -> latent mean and log-variance at 1/4 resolution."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register
from .res_block import ResBlock


def check_image(x: torch.Tensor, multiple: int, what: str = "image") -> None:
    """ValueError showing x's shape unless it is (B, 3, H, W) with H and W multiples of `multiple`."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"expected {what} (B, 3, H, W) with H, W multiples of {multiple}, got {tuple(x.shape)}")


@register("vae_encoder")
class VAEEncoder(nn.Module):
    """E: (B, 3, H, W) [0, 1], H and W multiples of 4 -> (mu, logvar), each (B, latent, H/4, W/4).

    The first step is a pixel-unshuffle instead of a full-resolution convolution: full-resolution layers with
    few channels are memory bound on CPU and would dominate the run time for little gain.
    """

    def __init__(self, latent: int = 64, width: int = 64, half_width: int = 32, blocks: int = 2):
        super().__init__()
        self.latent = latent
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2),  # (B, 12, H/2, W/2)
            nn.Conv2d(12, half_width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            ResBlock(half_width),
            nn.Conv2d(half_width, width, 3, stride=2, padding=1),  # (B, width, H/4, W/4)
            nn.LeakyReLU(0.2, inplace=True),
            *[ResBlock(width) for _ in range(blocks)],
        )
        self.head = nn.Conv2d(width, 2 * latent, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image(x, 4)
        h = self.head(self.net(x * 2 - 1))  # centre the input: [0, 1] -> [-1, 1]
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)  # bounded so that exp() never overflows early in training
