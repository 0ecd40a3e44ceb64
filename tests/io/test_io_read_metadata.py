"""io.read_metadata: a scan's metadata as read() gives it, without decoding its pixels (for a sidecar rewritten alone
beside an unchanged restoration)."""

from __future__ import annotations

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
