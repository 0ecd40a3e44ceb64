"""Every bad input fails alone with ImageError naming the file and the reason."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import SRGB_ICC, XMP, gradient, long_, rich_exif, short, tiff_structure
from oldphoto.errors import ImageError
from oldphoto.io import png, probe, read, read_metadata, read_source_sha256, write

EXT = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp"}


def _fails(path, *words, max_pixels=10**6):
    with pytest.raises(ImageError) as info:
        read(path, max_pixels)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _fails(tmp_path / "empty.jpg", "empty file")
    with pytest.raises(ImageError, match="empty file"):
        probe(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello, this is not a photo\n")
    _fails(tmp_path / "notes.jpg", "not a JPEG, PNG, TIFF, WebP or JPEG 2000", "hello")


def test_missing_file_and_folder_named_like_an_image(tmp_path):
    _fails(tmp_path / "missing.png", "cannot open", "No such file")
    (tmp_path / "folder.jpg").mkdir()
    _fails(tmp_path / "folder.jpg", "cannot", "directory")


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    write(path, gradient(4, 4, 3, np.uint8), None, "PNG", None)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading (see the folder case above)")
        _fails(path, "cannot open", "Permission denied")
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("fmt,dtype", [("JPEG", np.uint8), ("WEBP", np.uint8), ("PNG", np.uint8),
                                       ("PNG", np.uint16), ("TIFF", np.uint8), ("TIFF", np.uint16)])
def test_truncated_files(tmp_path, fmt, dtype):
    full = tmp_path / f"full.{EXT[fmt]}"
    write(full, gradient(64, 80, 3, dtype), None, fmt, None, jpeg_quality=90)
    data = full.read_bytes()
    for keep in (0.5, 0.97):
        cut = tmp_path / f"cut.{EXT[fmt]}"
        cut.write_bytes(data[: int(len(data) * keep)])
        _fails(cut, "cannot read", "truncated")


def test_truncated_tiff_written_by_tifffile(tmp_path):
    px = gradient(64, 80, 3, np.uint16)
    for comp in (None, "lzw"):
        tifffile.imwrite(tmp_path / "t.tif", px, photometric="rgb", compression=comp, rowsperstrip=8)
        data = (tmp_path / "t.tif").read_bytes()
        (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
        _fails(tmp_path / "cut.tif", "truncated", "image data runs to byte")


def _png_header_only(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _no_big_allocation(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_huge_header_is_refused_before_decoding(tmp_path, fmt):
    path = tmp_path / f"bomb.{EXT[fmt]}"
    if fmt == "PNG":
        path.write_bytes(_png_header_only(100_000, 100_000))
        size = "100000 x 100000"
    elif fmt == "TIFF":
        ifd0 = [long_(256, 100_000), long_(257, 100_000), short(258, 8, 8, 8), short(259, 8), short(262, 2),
                short(277, 3), long_(278, 100_000)]
        path.write_bytes(tiff_structure("<", ifd0, strip=zlib.compress(b"\0" * 1000)))
        size = "100000 x 100000"
    else:  # JPEG sides stop at 65535: patch the frame header of a small JPEG
        Image.fromarray(gradient(16, 16, 3, np.uint8)).save(path, quality=90)
        data = bytearray(path.read_bytes())
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
        path.write_bytes(bytes(data))
        size = "60000 x 60000"

    def attempt():
        with pytest.raises(ImageError) as info:
            read(path, max_pixels=400_000_000)
        assert size in str(info.value) and "exceeds the limit of 400.0 MP" in str(info.value)

    _no_big_allocation(attempt)
    info = probe(path)  # the header itself is fine to report
    assert (info.width, info.height) == tuple(int(s) for s in size.split(" x "))


@pytest.mark.parametrize("limit, shown", [(100, "0.0001 MP"), (150_000, "0.15 MP"), (200_000, "0.2 MP")])
def test_a_small_pixel_limit_is_named_as_given(tmp_path, limit, shown):
    # `--max-pixels 100` was reported as "exceeds the limit of 0.0 MP"
    path = tmp_path / "a.png"
    Image.fromarray(gradient(500, 500, 3, np.uint8)).save(path)
    with pytest.raises(ImageError) as info:
        read(path, max_pixels=limit)
    assert str(info.value).endswith(f"500 x 500 pixels (0.2 MP) exceeds the limit of {shown}")


def test_unsupported_tiff_layouts(tmp_path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "f.tif", rng.random((8, 8)).astype(np.float32))
    _fails(tmp_path / "f.tif", "32-bit floating point")
    tifffile.imwrite(tmp_path / "i.tif", rng.integers(0, 9, (8, 8)).astype(np.uint32))
    _fails(tmp_path / "i.tif", "32")
    tifffile.imwrite(tmp_path / "lab.tif", rng.integers(0, 255, (8, 8, 3)).astype(np.uint8), photometric="cielab")
    _fails(tmp_path / "lab.tif", "unsupported colour layout", "CIELab")
    tifffile.imwrite(tmp_path / "x.tif", rng.integers(0, 255, (8, 8, 6)).astype(np.uint8), photometric="rgb",
                     extrasamples=["unassalpha", "unspecified", "unspecified"])
    _fails(tmp_path / "x.tif", "6 samples per pixel")


def test_damaged_tiff_directory_is_reported_not_crashed(tmp_path):
    # SamplesPerPixel holding several values: tifffile itself raises TypeError (stripped), or hands the
    # tuple on (tiled)
    base = [long_(256, 4), long_(257, 2), short(259, 1), short(262, 2), short(284, 2), short(277, 3, 3, 3, 3)]
    tiles = [long_(322, 16), long_(323, 16), long_(324, 200), long_(325, 10)]
    for name, tags in (("strips", [short(258, 8, 8, 8)]), ("tiles", tiles)):
        path = tmp_path / f"{name}.tif"
        path.write_bytes(tiff_structure("<", base + tags, strip=bytes(24)))
        _fails(path, "cannot read TIFF: damaged image directory")


def test_multipage_tiff_is_refused_but_previews_are_fine(tmp_path):
    px = gradient(40, 60, 3, np.uint8)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as t:
        for _ in range(3):
            t.write(px, photometric="rgb")
    msg = _fails(tmp_path / "pages.tif", "multi-page TIFF with 3 pages is not supported; split it first")
    assert msg.count("\n") == 0
    with tifffile.TiffWriter(tmp_path / "preview.tif") as t:
        t.write(px, photometric="rgb")
        t.write(px[::4, ::4], photometric="rgb", subfiletype=1)  # flagged reduced resolution
        t.write(px[::8, ::8], photometric="rgb")  # unflagged thumbnail
    pic = read(tmp_path / "preview.tif", 10_000)
    np.testing.assert_array_equal(pic.pixels, px)
    assert probe(tmp_path / "preview.tif").pages == 3


def test_animations_are_refused(tmp_path):
    frames = [Image.fromarray(gradient(16, 16, 3, np.uint8, seed=i)) for i in range(3)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    _fails(tmp_path / "a.png", "animated PNG with 3 frames")
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], lossless=True)
    _fails(tmp_path / "a.webp", "animated WEBP with 3 frames")


def _spoil_crc(data: bytes, ctype: bytes, start: bytes = b"") -> tuple[bytes, int]:
    """The PNG `data` with one bit of the CRC of its first `ctype` chunk whose data starts with `start` flipped (its
    data left as it was), and that chunk's offset."""
    pos = 8
    while True:
        length, name = struct.unpack(">I4s", data[pos : pos + 8])
        if name == ctype and data[pos + 8 :].startswith(start):
            end = pos + 12 + length
            return data[: end - 1] + bytes([data[end - 1] ^ 1]) + data[end:], pos
        pos += 12 + length


