"""Write synthetic degraded examples with their ground truth (for `oldphoto synth`, eyeballing and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import OldPhotoError
from .data import Generator, PhotoPool, corpus_dir, split_corpus, to_gray
from .degrade import DegradeConfig, ageing_recipe, degrade
from .degrade_second import SecondConfig, degrade_second


def recipe(generator: str = "training", ageing: float = 0.0) -> tuple[Generator, Any]:
    """(generator, its config) by name: "training" (degrade.degrade; `ageing` sets the probability of each ageing
    damage kind, off by default) or "second" (degrade_second: the generator kept for checking, never trained on)."""
    if generator == "second":
        if ageing:
            raise ValueError("ageing applies to the training recipe only; the second generator has its own kinds")
        return degrade_second, SecondConfig()
    if generator != "training":
        raise ValueError(f"unknown generator {generator!r}; known: training, second")
    return degrade, ageing_recipe(ageing)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded."""
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_examples(out_dir: Path, count: int, seed: int, size: int, corpus: Path | None = None,
                   cfg: Any = DegradeConfig(), generator: Generator = degrade) -> list[Path]:
    """Write `count` synthetic examples made from the corpus' validation photos (never training photos), degraded
    by `generator` with its config `cfg` (default: the training recipe).

    For each NAME = synth_SEED_NNNN: NAME.png (degraded, RGB 8-bit), NAME.mask.png (L, 255 = defect) and
    NAME.clean.png (the target: gray when the degraded print is B&W/toned). Crops are size x size.
    corpus: folder of clean photos (default corpus_dir()). Returns the written paths, three per example.
    """
    if count < 1 or size < 16:
        raise ValueError(f"count must be >= 1 and size >= 16, got count={count}, size={size}")
    root = corpus_dir() if corpus is None else Path(corpus)
    _, val = split_corpus(root)
    if not val:
        raise OldPhotoError(f"no validation photos in corpus {root} (it needs at least 2 photos)")
    pool = PhotoPool(val, max_side=max(1536, size))
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k in range(count):
        clean = pool.random_crop(rng, size, index=k % len(pool))
        d = generator(clean, rng, cfg)
        name = f"synth_{seed}_{k:04d}"
        files = {
            f"{name}.png": Image.fromarray(to_uint8(d.image), "RGB"),
            f"{name}.mask.png": Image.fromarray(to_uint8(d.mask), "L"),
            f"{name}.clean.png": Image.fromarray(to_uint8(to_gray(clean) if d.gray else clean), "RGB"),
        }
        for fname, im in files.items():
            path = out_dir / fname
            im.save(path)
            written.append(path)
    return written
