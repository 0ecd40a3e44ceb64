"""The scan-blend gate: per-image statistics -> the strengths (s_lo, s_hi) of ops/blend.py.

features (B, F) float (ops.blend.BLEND_FEATURES of scan, restoration and mask) -> (B, 2) in (0, 1).

Why so small: it decides two numbers per photo from two dozen statistics, and a gate that learned more of our
degradation generator than "how damaged is this scan" would carry over worse to other scans (see weights/README.md).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register


@register("blend_gate")
class BlendGate(nn.Module):
    """Standardised features, then a linear map (hidden 0) or one hidden layer of `hidden` GELU units, then a
    sigmoid. The output bias starts at +2 (strengths 0.88): an untrained gate keeps most of the restoration.
    mean / std are buffers saved with the weights (the training set's feature statistics)."""

    def __init__(self, n_features: int = 23, hidden: int = 0):
        super().__init__()
        if n_features < 1 or hidden < 0:
            raise ValueError(f"need n_features >= 1 and hidden >= 0, got {n_features}, {hidden}")
        self.n_features, self.hidden = n_features, hidden
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        last = nn.Linear(n_features if hidden == 0 else hidden, 2)
        self.net = last if hidden == 0 else nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), last)
        with torch.no_grad():
            last.bias.fill_(2.0)

    def set_standardisation(self, features: torch.Tensor) -> None:
        """Set mean / std from a training set's features (N, F)."""
        if features.dim() != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"BlendGate: expected features (N, {self.n_features}), got {tuple(features.shape)}")
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"BlendGate: expected features (B, {self.n_features}), got {tuple(features.shape)}")
        return torch.sigmoid(self.net((features - self.mean) / self.std))
