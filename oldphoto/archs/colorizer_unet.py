"""U-Net that predicts chroma (Lab a, b) from lightness (Lab L), run once on a whole downscaled photo.

Input L (B, 1, H, W) in Lab units [0, 100]; output ab (B, 2, H, W) in Lab units (about [-110, 110]).
Any H, W: padded (replicate) to a multiple of in_stride * 2**(levels-1) and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register


def _block(cin: int, cout: int, n: int) -> nn.Sequential:
    """n x (3x3 conv -> GroupNorm -> ReLU): (B, cin, H, W) -> (B, cout, H, W)."""
    layers: list[nn.Module] = []
    for i in range(n):
        # GroupNorm, not BatchNorm: training batches are small and inference sees one photo of any size.
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, padding_mode="replicate", bias=False),
                   nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SceneMean(nn.Module):
    """Adds a projection of the image-wide mean feature to every position: sky, foliage and skin get colours
    consistent with the whole scene rather than only with their receptive field. (B, C, h, w) -> same. (Not
    archs.global_context.GlobalContext, which weighs the intact cells of a mask.)"""

    def __init__(self, c: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x.mean((2, 3)))[:, :, None, None]


@register("colorizer_unet")
class ColorizerUNet(nn.Module):
    """channels: width per level, finest first; each level below the first halves the resolution.
    blocks: 3x3 convs per level. ab_scale: the network's unit output is multiplied by this (Lab units).
    in_stride: the finest level runs at 1/in_stride of the input (L is area-averaged, ab upsampled bilinearly);
    chroma is smooth, so 2 costs little accuracy and cuts the compute about four times.
    """

    def __init__(self, channels: tuple[int, ...] | list[int] = (16, 32, 64, 128, 160), blocks: int = 2,
                 ab_scale: float = 100.0, in_stride: int = 1):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs >= 2 positive widths, got {channels}")
        if int(in_stride) < 1:
            raise ValueError(f"in_stride must be >= 1, got {in_stride}")
        self.channels, self.ab_scale, self.in_stride = channels, float(ab_scale), int(in_stride)
        self.enc = nn.ModuleList(_block(1 if i == 0 else channels[i - 1], c, blocks) for i, c in enumerate(channels))
        self.context = SceneMean(channels[-1])
        self.proj = nn.ModuleList(nn.Conv2d(channels[i + 1], channels[i], 1) for i in range(len(channels) - 1))
        self.dec = nn.ModuleList(_block(2 * channels[i], channels[i], blocks) for i in range(len(channels) - 1))
        self.head = nn.Conv2d(channels[0], 2, 3, padding=1, padding_mode="replicate")
        # Start from gray (ab = 0): random chroma x ab_scale would begin far worse than predicting nothing.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        return self.in_stride * 2 ** (len(self.channels) - 1)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        """l: (B, 1, H, W) Lab L in [0, 100] -> ab (B, 2, H, W) in Lab units."""
        if l.dim() != 4 or l.shape[1] != 1:
            raise ValueError(f"expected L as (B, 1, H, W) in [0, 100], got shape {tuple(l.shape)}")
        x = l / 50.0 - 1.0
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if self.in_stride > 1:
            x = F.avg_pool2d(x, self.in_stride)
        skips = []
        for i, block in enumerate(self.enc):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = self.context(x)
        for i in reversed(range(len(self.dec))):
            up = F.interpolate(self.proj[i](x), size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.dec[i](torch.cat((up, skips[i]), 1))
        ab = self.head(x)
        if self.in_stride > 1:
            ab = F.interpolate(ab, scale_factor=self.in_stride, mode="bilinear", align_corners=False)
        return ab[..., :h, :w] * self.ab_scale
