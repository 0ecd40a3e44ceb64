"""Pack the corpus small enough to travel to a lent GPU machine (the device tool carries at most 64 MiB with the
repository, whose tracked files are ~45 MB): the training photos at `--train-side` px, the validation photos at
`--val-side` px, re-encoded as JPEG under their own names, so `data.split_corpus` splits the pack exactly as it
splits the corpus (the split hashes file names; Pillow reads a file by its content, not its suffix).

    python tools/gpu/pack_corpus.py .gpu/corpus            # then carry [".gpu"] (ignored via .git/info/exclude)

Training there sees JPEG-recompressed photos at 2048 px instead of the originals at up to 2560 px: say so in the
data recipe of whatever it trains. In-training validation there runs on the smaller validation photos, so its
numbers are not comparable with the ones here: select and evaluate the runs' weights on this machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageOps

from oldphoto.train.data import corpus_dir, split_corpus


def pack(src: Path, dst: Path, train_side: int, val_side: int, quality: int) -> int:
    """Write the pack into dst; returns its size in bytes."""
    train, val = split_corpus(src)
    dst.mkdir(parents=True, exist_ok=True)
    total = 0
    for path, side in [(p, train_side) for p in train] + [(p, val_side) for p in val]:
        with Image.open(path) as im:
            im.draft("RGB", (side, side))
            im = ImageOps.exif_transpose(im).convert("RGB")
            if max(im.size) > side:
                f = side / max(im.size)
                im = im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.LANCZOS)
            out = dst / path.name
            im.save(out, "JPEG", quality=quality, subsampling=0)
            total += out.stat().st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dst", type=Path)
    ap.add_argument("--src", type=Path, default=None, help="corpus folder (default: the oldphoto corpus)")
    ap.add_argument("--train-side", type=int, default=2048)
    ap.add_argument("--val-side", type=int, default=1024)
    ap.add_argument("--quality", type=int, default=87)
    a = ap.parse_args()
    size = pack(a.src or corpus_dir(), a.dst, a.train_side, a.val_side, a.quality)
    print(f"{a.dst}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
