"""io.read_metadata: a scan's metadata as read() gives it, without decoding its pixels (for a sidecar rewritten alone
beside an unchanged restoration)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from io_samples import XMP, gradient, rich_exif
from PIL import Image

from oldphoto.io import read, read_metadata


@pytest.mark.parametrize("kind", ["jpeg", "png16", "tiff"])
def test_read_metadata_gives_what_read_gives_without_the_pixels(tmp_path, kind, monkeypatch):
    path = tmp_path / {"jpeg": "a.jpg", "png16": "a.png", "tiff": "a.tif"}[kind]
    if kind == "jpeg":  # turned: orientation 6, a resolution that differs across and down
        Image.fromarray(gradient(30, 40, 3, np.uint8)).save(path, exif=b"Exif\0\0" + rich_exif(orientation=6), xmp=XMP,
                                                            dpi=(300, 150))
    elif kind == "png16":
        from oldphoto.io import Metadata, write

        write(path, gradient(30, 40, 3, np.uint16), None, "PNG", Metadata(xmp=XMP, dpi=(600, 600)))
    else:
        tifffile.imwrite(path, gradient(30, 40, 1, np.uint8)[..., 0], extratags=[(700, 1, len(XMP), XMP, True)],
                         resolution=(200, 200))
    full = read(path, 10**6)
    info, meta = read_metadata(path)
    assert (info.width, info.height) == (full.pixels.shape[1], full.pixels.shape[0])
    for field in ("exif", "xmp", "iptc", "dpi", "aspect", "tiff_tags", "text", "frame"):
        assert getattr(meta, field) == getattr(full.meta, field), field
    if kind == "jpeg":
        assert meta.frame.orientation == 6 and meta.dpi == (150, 300)


def _bytes_read() -> int:
    """What this process has read from files so far (Linux: /proc/self/io's rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts bytes read through /proc/self/io")
@pytest.mark.parametrize("block", [4096, 1 << 20])
def test_read_metadata_of_a_png_in_many_idat_chunks_does_not_read_its_pixel_data(tmp_path, monkeypatch, block):
    """libpng and most writers cut the pixel data into 8 KiB IDAT chunks: walking their headers through a buffer of the
    file system's block size (4 KiB on a local disk, 1 MiB on some shares) read half of the pixel data, or all of it."""
    from oldphoto.io import png, reader

    path = tmp_path / "a.png"
    monkeypatch.setattr(png, "_IDAT_SIZE", 8192)
    with open(path, "wb") as f:
        png.write_png(f, np.random.default_rng(1).integers(0, 65535, (400, 600, 3), dtype=np.uint16), None, [], level=1)
    real = reader.open_source
    monkeypatch.setattr(reader, "open_source", lambda p, buffering=-1: real(p, block if buffering == -1 else buffering))
    before = _bytes_read()
    info, _ = read_metadata(path)
    spent = _bytes_read() - before
    assert (info.width, info.height) == (600, 400)
    assert spent < path.stat().st_size / 20, f"{spent} of {path.stat().st_size} bytes read"
