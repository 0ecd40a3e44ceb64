"""Batches of synthetic training triples as tensors, for the latent-restoration trainers and evaluation."""

from __future__ import annotations

import numpy as np
import torch

from .data import PhotoPool, make_pair
from .degrade import DegradeConfig


def stack_triples(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(x (S, S, 3), y (S, S, 3), m (S, S))] float32 [0, 1] -> x (B, 3, S, S), y (B, 3, S, S), m (B, 1, S, S)."""
    if not triples:
        raise ValueError("stack_triples: empty list")
    x = torch.from_numpy(np.stack([t[0] for t in triples])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack([t[1] for t in triples])).permute(0, 3, 1, 2).contiguous()
    m = torch.from_numpy(np.stack([t[2] for t in triples]))[:, None].contiguous()
    return x, y, m


def pair_batch(pool: PhotoPool, rng: np.random.Generator, batch: int, size: int,
               cfg: DegradeConfig = DegradeConfig()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`batch` fresh synthetic pairs: degraded x, clean y (gray when x is), defect mask m; see stack_triples."""
    return stack_triples([make_pair(pool, rng, size, cfg) for _ in range(batch)])


def crop_batch(pool: PhotoPool, rng: np.random.Generator, batch: int, size: int) -> torch.Tensor:
    """`batch` random crops (B, 3, S, S) [0, 1] of the pool's photos, untouched (e.g. real old photos)."""
    crops = np.stack([pool.random_crop(rng, size) for _ in range(batch)])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