def _dropped(ctype: bytes, pos: int, more: str = "") -> str:
    return f"PNG {ctype.decode()} chunk at byte {pos} dropped: CRC mismatch (damaged){more}"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_text_and_time_chunks_with_a_bad_crc_are_dropped_with_a_note(tmp_path, rich_meta, dtype):
    """libpng only warns about an ancillary chunk whose CRC does not hold, and leaves it out: so does the reader, with
    a note naming it; the photo and the other chunks' metadata are read as from the undamaged file."""
    rich_meta.text = {"Comment": "Box 4", "Title": "Picnic"}
    path, damaged = tmp_path / "x.png", tmp_path / "damaged.png"
    write(path, gradient(8, 8, 3, dtype), None, "PNG", rich_meta)
    good = read(path, 100)
    data = path.read_bytes()
    data = data[:33] + png.chunk(b"tIME", bytes([7, 234, 1, 2, 3, 4, 5])) + data[33:]
    data, stamp = _spoil_crc(data, b"tIME")
    data, comment = _spoil_crc(data, b"tEXt", b"Comment\0")
    damaged.write_bytes(data)
    pic = read(damaged, 100)
    assert good.notes == [] and pic.notes == [_dropped(b"tIME", 33), _dropped(b"tEXt", comment)] and stamp == 33
    np.testing.assert_array_equal(pic.pixels, good.pixels)
    del good.meta.text["Comment"]
    assert pic.meta == good.meta and pic.meta.text == {"Title": "Picnic"} and pic.meta.icc and pic.meta.xmp


@pytest.mark.parametrize("ctype, field", [(b"iCCP", "icc"), (b"eXIf", "exif"), (b"iTXt", "xmp"),
                                          (b"gAMA", "png_chunks"), (b"pHYs", "aspect")])
