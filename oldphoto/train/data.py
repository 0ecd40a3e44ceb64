"""Training data: the corpus of clean photos, its fixed train/validation split, random crops and synthetic pairs.

Crops and pairs are numpy (H, W, 3) float32 in [0, 1]; masks (H, W) float32 in {0, 1}.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, SettingsError
from .degrade import DegradeConfig, Degraded, degrade
from .degrade_unstructured import luma

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")


def corpus_dir() -> Path:
    """$OLDPHOTO_CORPUS, else ~/.cache/oldphoto/corpus."""
    env = os.environ.get("OLDPHOTO_CORPUS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "oldphoto" / "corpus"


def list_photos(root: Path) -> list[Path]:
    """Image files directly in `root` (sorted; hidden files and other files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise SettingsError(f"{root}: photo folder does not exist (set corpus= or $OLDPHOTO_CORPUS)")
    return sorted(p for p in root.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _hash_unit(name: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64


def split_corpus(root: Path, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(train, validation) photo paths of the corpus in `root`, both sorted and disjoint.

    A photo is in validation when the hash of (seed, file name) falls below val_fraction, so each photo's side
    depends on its name only: adding or removing other photos never moves a validation photo into training.
    If that leaves validation empty (tiny corpora), the photo with the lowest hash goes to validation.
    SettingsError when there is no photo, or (val_fraction > 0) when one side would be empty.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    photos = list_photos(root)
    score = {p: _hash_unit(p.name, seed) for p in photos}
    val = [p for p in photos if score[p] < val_fraction]
    if not val and val_fraction > 0 and len(photos) >= 2:
        val = [min(photos, key=score.__getitem__)]
    train = [p for p in photos if p not in set(val)]
    if not photos:
        raise SettingsError(f"{root}: no photos in the corpus folder ({', '.join(IMAGE_SUFFIXES)})")
    if val_fraction > 0 and not (train and val):
        raise SettingsError(f"{root}: {len(photos)} photo(s) cannot be split into training and validation photos "
                            f"(val_fraction {val_fraction}); the corpus needs at least 2")
    return train, val


def load_photo(path: Path, max_side: int) -> np.ndarray:
    """Read a photo as upright RGB uint8 (H, W, 3), downscaled so the longest side <= max_side."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale directly (much faster)
            im = ImageOps.exif_transpose(im).convert("RGB")
            if max(im.size) > max_side:
                f = max_side / max(im.size)
                im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(path, f"cannot read photo: {e}") from e


class PhotoPool:
    """Clean photos held in memory as uint8 (H, W, 3), longest side <= max_side, for random crops."""

    def __init__(self, paths: Sequence[Path], max_side: int = 1536):
        if not paths:
            raise ValueError("PhotoPool needs at least one photo, got an empty list")
        if max_side < 16:
            raise ValueError(f"max_side must be >= 16, got {max_side}")
        self.paths = [Path(p) for p in paths]
        self.max_side = max_side
        self.photos = [load_photo(p, max_side) for p in self.paths]

    def __len__(self) -> int:
        return len(self.photos)

    def random_crop(self, rng: np.random.Generator, size: int, scale_range: tuple[float, float] = (0.25, 1.0),
                    index: int | None = None) -> np.ndarray:
        """A (size, size, 3) float32 crop in [0, 1] of a random photo (or photo `index`).

        The photo is rescaled by a log-uniform factor in scale_range (scans of the same print at 300 to 1200
        dpi), raised when needed so the crop fits (small photos are upscaled), then cropped at a random place
        and mirrored left-right half of the time (never upside down: skies stay up for colorization).
        """
        if size < 1:
            raise ValueError(f"crop size must be positive, got {size}")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        i = int(rng.integers(len(self.photos))) if index is None else index
        photo = self.photos[i]
        h, w = photo.shape[:2]
        s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        s = max(s, size / min(h, w))
        win = min(size / s, h, w)  # crop window in photo pixels (min: float round-off)
        y0 = rng.uniform(0, h - win)
        x0 = rng.uniform(0, w - win)
        # crop an integer region around the window first so Pillow only touches a few pixels
        ya, xa = int(y0), int(x0)
        yb, xb = min(h, math.ceil(y0 + win) + 1), min(w, math.ceil(x0 + win) + 1)
        region = Image.fromarray(photo[ya:yb, xa:xb])
        box = (x0 - xa, y0 - ya, x0 - xa + win, y0 - ya + win)
        crop = region.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=None)
        out = np.asarray(crop, dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)


def to_gray(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 -> (H, W, 3) float32 with the Rec. 601 luma replicated to the three channels."""
    return np.repeat(luma(x)[..., None], 3, axis=2)


Generator = Callable[[np.ndarray, np.random.Generator, Any], Degraded]  # degrade(clean, rng, cfg) -> Degraded


def make_pair(pool: PhotoPool, rng: np.random.Generator, size: int, cfg: Any = DegradeConfig(),
              index: int | None = None, generator: Generator = degrade) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic training triple (x, y, m) from a random crop, degraded by `generator` with its config `cfg`
    (default: the training recipe, degrade.degrade with a DegradeConfig).

    x: (size, size, 3) float32 degraded; y: (size, size, 3) float32 clean target, in gray (luma replicated)
    when x is a B&W or toned print, since the restorer must not invent colour; m: (size, size) float32 {0, 1}.
    """
    clean = pool.random_crop(rng, size, index=index)
    d = generator(clean, rng, cfg)
    y = to_gray(clean) if d.gray else clean
    return d.image, y, d.mask


def validation_set(paths: Sequence[Path], n: int, size: int, seed: int, cfg: Any = DegradeConfig(),
                   max_side: int = 1536, generator: Generator = degrade
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """n fixed (x, y, m) triples, identical on every call with the same arguments (path order does not matter);
    `generator` and its `cfg` as in make_pair.

    Photos are visited in turn (sorted by name) so every validation photo is used.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    pool = PhotoPool(sorted(Path(p) for p in paths), max_side=max_side)
    rng = np.random.default_rng(seed)
    return [make_pair(pool, rng, size, cfg, index=k % len(pool), generator=generator) for k in range(n)]
