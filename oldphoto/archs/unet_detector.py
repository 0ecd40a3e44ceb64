"""Small U-Net that finds scratches, dust and tears on the luminance of a photo.

Input (B, 1 or 3, H, W) float in [0, 1]; output logits (B, 1, H, W) (sigmoid gives the defect probability).
Any H, W: the input is padded (replicate) to a multiple of 2**(levels-1) and the output cropped back.

With chroma=True the network also sees two colour-difference planes (B - Y, R - Y; zero for gray input):
scratches, dust and tears show the paper or the scan bed, which is nearly neutral, where a bright or dark content
edge of the same shape usually has a colour of its own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.color import luma
from . import register


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    # Replicate padding, not zeros: a zero border looks like a dark line at every tile edge, and the engine
    # blends overlapping tiles, so the response must not depend on where the tile starts.
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate", bias=False)


class ConvBlock(nn.Sequential):
    """n x (3x3 conv -> BatchNorm -> ReLU). (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, n: int = 2):
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [_conv(cin if i == 0 else cout, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Up(nn.Module):
    """Coarse decoder features -> finer level: 1x1 projection at the coarse size (cheap), upsample x2, add the skip,
    then 3x3 convs. Adding instead of concatenating halves the cost of the fine, expensive levels."""

    def __init__(self, c_coarse: int, c_fine: int, n: int):
        super().__init__()
        self.proj = nn.Conv2d(c_coarse, c_fine, 1, bias=False)
        self.block = ConvBlock(c_fine, c_fine, n)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.proj(coarse), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(up + skip)


@register("unet_detector")
class UNetDetector(nn.Module):
    """U-Net on luminance mapped to [-1, 1]; full-resolution features so 1-px scratches survive.

    channels: feature width per level, finest first (the finest level runs at full resolution).
    blocks: 3x3 convs per encoder level (the decoder uses one fewer at full resolution where it is costliest).
    chroma: also take the colour-difference planes (see the module docstring).
    """

    def __init__(self, channels: tuple[int, ...] | list[int] = (12, 24, 48, 96, 128), blocks: int = 2,
                 chroma: bool = False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs >= 2 positive widths, got {channels}")
        self.channels, self.chroma = channels, bool(chroma)
        self.enc = nn.ModuleList(
            [ConvBlock((3 if self.chroma else 1) if i == 0 else channels[i - 1], c, blocks)
             for i, c in enumerate(channels)]
        )
        self.dec = nn.ModuleList(
            [Up(channels[i + 1], channels[i], 1 if i == 0 else blocks) for i in range(len(channels) - 1)]
        )
        self.head = nn.Conv2d(channels[0], 1, 1)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1|3, H, W) float in [0, 1] -> logits (B, 1, H, W)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1 or 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        y = luma(x) if x.shape[1] == 3 else x  # gamma-encoded Rec. 601 luma: scratches show as they look on the print
        if self.chroma:
            diff = (x[:, [2, 0]] - y) if x.shape[1] == 3 else torch.zeros_like(y).expand(-1, 2, -1, -1)
            x = torch.cat([y * 2 - 1, diff * 2], 1)
        else:
            x = y * 2 - 1
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for i, block in enumerate(self.enc):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.dec))):
            x = self.dec[i](x, skips[i])
        return self.head(x)[..., :h, :w]


def widen_to_chroma(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A luma-only detector's state -> the same detector with chroma inputs whose weights start at zero, so the
    widened network computes exactly what the luma one did and fine-tuning starts from it."""
    key = "enc.0.0.weight"
    w = state[key]
    if w.shape[1] == 3:
        return dict(state)
    if w.shape[1] != 1:
        raise ValueError(f"widen_to_chroma: expected a first conv of 1 input channel, got {tuple(w.shape)}")
    return {**state, key: torch.cat([w, torch.zeros_like(w).expand(-1, 2, -1, -1)], 1)}


def widen_channels(state: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detector's state -> a wider detector of the same depth (`template`: the wider one's freshly initialised
    state) that computes exactly what the narrow one did, so training can go on from it with more capacity.

    The old channels keep their weights and come first; new channels keep the template's random weights into them
    (they respond from the start, so their weights out get gradients), and every old channel's weights *from* new
    channels are zero (the old function is unchanged). BatchNorm of new channels starts at the template's identity.
    """
    if set(state) != set(template):
        raise ValueError(f"widen_channels: different layers: {sorted(set(state) ^ set(template))[:4]}")
    out = {}
    for key, new in template.items():
        old = state[key]
        if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
            raise ValueError(f"widen_channels: {key} {tuple(old.shape)} does not fit in {tuple(new.shape)}")
        if old.shape == new.shape:
            out[key] = old.clone()
            continue
        w = new.clone()
        if w.dim() == 4:
            w[: old.shape[0], old.shape[1]:] = 0
        w[tuple(slice(0, s) for s in old.shape)] = old
        out[key] = w
    return out
