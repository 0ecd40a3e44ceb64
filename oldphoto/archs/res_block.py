"""Residual block shared by the latent-restoration networks (not registered: a building block)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ResBlock(nn.Module):
    """x + scale * conv(act(conv(x))) on (B, C, H, W); shape preserving, any value range.

    No normalisation layer: tiles are processed in batches of mixed content, so batch statistics would make a
    tile's result depend on its neighbours in the batch. The small residual scale keeps deep stacks stable.
    """

    def __init__(self, channels: int, scale: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.conv2(self.act(self.conv1(x)))
