"""Batches of synthetic training triples as tensors, for the latent-restoration trainers and evaluation."""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch

from . import degrade
from .data import PhotoPool, make_pair
from .degrade import DegradeConfig


def to_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Images (H, W, C) of one shape (numpy, e.g. float32 in [0, 1]) -> a contiguous batch (B, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


def stack_triples(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(x (S, S, 3), y (S, S, 3), m (S, S))] float32 [0, 1] -> x (B, 3, S, S), y (B, 3, S, S), m (B, 1, S, S)."""
    if not triples:
        raise ValueError("stack_triples: empty list")
    x, y = to_batch([t[0] for t in triples]), to_batch([t[1] for t in triples])
    m = torch.from_numpy(np.stack([t[2] for t in triples]))[:, None].contiguous()
    return x, y, m


def pair_batch(pool: PhotoPool, rng: np.random.Generator, batch: int, size: int,
               cfg: DegradeConfig = DegradeConfig()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`batch` fresh synthetic pairs: degraded x, clean y (gray when x is), defect mask m; see stack_triples."""
    return stack_triples([make_pair(pool, rng, size, cfg) for _ in range(batch)])


def crop_batch(pool: PhotoPool, rng: np.random.Generator, batch: int, size: int) -> torch.Tensor:
    """`batch` random crops (B, 3, S, S) [0, 1] of the pool's photos, untouched (e.g. real old photos)."""
    return to_batch([pool.random_crop(rng, size) for _ in range(batch)])


def check_mixture(p_mild: float, p_family: float) -> None:
    """Raise ValueError unless p_mild, p_family >= 0 and p_mild + p_family <= 1 (RecipeMixture's shares)."""
    if not (0 <= p_mild <= 1 and 0 <= p_family <= 1 and p_mild + p_family <= 1):
        raise ValueError(f"need p_mild, p_family >= 0 with p_mild + p_family <= 1, got {p_mild} and {p_family}")


class RecipeMixture:
    """The degradation recipe of each batch: the default recipe (heavy), a milder one (every probability times
    mild_scale) with probability p_mild, or one family of the recipe alone (or none: a clean crop) with probability
    p_family, so mildly damaged scans and every kind of damage on its own are seen too (refiner, joint tuning)."""

    def __init__(self, p_mild: float, mild_scale: float, p_family: float):
        check_mixture(p_mild, p_family)
        self.p_mild, self.p_family = p_mild, p_family
        self.heavy, self.mild = DegradeConfig(), degrade.scaled_recipe(mild_scale)
        self.families = [degrade.family_recipe()] + [degrade.family_recipe(f) for f in degrade.FAMILIES]  # 0: clean

    def pick(self, rng: np.random.Generator) -> DegradeConfig:
        u = rng.random()
        if u < self.p_mild:
            return self.mild
        if u < self.p_mild + self.p_family:
            return self.families[rng.integers(len(self.families))]
        return self.heavy

    def describe(self) -> dict:
        """For a run's recorded data recipe."""
        return {"degrade": asdict(self.heavy), "p_mild": self.p_mild, "mild_degrade": asdict(self.mild),
                "p_family": self.p_family, "families": {"": [], **degrade.FAMILIES}}
