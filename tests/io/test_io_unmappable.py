"""Sources on file systems that cannot memory-map a file (some FUSE and network mounts, /proc-like files): mmap
fails there with ENODEV, EACCES or EINVAL, and the readers that map the source read it instead."""

from __future__ import annotations

import errno
import io
import mmap
import os
import struct
import tracemalloc

import numpy as np
import pytest
import tifffile

from io_samples import gradient
from oldphoto.errors import ImageError
from oldphoto.io import png, read

UNMAPPABLE = [errno.ENODEV, errno.EACCES, errno.EINVAL]


def _refuse_maps(monkeypatch, code: int, before=None) -> list[int]:
    """Make every mmap.mmap (np.memmap maps through it too) fail with `code`; returns the list of refusals."""
    refused = []

    def refuse(*args, **kwargs):
        if before is not None:
            before()
        refused.append(code)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(mmap, "mmap", refuse)
    return refused


def _png16(path, px: np.ndarray) -> None:
    """A 16-bit PNG with a tRNS colour key (libpng is given it before the pixel data) and IDATs of 4 KiB."""
    buf = io.BytesIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(png, "_IDAT_SIZE", 4096)
        png.write_png(buf, px, None, [png.chunk(b"tRNS", struct.pack(">HHH", *px[0, 0]))])
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("code", UNMAPPABLE)
def test_16_bit_png_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch, code):
    px = gradient(60, 70, 3, np.uint16, seed=5)
    _png16(tmp_path / "p.png", px)
    mapped = read(tmp_path / "p.png", 10**6)
    refused = _refuse_maps(monkeypatch, code)
    pic = read(tmp_path / "p.png", 10**6)
    assert refused == [code]
    np.testing.assert_array_equal(pic.pixels, mapped.pixels)
    np.testing.assert_array_equal(pic.alpha, mapped.alpha)
    np.testing.assert_array_equal(pic.pixels, px)
    assert pic.alpha[0, 0] == 0 and pic.alpha.max() == 65535 and pic.notes == mapped.notes


def test_16_bit_png_map_failing_otherwise_still_fails_the_file(tmp_path, monkeypatch):
    _png16(tmp_path / "p.png", gradient(5, 6, 3, np.uint16))
    _refuse_maps(monkeypatch, errno.EIO)
    with pytest.raises(ImageError) as e:
        read(tmp_path / "p.png", 10**6)
    assert str(e.value) == f"{tmp_path / 'p.png'}: cannot read PNG: [Errno 5] Input/output error"


def test_16_bit_png_cut_short_while_read_instead_of_mapped_says_so(tmp_path, monkeypatch):
    path = tmp_path / "p.png"
    _png16(path, gradient(200, 300, 3, np.uint16))
    data = path.read_bytes()
    assert len(data) > 100_000  # more than the reader has buffered
    # cut short after its size was checked, before its pixel data is read
    _refuse_maps(monkeypatch, errno.ENODEV, before=lambda: path.write_bytes(data[:100]))
    with pytest.raises(ImageError, match=r": cannot read PNG: truncated: the file ends at byte \d+, its chunks end "
                                         r"at byte \d+ \(changed while it was read\)$"):
        read(path, 10**6)


TIFFS = {
    "rgb16": (gradient(31, 19, 3, np.uint16, seed=1), {"photometric": "rgb"}),
    "gray8": (gradient(31, 19, 1, np.uint8, seed=2)[:, :, 0], {"photometric": "minisblack"}),
    "rgba8": (gradient(31, 19, 4, np.uint8, seed=3), {"photometric": "rgb", "extrasamples": [2]}),
}


@pytest.mark.parametrize("code", UNMAPPABLE)
@pytest.mark.parametrize("kind", sorted(TIFFS))
def test_uncompressed_tiff_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch, kind, code):
    px, options = TIFFS[kind]
    tifffile.imwrite(tmp_path / "u.tif", px, **options)
    mapped = read(tmp_path / "u.tif", 10**6)
    assert isinstance(mapped.pixels, np.memmap) or isinstance(mapped.pixels.base, np.memmap)
    refused = _refuse_maps(monkeypatch, code)
    pic = read(tmp_path / "u.tif", 10**6)
    assert refused == [code]
    np.testing.assert_array_equal(pic.pixels, mapped.pixels)
    if mapped.alpha is None:
        assert pic.alpha is None
    else:
        np.testing.assert_array_equal(pic.alpha, mapped.alpha)
    assert pic.notes == mapped.notes


def test_uncompressed_tiff_map_failing_otherwise_still_fails_the_file(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "u.tif", gradient(4, 5, 3, np.uint8), photometric="rgb")
    _refuse_maps(monkeypatch, errno.EIO)
    with pytest.raises(ImageError) as e:
        read(tmp_path / "u.tif", 10**6)
    assert str(e.value) == f"{tmp_path / 'u.tif'}: cannot read TIFF: [Errno 5] Input/output error"


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_reading_instead_of_mapping_needs_about_the_decoded_size(tmp_path, monkeypatch, fmt):
    """The uncompressed TIFF is read straight into its buffer; the PNG costs one copy of its compressed data."""
    px = gradient(600, 500, 3, np.uint16)
    path = tmp_path / f"x.{fmt.lower()}"
    if fmt == "TIFF":
        tifffile.imwrite(path, px, photometric="rgb")
    else:
        _png16(path, px)
    _refuse_maps(monkeypatch, errno.ENODEV)
    tracemalloc.start()
    try:
        pic = read(path, 10**8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pic.pixels, px)
    decoded = pic.pixels.nbytes + (pic.alpha.nbytes if pic.alpha is not None else 0)  # the PNG's colour key: alpha
    compressed = 0 if fmt == "TIFF" else path.stat().st_size
    assert peak <= 1.1 * decoded + compressed, f"{peak / decoded:.2f}x the decoded size"


def test_an_uncompressed_tiff_is_mapped_from_the_file_opened_not_from_its_name(tmp_path, monkeypatch):
    """The page is mapped through the open file: a scan replaced under its name between opening (and hashing) and
    mapping is still read as the file that was opened."""
    first, second = gradient(40, 50, 3, np.uint16, seed=1), gradient(40, 50, 3, np.uint16, seed=2)
    tifffile.imwrite(tmp_path / "s.tif", first, photometric="rgb")
    tifffile.imwrite(tmp_path / "other.tif", second, photometric="rgb")
    memmap = np.memmap

    def replaced_first(*args, **kwargs):
        if (tmp_path / "other.tif").exists():
            os.replace(tmp_path / "other.tif", tmp_path / "s.tif")
        return memmap(*args, **kwargs)

    monkeypatch.setattr(np, "memmap", replaced_first)
    pic = read(tmp_path / "s.tif", 10**6)
    assert not (tmp_path / "other.tif").exists()  # it was replaced while the scan was read
    np.testing.assert_array_equal(pic.pixels, first)
