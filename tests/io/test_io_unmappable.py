"""File systems that cannot memory-map a file (some FUSE and network mounts, /proc-like files): mmap fails there with
ENODEV, EACCES or EINVAL. Sources are never mapped, so a scan there reads as any other; large buffers in a temp folder
there go to another temp folder."""

from __future__ import annotations

import errno
import io
import mmap
import os
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import gradient
from oldphoto.errors import ImageError, TempFolderError
from oldphoto.io import allocate, buffers, png, read

UNMAPPABLE = [errno.ENODEV, errno.EACCES, errno.EINVAL]


def _refuse_maps(monkeypatch, code: int) -> list[int]:
    """Make every mmap.mmap (np.memmap maps through it too) fail with `code`; returns the list of refusals."""
    refused = []

    def refuse(*args, **kwargs):
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


TIFFS = {
    "rgb16": (gradient(31, 19, 3, np.uint16, seed=1), {"photometric": "rgb"}),
    "gray8": (gradient(31, 19, 1, np.uint8, seed=2)[:, :, 0], {"photometric": "minisblack"}),
    "rgba8": (gradient(31, 19, 4, np.uint8, seed=3), {"photometric": "rgb", "extrasamples": [2]}),
}


@pytest.mark.parametrize("kind", ["png16", *sorted(TIFFS)])
def test_sources_are_read_never_mapped(tmp_path, monkeypatch, kind):
    """Not even where mapping saved a copy (uncompressed TIFF pages, a 16-bit PNG's chunks for libpng): a scan cut
    short in place while mapped raised SIGBUS (test_io_truncated_in_place). A file system that cannot map files
    changes nothing."""
    if kind == "png16":
        px, alpha = gradient(60, 70, 3, np.uint16, seed=5), None
        _png16(tmp_path / "s", px)
    else:
        px, options = TIFFS[kind]
        tifffile.imwrite(tmp_path / "s", px, **options)
        px, alpha = (px[:, :, :3], px[:, :, 3]) if kind == "rgba8" else (px, None)
    refused = _refuse_maps(monkeypatch, errno.ENODEV)
    pic = read(tmp_path / "s", 10**6)
    assert refused == []
    np.testing.assert_array_equal(pic.pixels, px if px.ndim == 3 else px[:, :, None])
    if kind == "png16":  # the colour key: alpha
        assert pic.alpha[0, 0] == 0 and pic.alpha.max() == 65535
    elif alpha is None:
        assert pic.alpha is None
    else:
        np.testing.assert_array_equal(pic.alpha, alpha)


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_reading_needs_about_the_decoded_size(tmp_path, fmt):
    """The uncompressed TIFF is read straight into its buffer; the PNG costs one copy of its compressed data (under
    png._STREAM_RAM here: in RAM)."""
    px = gradient(600, 500, 3, np.uint16)
    path = tmp_path / f"x.{fmt.lower()}"
    if fmt == "TIFF":
        tifffile.imwrite(path, px, photometric="rgb")
    else:
        _png16(path, px)
    tracemalloc.start()
    try:
        pic = read(path, 10**8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pic.pixels, px)
    decoded = pic.pixels.nbytes + (pic.alpha.nbytes if pic.alpha is not None else 0)  # the PNG's colour key: alpha
    compressed = 0 if fmt == "TIFF" else path.stat().st_size
    assert compressed < png._STREAM_RAM
    assert peak <= 1.1 * decoded + compressed, f"{peak / decoded:.2f}x the decoded size"


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_a_scan_is_read_from_the_file_opened_not_from_its_name(tmp_path, fmt):
    """A scan replaced under its name between opening (and hashing) and reading its pixels is still read as the file
    that was opened."""
    from oldphoto.io import raster_read, tiff_read

    first, second = gradient(40, 50, 3, np.uint16, seed=1), gradient(40, 50, 3, np.uint16, seed=2)
    for name, px in (("s", first), ("other", second)):
        if fmt == "TIFF":
            tifffile.imwrite(tmp_path / name, px, photometric="rgb")
        else:
            with open(tmp_path / name, "wb") as f:
                png.write_png(f, px, None, [])
    with open(tmp_path / "s", "rb") as fh:
        plan = tiff_read.plan(fh, lambda w, h: None) if fmt == "TIFF" else raster_read.plan(fh, fmt, lambda w, h: None)
        os.replace(tmp_path / "other", tmp_path / "s")
        pixels = plan.decode(None)[0]
    np.testing.assert_array_equal(pixels, first)


# ------------------------------------------------------------------------------------------ temp folders
# Buffers over DISK_THRESHOLD are memory-mapped temp files: one in a temp folder whose file system cannot map files
# goes to a system temp folder that can, with a note, never to RAM; where none can, the file fails with one line.


@pytest.fixture
def temp_folders(tmp_path, monkeypatch):
    """(the temp folder, as TMPDIR names it; a system temp folder), both the test's own."""
    named, system = tmp_path / "tmpdir", tmp_path / "system"
    named.mkdir()
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(named))
    monkeypatch.setattr(buffers, "SYSTEM_TEMP", (str(system),))
    return named, system


def _placed(named, system, code=errno.ENODEV) -> str:
    return f"pixel buffers: {named} cannot memory-map files ({os.strerror(code)}); put in {system} instead"