def test_png_metadata_chunk_with_a_bad_crc_is_not_trusted(tmp_path, ctype, field):
    """Its data may read well, but are not what was written: the ICC profile, EXIF, XMP, colour or resolution of an
    ancillary chunk with a bad CRC is left out (here each chunk's data is intact, its CRC alone spoilt)."""
    chunks = [png.iccp_chunk(SRGB_ICC), png.xmp_chunk(XMP), png.chunk(b"gAMA", struct.pack(">I", 45455)),
              png.aspect_chunk((3, 2))]
    if ctype != b"pHYs":  # its resolution would stand in for the aspect ratio
        chunks.append(png.chunk(b"eXIf", rich_exif()))
    path, damaged = tmp_path / "x.png", tmp_path / "damaged.png"
    with open(path, "wb") as f:
        png.write_png(f, gradient(8, 8, 3, np.uint8), None, chunks)
    good = read(path, 100)
    data, at = _spoil_crc(path.read_bytes(), ctype)
    damaged.write_bytes(data)
    pic = read(damaged, 100)
    assert pic.notes == [_dropped(ctype, at)]
    assert getattr(good.meta, field) and not getattr(pic.meta, field)
    for kept in {"icc", "xmp", "png_chunks", "aspect"} - {field}:
        assert getattr(pic.meta, kept) == getattr(good.meta, kept), kept
    np.testing.assert_array_equal(pic.pixels, good.pixels)


def test_png_trns_chunk_with_a_bad_crc_is_dropped_and_the_photo_read_opaque(tmp_path):
    """tRNS is ancillary, though it makes pixels transparent: as libpng does, a tRNS with a bad CRC is left out and
    the photo read without transparency (its colours as stored), which the note says."""
    opaque = _dropped(b"tRNS", 0, "; the photo is read without its transparency").replace(" at byte 0", " at byte {}")
    palette = tmp_path / "palette.png"
    im = Image.fromarray(gradient(8, 8, 3, np.uint8)).convert("P")
    im.save(palette, transparency=im.getpixel((0, 0)))
    gray = gradient(8, 8, 1, np.uint16)
    key = tmp_path / "key16.png"
    with open(key, "wb") as f:  # a 16-bit colour key, which libpng turns into alpha
        png.write_png(f, gray, None, [png.chunk(b"tRNS", struct.pack(">H", int(gray[0, 0, 0])))])
    for path in (palette, key):
        good = read(path, 100)
        data, at = _spoil_crc(path.read_bytes(), b"tRNS")
        (tmp_path / "damaged.png").write_bytes(data)
        pic = read(tmp_path / "damaged.png", 100)
        assert good.alpha is not None and good.alpha.min() == 0 and pic.alpha is None
        assert opaque.format(at) in pic.notes and len(pic.notes) == len(good.notes) + 1
        np.testing.assert_array_equal(pic.pixels, good.pixels)


@pytest.mark.parametrize("ctype, dtype", [(b"IHDR", np.uint8), (b"IHDR", np.uint16), (b"IDAT", np.uint8),
                                          (b"IDAT", np.uint16), (b"PLTE", None), (b"IEND", np.uint8)])
def test_png_critical_chunk_with_a_bad_crc_refuses_the_photo(tmp_path, ctype, dtype):
    """A critical chunk cannot be done without: one with a bad CRC refuses the photo in one line, as libpng would
    (Pillow, which decodes 8-bit PNGs, does not check the pixel data's CRC: the reader does)."""
    path = tmp_path / "x.png"
    if dtype is None:
        Image.fromarray(gradient(8, 8, 3, np.uint8)).convert("P").save(path)
    else:
        write(path, gradient(8, 8, 3, dtype), None, "PNG", None)
    data, at = _spoil_crc(path.read_bytes(), ctype)
    path.write_bytes(data)
    _fails(path, f"cannot read PNG: corrupt {ctype.decode()} chunk at byte {at} (CRC mismatch)")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_suggested_palette_with_a_bad_crc_in_a_truecolour_photo_is_dropped(tmp_path, dtype):
    """PLTE is critical only where the pixels are indices (colour type 3): in an RGB(A) photo it is an optional
    suggested palette (PNG 11.2.3), which libpng treats as ancillary (warns, ignores it). Such a photo is read, the
    palette dropped with a note, not refused."""
    path = tmp_path / "x.png"
    with open(path, "wb") as f:
        png.write_png(f, gradient(8, 8, 3, dtype), None, [png.chunk(b"PLTE", bytes(range(12)))])
    good = read(path, 100)
    data, at = _spoil_crc(path.read_bytes(), b"PLTE")
    (tmp_path / "damaged.png").write_bytes(data)
    pic = read(tmp_path / "damaged.png", 100)
    assert pic.notes == good.notes + [_dropped(b"PLTE", at)]
    np.testing.assert_array_equal(pic.pixels, good.pixels)


