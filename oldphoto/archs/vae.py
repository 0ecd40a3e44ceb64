"""Variational autoencoder = VAEEncoder + VAEDecoder (VAE1 for old/degraded photos, VAE2 for clean ones)."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register
from .vae_decoder import VAEDecoder
from .vae_encoder import VAEEncoder


@register("vae")
class VAE(nn.Module):
    """(B, 3, H, W) [0, 1], H, W multiples of 4 -> (reconstruction (B, 3, H, W) [0, 1], mu, logvar).

    mu and logvar are (B, latent, H/4, W/4). In training mode the decoder sees a sample mu + sigma * eps;
    in eval mode it sees mu, so inference is deterministic.
    """

    def __init__(self, latent: int = 64, width: int = 64, half_width: int = 32, blocks: int = 2):
        super().__init__()
        self.encoder = VAEEncoder(latent, width, half_width, blocks)
        self.decoder = VAEDecoder(latent, width, half_width, blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar
