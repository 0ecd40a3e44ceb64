"""A tiny corpus of four 80x64 JPEG gradients with noise, for the latent-restoration trainers' tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_gradient_corpus(root: Path) -> Path:
    """Create `root` with p0.jpg .. p3.jpg (distinct colour gradients + noise) and return it."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80].astype(np.float32)
    for i in range(4):
        img = np.stack([xx * (2 + i), yy * 3 + 30 * i, (xx + yy) * 1.5], -1) % 256 + rng.normal(0, 5, (64, 80, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / f"p{i}.jpg", quality=95)
    return root