def test_png_metadata_alone_does_not_read_the_pixel_data(tmp_path, monkeypatch):
    """read_metadata (a sidecar rewritten beside an unchanged restoration) decodes no pixel: nor does it read the
    pixel data for its CRC (a 1 GB scan on a share would be read whole each such rerun); read() still checks it."""
    path = tmp_path / "x.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", None)
    data, at = _spoil_crc(path.read_bytes(), b"IDAT")
    path.write_bytes(data)
    info, meta = read_metadata(path, 100)
    assert (info.width, info.height) == (8, 8)
    _fails(path, f"corrupt IDAT chunk at byte {at}")


@pytest.mark.parametrize("byte, flip", [(16, 0x40), (24, 0x04), (25, 0x20)])  # width's top byte, depth, colour
def test_png_damaged_header_is_named_as_such_not_as_too_large_or_invalid(tmp_path, byte, flip):
    """A bit flipped in IHDR's data (not its CRC) gives a corrupt IHDR, checked before its fields are believed: not
    a size over --max-pixels (which would ask for a higher limit), nor an invalid depth or colour type."""
    path = tmp_path / "x.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", None)
    data = bytearray(path.read_bytes())
    data[byte] ^= flip
    path.write_bytes(bytes(data))
    _fails(path, "corrupt IHDR chunk at byte 8 (CRC mismatch)")
    with pytest.raises(ImageError, match="corrupt IHDR"):
        probe(path, 10**6)


def test_png_trns_with_a_bad_crc_where_it_means_nothing_does_not_say_transparency_is_lost(tmp_path):
    """A tRNS in an RGBA photo (which its alpha channel makes transparent; PNG 11.3.2.1 forbids tRNS there) or after
    the pixel data (out of place, ignored) is dropped with the plain note: the photo keeps its alpha."""
    path = tmp_path / "x.png"
    alpha = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    with open(path, "wb") as f:
        png.write_png(f, gradient(8, 8, 3, np.uint8), alpha, [png.chunk(b"tRNS", b"\0\0\0\0\0\0")])
    data, at = _spoil_crc(path.read_bytes(), b"tRNS")
    path.write_bytes(data)
    pic = read(path, 100)
    assert pic.notes == [_dropped(b"tRNS", at)]
    np.testing.assert_array_equal(pic.alpha, alpha)


def test_one_bad_file_does_not_affect_the_next(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    write(tmp_path / "good.png", gradient(8, 8, 3, np.uint8), None, "PNG", None)
    _fails(tmp_path / "bad.png", "cannot read PNG")
    assert read(tmp_path / "good.png", 100).pixels.shape == (8, 8, 3)


def test_probe_reads_the_header_only(tmp_path):
    write(tmp_path / "x.png", gradient(64, 80, 3, np.uint16), None, "PNG", None)
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # pixel data cut short
    info = probe(tmp_path / "cut.png")
    assert (info.format, info.width, info.height, info.dtype, info.source_mode) == ("PNG", 80, 64,
                                                                                    np.dtype(np.uint16), "RGB;16")
    _fails(tmp_path / "cut.png", "truncated")


def test_a_fifo_where_a_scan_was_is_refused_without_waiting(tmp_path, deadline):
    """A FIFO (or device) put in place of a scan after the walk: reading it would wait for a writer for good."""
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    with deadline(5, "opening the FIFO waited for a writer"):
        _fails(fifo, "cannot open", "not a regular file")
        with pytest.raises(ImageError, match="not a regular file"):
            read_source_sha256(fifo)


def test_a_scan_under_a_lease_is_read_once_the_lease_is_given_up(tmp_path):
    """A lease (an SMB oplock, an NFS delegation) on a scan: the open without waiting fails with EWOULDBLOCK and asks
    the holder to give it up; a plain open waits for that, and so must the reader instead of failing the scan."""
    path = tmp_path / "scan.png"
    write(path, gradient(16, 24, 3, np.uint8), None, "PNG", None)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError as e:
            pytest.skip(f"no leases here ({e})")
        old = signal.signal(signal.SIGIO, lambda signum, frame: fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK))
        try:
            assert read_source_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            assert read(path, 10 ** 6).pixels.shape == (16, 24, 3)
        finally:
            signal.signal(signal.SIGIO, old)
    finally:
        os.close(fd)


def test_a_source_is_read_in_blocking_mode(tmp_path):
    """Opened without waiting (a FIFO must not hang the run), a regular file is read blocking again: a non-blocking
    read may come back short on network filesystems, which a read loop takes for the end of the file."""
    from oldphoto.io.reader import open_source

    src = tmp_path / "a.png"
    src.write_bytes(b"\x89PNG" + b"x" * 100)
    with open_source(src) as fh:
        assert os.get_blocking(fh.fileno())
