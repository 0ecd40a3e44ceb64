"""Memory: reading needs about the decoded size (not a multiple of it), writing streams bands, and large
buffers go to disk. Measured with tracemalloc, which sees numpy, Pillow-independent Python and
imagecodecs allocations made through numpy/bytes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile

from io_samples import gradient
from oldphoto.io import buffers, read, write
from oldphoto.io.metadata import Metadata

H, W = 1500, 1200  # 10.8 MB as 16-bit RGB


@pytest.fixture(scope="module")
def px():
    return gradient(H, W, 3, np.uint16)


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["oldphoto-deflate", "lzw", "png16"])
def test_reading_16bit_rgb_needs_at_most_1_5x(tmp_path, px, kind):
    if kind == "oldphoto-deflate":
        path = tmp_path / "x.tif"
        write(path, px, None, "TIFF", None)
    elif kind == "lzw":
        path = tmp_path / "x.tif"
        tifffile.imwrite(path, px, photometric="rgb", compression="lzw", rowsperstrip=16)
    else:
        path = tmp_path / "x.png"
        write(path, px, None, "PNG", None)
    pic, peak = _peak(lambda: read(path, 10**8))
    np.testing.assert_array_equal(pic.pixels, px)
    assert peak <= 1.5 * px.nbytes, f"{peak / px.nbytes:.2f}x"


def test_uncompressed_tiff_is_read_into_a_buffer_of_its_own(tmp_path, px):
    """Not a map of the source (a scan cut short in place while mapped raised SIGBUS): read straight into its
    buffer, no second copy."""
    tifffile.imwrite(tmp_path / "u.tif", px, photometric="rgb")
    pic, peak = _peak(lambda: read(tmp_path / "u.tif", 10**8))
    assert not isinstance(pic.pixels, np.memmap) and not isinstance(pic.pixels.base, np.memmap)
    assert peak < 1.1 * px.nbytes
    np.testing.assert_array_equal(pic.pixels, px)


def test_a_large_16_bit_png_stream_waits_on_disk_not_in_ram(tmp_path, px):
    """libpng wants the compressed stream whole: over png._STREAM_RAM it is read into a temp file of our own, so
    that reading needs about the decoded size, not that plus the stream (a noisy scan barely compresses)."""
    from oldphoto.io import png

    write(tmp_path / "x.png", px, None, "PNG", None)
    assert (tmp_path / "x.png").stat().st_size > max(png._STREAM_RAM, 0.5 * px.nbytes)
    pic, peak = _peak(lambda: read(tmp_path / "x.png", 10**8, tmp_dir=tmp_path))
    np.testing.assert_array_equal(pic.pixels, px)
    assert peak < 1.2 * px.nbytes, f"{peak / px.nbytes:.2f}x"
    assert list(tmp_path.iterdir()) == [tmp_path / "x.png"]  # the temp file is gone with its buffer


def test_large_buffers_go_to_disk(tmp_path, px, monkeypatch):
    write(tmp_path / "x.tif", px, None, "TIFF", None)
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 1 << 20)
    pic, peak = _peak(lambda: read(tmp_path / "x.tif", 10**8, tmp_dir=tmp_path))
    assert isinstance(pic.pixels.base, np.memmap) or isinstance(pic.pixels, np.memmap)
    assert peak < 0.5 * px.nbytes
    np.testing.assert_array_equal(pic.pixels, px)


@pytest.mark.parametrize("mask", [False, True])
def test_an_uncompressed_tiff_read_into_a_disk_buffer_is_not_synced_to_disk(tmp_path, px, monkeypatch, mask):
    """tifffile flushes an np.memmap it read a contiguous page into (msync: a synchronous write of the whole buffer,
    about 1 s for a 60-MP 16-bit scan on a fast disk, several on a slow one); a scratch buffer on an unlinked temp
    file needs no such write."""
    path = tmp_path / "u.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(px, photometric="rgb")
        if mask:  # a transparency mask page, read as alpha
            tw.write(np.ones((H, W), bool), photometric=4, subfiletype=4)
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 1 << 10)
    flushed = []
    real = np.memmap.flush
    monkeypatch.setattr(np.memmap, "flush", lambda self: flushed.append(self.nbytes) or real(self))
    pic = read(path, 10**8, tmp_dir=tmp_path)
    assert isinstance(pic.pixels.base, np.memmap) or isinstance(pic.pixels, np.memmap)
    np.testing.assert_array_equal(pic.pixels, px)
    assert (pic.alpha is not None) == mask
    assert flushed == []


@pytest.mark.parametrize("fmt,storage", [("TIFF", None), ("TIFF", (1, 1)), ("TIFF", (5, 1)), ("TIFF", (32773, 1)),
                                         ("TIFF", (8, 2)), ("PNG", None)],
                         ids=["tiff-default", "tiff-none", "tiff-lzw", "tiff-packbits", "tiff-deflate", "png"])
def test_writing_streams_without_a_full_copy(tmp_path, px, fmt, storage):
    """Every compression a TIFF output keeps from its master (tiff_write.KEPT) streams too."""
    alpha = px[:, :, 0].copy()
    meta = None if storage is None else Metadata(tiff_compression=storage)
    _, peak = _peak(lambda: write(tmp_path / f"x.{fmt}", px, alpha, fmt, meta))
    assert peak < 0.5 * px.nbytes, f"{peak / px.nbytes:.2f}x"
