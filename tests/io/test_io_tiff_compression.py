"""A TIFF output keeps its master's compression where every TIFF reader knows it (none, LZW, PackBits) or it is
Adobe Deflate, with the master's horizontal predictor where the codec takes one; any other becomes LZW with the
predictor, with a note; an output from a master that was no TIFF is LZW with the predictor. Pixels bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import gradient
from oldphoto.io import read, tiff_write, write

# (compression tifffile writes the master with, predictor) -> (Compression, Predictor) of the output
KEPT = [
    ("none", False, 1, 1),
    ("lzw", True, 5, 2),
    ("lzw", False, 5, 1),
    ("packbits", False, 32773, 1),
    ("adobe_deflate", True, 8, 2),
    ("adobe_deflate", False, 8, 1),
    (32946, True, 8, 2),  # old Deflate: written as Adobe Deflate, its registered value
]


def _master(path, px, compression, predictor, rowsperstrip=7):
    pixels = px[..., 0] if px.shape[2] == 1 else px
    photometric = "minisblack" if px.shape[2] == 1 else "rgb"
    kwargs = {"predictor": predictor} if predictor else {}
    tifffile.imwrite(path, pixels, photometric=photometric, compression=compression, rowsperstrip=rowsperstrip,
                     **kwargs)
    return path


def _stored(path):
    with tifffile.TiffFile(path) as t:
        page = t.pages[0]
        tags = {tag.code: tag.value for tag in page.tags}
        return int(tags[259]), int(tags.get(317, 1)), page.asarray(), len(page.dataoffsets)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("compression,predictor,want_compression,want_predictor", KEPT)
def test_master_compression_is_kept(tmp_path, monkeypatch, dtype, c, compression, predictor, want_compression,
                                    want_predictor):
    monkeypatch.setattr(tiff_write, "_STRIP_BYTES", 256)  # several strips even on a tiny image
    px = gradient(23, 19, c, dtype, seed=3)
    src = _master(tmp_path / "m.tif", px, compression, predictor)
    with tifffile.TiffFile(src) as t:
        assert int(t.pages[0].compression) == (compression if isinstance(compression, int) else
                                               tifffile.COMPRESSION[compression.upper()])
    pic = read(src, 10_000)
    assert write(tmp_path / "o.tif", pic.pixels, pic.alpha, "TIFF", pic.meta) == []
    got_compression, got_predictor, pixels, strips = _stored(tmp_path / "o.tif")
    assert (got_compression, got_predictor) == (want_compression, want_predictor)
    assert strips > 1
    np.testing.assert_array_equal(pixels, px[..., 0] if c == 1 else px)
    np.testing.assert_array_equal(read(tmp_path / "o.tif", 10_000).pixels, px)  # through oldphoto's reader too
    if dtype == np.uint8 or c == 1:  # libtiff (Pillow) decodes it too; Pillow has no 16-bit RGB mode
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.tif")), px[..., 0] if c == 1 else px)


def test_alpha_is_kept_with_the_master_compression(tmp_path):
    px = gradient(17, 13, 4, np.uint16, seed=5)
    tifffile.imwrite(tmp_path / "m.tif", px, photometric="rgb", extrasamples=[2], compression="packbits")
    pic = read(tmp_path / "m.tif", 10_000)
    write(tmp_path / "o.tif", pic.pixels, pic.alpha, "TIFF", pic.meta)
    compression, predictor, pixels, _ = _stored(tmp_path / "o.tif")
    assert (compression, predictor) == (32773, 1)
    np.testing.assert_array_equal(pixels, px)


def test_jpeg_master_gets_lzw_and_a_note(tmp_path):
    px = gradient(32, 24, 3, np.uint8, seed=2)
    tifffile.imwrite(tmp_path / "m.tif", px, photometric="rgb", compression="jpeg", rowsperstrip=16)
    pic = read(tmp_path / "m.tif", 10_000)
    assert pic.meta.tiff_compression == (7, 1)
    notes = write(tmp_path / "o.tif", pic.pixels, pic.alpha, "TIFF", pic.meta)
    assert notes == ["TIFF compression 7 (JPEG) of the scan not kept: written as LZW (lossless) with the horizontal "
                     "predictor"]
    compression, predictor, pixels, _ = _stored(tmp_path / "o.tif")
    assert (compression, predictor) == (5, 2)
    np.testing.assert_array_equal(pixels, pic.pixels)  # the decoded JPEG, losslessly


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_from_a_png_is_lzw_with_predictor(tmp_path, dtype):
    px = gradient(21, 15, 3, dtype, seed=4)
    write(tmp_path / "m.png", px, None, "PNG", None)
    pic = read(tmp_path / "m.png", 10_000)
    assert pic.meta.tiff_compression is None
    assert write(tmp_path / "o.tif", pic.pixels, pic.alpha, "TIFF", pic.meta) == []
    compression, predictor, pixels, _ = _stored(tmp_path / "o.tif")
    assert (compression, predictor) == (5, 2)
    np.testing.assert_array_equal(pixels, px)


def test_output_compression_rules():
    oc = tiff_write.output_compression
    assert oc(None) == (5, 2, None)
    assert oc((1, 1)) == (1, 1, None) and oc((32773, 2)) == (32773, 1, None)  # a predictor there means nothing
    assert oc((32946, 2)) == (8, 2, None) and oc((8, 3)) == (8, 2, None)  # integer samples: predictor 2
    for code, name in ((34712, "JPEG 2000"), (50000, "ZSTD"), (34925, "LZMA"), (50001, "WebP"), (4, "CCITT Group 4")):
        assert oc((code, 1)) == (5, 2, f"TIFF compression {code} ({name}) of the scan not kept: written as LZW "
                                       "(lossless) with the horizontal predictor")
    assert oc((60000, 1))[2].startswith("TIFF compression 60000 of the scan not kept")


def test_write_tiff_refuses_what_it_does_not_write(tmp_path):
    px = gradient(4, 4, 1, np.uint8)
    with open(tmp_path / "x.tif", "wb") as out:
        with pytest.raises(ValueError):
            tiff_write.write_tiff(out, px, None, tiff_write.T.Ifd(), compression=7)
        with pytest.raises(ValueError):
            tiff_write.write_tiff(out, px, None, tiff_write.T.Ifd(), compression=32773, predictor=2)
