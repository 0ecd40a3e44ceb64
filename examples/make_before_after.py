"""Render docs/before_after.jpg: each example scan beside what `oldphoto restore` makes of it with the shipped
models (the B&W print also colorized, the defect mask of the colour print shown), so the README can show real
output of the current weights.

    python examples/make_before_after.py [--out docs/before_after.jpg]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from oldphoto import io as oio
from oldphoto.config import RestoreConfig
from oldphoto.pipeline import load_models, process_file, resolve_device

HERE = Path(__file__).resolve().parent
ROW_HEIGHT = 360

# example file, settings, caption
PANELS = [
    ("faded_colour_print.jpg", {}, "restored"),
    ("faded_colour_print.jpg", {"only_mask": True}, "defect mask (--only-mask)"),
    ("bw_print_gray.png", {}, "restored"),
    ("bw_print_gray.png", {"colorize": True}, "restored + --colorize"),
    ("sepia_print_16bit.tif", {}, "restored (16-bit kept)"),
    ("rotated_scan.jpg", {}, "restored"),
]


def _as_rgb8(pixels: np.ndarray) -> Image.Image:
    """(H, W, C) uint8/uint16 -> 8-bit RGB image."""
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]))


def _fit(img: Image.Image, caption: str) -> Image.Image:
    w = max(1, round(img.width * ROW_HEIGHT / img.height))
    img = img.resize((w, ROW_HEIGHT), Image.Resampling.LANCZOS)
    ImageDraw.Draw(img).text((6, 6), caption, fill=(255, 40, 40))
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "before_after.jpg")
    args = ap.parse_args()
    rows: dict[str, list[Image.Image]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, settings, caption) in enumerate(PANELS):
            src = HERE / name
            cfg = RestoreConfig(device="cpu", **settings)
            models = load_models(cfg, resolve_device(cfg.device))
            res = process_file(src, Path(tmp) / f"{i}" / src.stem, cfg, models)
            if name not in rows:
                rows[name] = [_fit(_as_rgb8(oio.read(src, cfg.max_pixels).pixels), f"{name} (scan)")]
            shown = res.outputs[0]  # the mask for --only-mask, else the restored file
            rows[name].append(_fit(_as_rgb8(oio.read(shown, cfg.max_pixels).pixels), caption))
    lines = [row for row in rows.values()]
    width = max(sum(p.width for p in row) for row in lines)
    sheet = Image.new("RGB", (width, ROW_HEIGHT * len(lines)), (255, 255, 255))
    for r, row in enumerate(lines):
        x = 0
        for p in row:
            sheet.paste(p, (x, r * ROW_HEIGHT))
            x += p.width
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=88)
    print(args.out)


if __name__ == "__main__":
    main()