@pytest.mark.parametrize("code", UNMAPPABLE)
def test_large_buffers_go_to_a_system_temp_folder_where_tmpdir_cannot_map_files(temp_folders, unmappable_folders,
                                                                               code):
    named, system = temp_folders
    maps = unmappable_folders(named, code=code)
    with buffers.file_buffers("scan.tif") as notes:
        pixels = allocate((30, 20, 3), np.uint16, threshold=0)
        alpha = allocate((30, 20), np.uint16, threshold=0)
    assert isinstance(pixels, np.memmap) and isinstance(alpha, np.memmap)  # on disk still, not in RAM
    assert maps.refused == [named, named] and maps.mapped == [system, system]
    pixels[...] = gradient(30, 20, 3, np.uint16)
    np.testing.assert_array_equal(pixels, gradient(30, 20, 3, np.uint16))
    assert notes == [_placed(named, system, code)]  # once for the file
    assert list(named.iterdir()) == list(system.iterdir()) == []  # both temp files already unlinked


def test_a_tmp_dir_that_cannot_map_files_passes_large_buffers_to_the_temp_folder(tmp_path, temp_folders,
                                                                                unmappable_folders):
    named, system = temp_folders
    given = tmp_path / "given"
    given.mkdir()
    maps = unmappable_folders(given)
    with buffers.file_buffers("scan.tif") as notes:
        assert isinstance(allocate((4, 5), np.uint8, tmp_dir=given, threshold=0), np.memmap)
    assert maps.refused == [given] and maps.mapped == [named]
    assert notes == [_placed(given, named)]


def test_no_temp_folder_that_can_map_files_fails_the_file_in_one_line(tmp_path, temp_folders, unmappable_folders,
                                                                      monkeypatch):
    named, system = temp_folders
    other = tmp_path / "other"
    other.mkdir()
    # the temp folder named again, and a folder that does not exist, are passed over
    monkeypatch.setattr(buffers, "SYSTEM_TEMP", (str(named), str(system), str(tmp_path / "missing"), str(other)))
    unmappable_folders(named, system, other)
    with pytest.raises(TempFolderError) as e:
        allocate((40, 50), np.uint8, threshold=0)
    assert str(e.value) == (f"no temp folder can hold a pixel buffer of 2000 bytes: {named} cannot memory-map files "
                            f"(No such device), nor can {system} (No such device), nor can {other} (No such device); "
                            "point TMPDIR at a folder on a local disk")
    path = tmp_path / "scan.png"
    Image.fromarray(gradient(40, 50, 3, np.uint8)).save(path)
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 0)
    with pytest.raises(ImageError) as e:
        read(path, 10**6)
    assert str(e.value) == (f"{path}: no temp folder can hold a pixel buffer of 6000 bytes: {named} cannot "
                            f"memory-map files (No such device), nor can {system} (No such device), nor can {other} "
                            "(No such device); point TMPDIR at a folder on a local disk")


def test_a_full_system_temp_folder_is_named_in_the_error(temp_folders, unmappable_folders, monkeypatch):
    named, system = temp_folders
    unmappable_folders(named)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(TempFolderError, match=rf"^no temp folder can hold a pixel buffer of 2 MiB: {named} cannot "
                                              rf"memory-map files \(No such device\), {system} cannot hold it \(No "
                                              r"space left on device\); point TMPDIR at a folder on a local disk$"):
        allocate((1024, 1024, 2), np.uint8, threshold=0)


def test_a_platform_without_posix_fallocate_still_gets_its_buffer_on_disk(temp_folders, monkeypatch):
    named, _ = temp_folders
    monkeypatch.delattr(os, "posix_fallocate")
    buf = allocate((64, 64, 2), np.uint8, threshold=0)
    buf[...] = 7
    assert isinstance(buf, np.memmap) and int(buf.sum()) == 7 * buf.size


def test_a_temp_folder_failing_otherwise_still_fails_without_trying_another(temp_folders, unmappable_folders):
    named, system = temp_folders
    maps = unmappable_folders(named, code=errno.EIO)
    with pytest.raises(OSError) as e:
        allocate((4, 5), np.uint8, threshold=0)
    assert e.value.errno == errno.EIO and maps.refused == [named] and maps.mapped == []


@pytest.mark.parametrize("orientation", [1, 6])
def test_reading_says_where_its_buffers_went(tmp_path, temp_folders, unmappable_folders, monkeypatch, orientation):
    """Pixels, alpha and (turned upright) their copies: one note for the file, among the picture's notes."""
    named, system = temp_folders
    px = gradient(30, 40, 4, np.uint8)
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, px, photometric="rgb", extrasamples=[2], compression="zlib",
                     extratags=[(274, "H", 1, orientation, True)])
    expected = read(path, 10**6)
    maps = unmappable_folders(named)
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 0)
    pic = read(path, 10**6)
    np.testing.assert_array_equal(pic.pixels, expected.pixels)
    np.testing.assert_array_equal(pic.alpha, expected.alpha)
    assert isinstance(pic.pixels, np.memmap) or isinstance(pic.pixels.base, np.memmap)
    assert len(maps.refused) == len(maps.mapped) == (1 if orientation == 1 else 3)  # one raw buffer, then turned
    assert set(maps.mapped) == {system}
    assert pic.notes == expected.notes + [_placed(named, system)]
