"""Regenerate the example scans in this folder from the training corpus (seeded, so the pixels are reproducible).

    python examples/make_examples.py [--corpus DIR] [--out DIR]

Each example is a validation photo of the corpus (never a training photo), degraded with the project's recipe
(oldphoto.train.degrade) with the defects each one is meant to show forced on, then written in the file
format it is meant to exercise (JPEG + EXIF, 16-bit TIFF + ICC, grayscale PNG, rotated JPEG).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import piexif
import tifffile
import torch
from PIL import Image, ImageCms

from oldphoto.train.data import corpus_dir, load_photo, split_corpus
from oldphoto.train.degrade import DegradeConfig, degrade

HERE = Path(__file__).resolve().parent

# name, source photo (corpus file stem), long side, seed, DegradeConfig overrides
EXAMPLES = [
    ("faded_colour_print.jpg", "lomiri_friends_by_Aitzol_Berasategi", 1024, 11,
     dict(p_bw=0.0, p_toned=0.0, p_fade=1.0, p_color_cast=1.0, p_structured=1.0, p_damage_after_scan=0.0,
          p_scratch=1.0, p_dust=1.0, p_tear=1.0, p_halftone=0.0, p_jpeg=0.0)),
    ("sepia_print_16bit.tif", "lomiri_Wine_by_Jakkub_Mede", 640, 4,
     dict(p_bw=0.0, p_toned=1.0, p_fade=1.0, p_structured=1.0, p_damage_after_scan=0.0, p_crease=1.0,
          p_scratch=1.0, p_blotch=1.0, p_halftone=0.0, p_noise=0.0, p_jpeg=0.0, p_blur=1.0)),
    ("bw_print_gray.png", "enlightenment_Bamboo", 800, 5,
     dict(p_bw=1.0, p_toned=0.0, p_color_cast=0.0, p_stain=0.0, p_structured=1.0, p_damage_after_scan=0.0,
          p_scratch=1.0, p_dust=1.0, p_hair=1.0, p_halftone=0.0, p_jpeg=0.0)),
    ("rotated_scan.jpg", "plasma_BytheWater", 720, 3,
     dict(p_bw=0.0, p_toned=0.0, p_fade=1.0, p_desaturate=1.0, p_exposure=1.0, p_structured=1.0,
          p_damage_after_scan=0.0, p_tear=1.0, p_crease=1.0, p_texture=1.0, p_halftone=0.0, p_jpeg=0.0)),
]


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(artist: str, description: str, orientation: int = 1) -> bytes:
    return piexif.dump({
        "0th": {piexif.ImageIFD.Artist: artist.encode(), piexif.ImageIFD.ImageDescription: description.encode(),
                piexif.ImageIFD.Orientation: orientation, piexif.ImageIFD.XResolution: (600, 1),
                piexif.ImageIFD.YResolution: (600, 1), piexif.ImageIFD.ResolutionUnit: 2},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"1962:08:15 14:30:00"},
    })


def u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def make(corpus: Path, out: Path) -> list[Path]:
    torch.set_num_threads(1)
    _, val = split_corpus(corpus)
    by_stem = {p.stem: p for p in val}
    icc = srgb_icc()
    written = []
    for name, stem, side, seed, over in EXAMPLES:
        if stem not in by_stem:
            raise SystemExit(f"{stem} is not a validation photo of {corpus}")
        clean = load_photo(by_stem[stem], side).astype(np.float32) / 255
        d = degrade(clean, np.random.default_rng(seed), replace(DegradeConfig(), **over))
        path = out / name
        if name == "faded_colour_print.jpg":
            exif = exif_bytes("Aitzol Berasategi", "oldphoto example: faded colour print")
            Image.fromarray(u8(d.image)).save(path, quality=88, icc_profile=icc, dpi=(600, 600), exif=exif)
        elif name == "sepia_print_16bit.tif":
            px = (np.clip(d.image, 0, 1) * 65535 + 0.5).astype(np.uint16)
            tifffile.imwrite(path, px, photometric="rgb", compression="zlib", predictor=True, iccprofile=icc,
                             resolution=(600, 600), resolutionunit="INCH",
                             description="oldphoto example: sepia-toned print, 16-bit",
                             extratags=[(315, "s", 0, "Jakkub Mede", True)])
        elif name == "bw_print_gray.png":
            gray = u8(d.image.mean(axis=2))
            Image.fromarray(gray, "L").save(path, optimize=True, dpi=(600, 600))
        elif name == "rotated_scan.jpg":
            # stored turned 90 degrees counter-clockwise; EXIF Orientation 6 tells readers to turn it clockwise
            stored = np.ascontiguousarray(np.rot90(u8(d.image), k=1))
            exif = exif_bytes("unknown (KDE Plasma wallpaper BytheWater)", "oldphoto example: rotated scan",
                              orientation=6)
            Image.fromarray(stored).save(path, "JPEG", quality=85, exif=exif)
        written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None, help="folder of clean photos (default: the corpus)")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for p in make(args.corpus or corpus_dir(), args.out):
        print(f"{p}  {p.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
