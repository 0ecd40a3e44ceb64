"""Low-level containers: raw TIFF directories, PNG chunks and filters, IPTC wrappers."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import piexif
import pytest

import oldphoto
from io_samples import EXIF_SUB, GPS_SUB, IPTC, ascii_, gradient, rich_exif, short, tiff_structure
from oldphoto.errors import ImageError
from oldphoto.io import iptc, png, probe, read
from oldphoto.io import tiff_ifd as T


@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_parse_and_rebuild_keep_every_entry_byte_for_byte(order):
    blob = rich_exif(order)
    ifd0, got_order, has_thumb = T.parse_exif(blob)
    assert got_order == order and not has_thumb
    exif = ifd0.children[T.EXIF_IFD]
    assert {e[0] for e in EXIF_SUB} == set(exif.entries)
    assert {e[0] for e in GPS_SUB} == set(ifd0.children[T.GPS_IFD].entries)
    assert exif.entries[36867].text() == "1952:07:14 15:30:00"
    assert exif.entries[33434].rationals() == ((1, 125),)
    assert exif.entries[40962].ints() == (999,)
    for out_order in ("<", ">"):
        rebuilt = T.build_exif(ifd0, out_order)
        again, o, _ = T.parse_exif(b"Exif\0\0" + rebuilt)
        assert o == out_order
        assert again.entries == ifd0.entries
        assert again.children[T.EXIF_IFD].entries == exif.entries
        d = piexif.load(b"Exif\0\0" + rebuilt)  # independent reader agrees
        assert d["Exif"][36867] == b"1952:07:14 15:30:00" and d["0th"][271] == b"Epson"


def test_bigtiff_directory_roundtrip():
    ifd = T.Ifd({270: T.ascii_entry(270, "a longer description than eight bytes"), 274: T.short_entry(274, 3)},
                {T.EXIF_IFD: T.Ifd({36867: T.ascii_entry(36867, "1952:07:14 15:30:00")})})
    blob = T.serialize(ifd, "<", True, 16)
    back, nxt = T.read_ifd(T.bytes_reader(b"\0" * 16 + blob), 16, "<", True)
    assert nxt == 0 and back.entries == ifd.entries
    assert back.children[T.EXIF_IFD].entries == ifd.children[T.EXIF_IFD].entries


def test_garbage_is_rejected():
    with pytest.raises(T.IfdError, match="TIFF header"):
        T.parse_exif(b"JUNKJUNKJUNK")
    with pytest.raises(T.IfdError, match="outside"):
        T.parse_exif(b"II*\0" + struct.pack("<I", 5000))
    with pytest.raises(T.IfdError, match="ends inside its TIFF header"):
        T.parse_exif(b"Exif\0\0MM\0*xx")
    looping = bytearray(tiff_structure("<", [ascii_(271, "x")], [short(1, 1)]))
    pos = looping.index(struct.pack("<HHI", 34665, 4, 1))
    looping[pos + 8 : pos + 12] = struct.pack("<I", 8)  # Exif pointer back to IFD0: a cycle
    with pytest.raises(T.IfdError, match="nested too deep"):
        T.parse_exif(bytes(looping))


def test_entry_values():
    assert T.int_entry(1, 70000).type == T.LONG and T.int_entry(1, 7).type == T.SHORT
    assert T.rational_entry(282, 300, 1).rationals() == ((300, 1),)
    e = T.ascii_entry(270, "caf\udce9")  # undecodable bytes survive through surrogateescape
    assert e.data == b"caf\xe9\0" and e.text() == "caf\udce9"
    assert T.swap_order(T.SHORT, b"\x01\x02\x03\x04") == b"\x02\x01\x04\x03"
    assert T.swap_order(T.RATIONAL, struct.pack("<II", 1, 2)) == struct.pack(">II", 1, 2)
    assert T.swap_order(T.UNDEFINED, b"\x01\x02") == b"\x01\x02"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_encoder_all_filters_decode_in_libpng(dtype, channels):
    # a mix of flat, noisy and gradient rows makes the row filter choice vary
    px = gradient(40, 23, 3, dtype)
    px[5:10] = 0
    px[20:25] = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (5, 23, 3))
    colour = px[:, :, :1] if channels in (1, 2) else px
    alpha = px[:, :, 2] if channels in (2, 4) else None
    buf = io.BytesIO()
    png.write_png(buf, colour, alpha, [])
    data = buf.getvalue()
    decoded = imagecodecs.png_decode(data).reshape(40, 23, channels)
    np.testing.assert_array_equal(decoded[:, :, : colour.shape[2]], colour)
    if alpha is not None:
        np.testing.assert_array_equal(decoded[:, :, -1], alpha)
    raw = imagecodecs.zlib_decode(b"".join(_chunks(data, b"IDAT")))
    row = 1 + 23 * channels * np.dtype(dtype).itemsize
    filters = {raw[i * row] for i in range(40)}
    assert len(filters) >= 2  # adaptive, not a single fixed filter


def _chunks(data: bytes, ctype: bytes):
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == ctype:
            yield data[pos + 8 : pos + 8 + n]
        pos += 12 + n


def test_png_chunk_reader_collects_metadata():
    buf = io.BytesIO()
    chunks = [png.iccp_chunk(b"icc-bytes" * 50), png.phys_chunk((300.0, 150.0)), png.chunk(b"eXIf", b"II*\0x"),
              png.xmp_chunk(b"<x/>"), png.text_chunk("Title", "Été"), png.text_chunk("Comment", "日本"),
              png.chunk(b"gAMA", struct.pack(">I", 45455))]
    png.write_png(buf, np.zeros((3, 4, 3), np.uint8), None, chunks)
    buf.seek(0)
    info = png.read_chunks(buf)
    assert info.icc == b"icc-bytes" * 50 and info.exif == b"II*\0x" and info.xmp == b"<x/>"
    assert info.text == {"Title": "Été", "Comment": "日本"}
    assert png.dpi_from_phys(info.phys) == (300.0, 150.0)
    assert info.color == {"gAMA": struct.pack(">I", 45455)}
    assert (info.header.width, info.header.height, info.header.bit_depth) == (4, 3, 8)


def test_iptc_wrappers_roundtrip():
    text = iptc.png_text(IPTC)
    assert text.startswith("\niptc\n") and iptc.iptc_from_profile(iptc.raw_profile(text)) == IPTC
    segment = iptc.jpeg_app13_iptc(IPTC)
    assert segment[:2] == b"\xff\xed" and struct.unpack(">H", segment[2:4])[0] == len(segment) - 2
    payload = segment[4:]
    assert payload.startswith(b"Photoshop 3.0\0")
    assert iptc.photoshop_resources(payload[14:]) == {iptc.IPTC_RESOURCE: IPTC}
    big = iptc.jpeg_app13_iptc(b"\x1c" * 70000)  # goes on in a second segment, as Photoshop splits a block
    first = struct.unpack(">H", big[2:4])[0] + 2
    assert first == 2 + 65535 and big[first : first + 2] == b"\xff\xed"
    assert big[first + 4 :].startswith(b"Photoshop 3.0\0")
    with pytest.raises(ValueError, match="larger than 16 JPEG APP13 segments"):
        iptc.jpeg_app13(b"\0" * (16 * 65519 + 1))
    with pytest.raises(ValueError, match="says 9 bytes"):
        iptc.iptc_from_profile(iptc.raw_profile("\niptc\n       9\n1c02\n"))


def _split_idat(data: bytes, size: int) -> bytes:
    """The PNG `data` with its pixel data cut into IDAT chunks of `size` bytes."""
    first = data.index(b"IDAT") - 4
    z = b"".join(_chunks(data, b"IDAT"))
    idats = b"".join(png.chunk(b"IDAT", z[i : i + size]) for i in range(0, len(z), size))
    return data[:first] + idats + png.chunk(b"IEND", b"")


def test_16_bit_png_decodes_without_libpng_printing(tmp_path, capfd, caplog):
    # libpng complained about chunks oldphoto reads itself (here a garbage ICC profile, an sBIT beyond the bit
    # depth, a text chunk without keyword); imagecodecs logs that, and Python's last-resort handler printed it
    # on stderr, which --quiet cannot silence (pytest's log capture stands in for that handler here)
    px = gradient(9, 7, 3, np.uint16, seed=3)
    px[0, 0] = (1, 2, 3)
    chunks = [png.chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(b"not a profile" * 3)),
              png.chunk(b"sBIT", bytes([17, 17, 17])), png.chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3)),
              png.chunk(b"tEXt", b"\0no keyword")]
    buf = io.BytesIO()
    png.write_png(buf, px, None, chunks)
    data = _split_idat(buf.getvalue(), 100)
    (tmp_path / "p.png").write_bytes(data)
    before = imagecodecs.png_decode(data)  # libpng given the whole file, as before
    assert any("iCCP" in r.getMessage() for r in caplog.records)
    caplog.clear()
    pic = read(tmp_path / "p.png", 100)
    assert capfd.readouterr() == ("", "") and caplog.records == []
    assert pic.notes == ["PNG chunk(s) sBIT not carried"]  # oldphoto's own note, not libpng's
    np.testing.assert_array_equal(pic.pixels, before[:, :, :3])
    np.testing.assert_array_equal(pic.alpha, before[:, :, 3])  # the tRNS colour key still makes alpha
    assert pic.alpha[0, 0] == 0 and pic.alpha[1:].min() == 65535
    assert pic.meta.icc == b"not a profile" * 3  # oldphoto's own reading of the chunks is unchanged
    info = png.read_chunks(io.BytesIO(data))
    assert len(info.idat) == 1 and info.idat[0][1] == sum(12 + len(c) for c in _chunks(data, b"IDAT"))
    cut = data.index(b"IDAT", data.index(b"IDAT") + 4) - 4  # a chunk between two IDATs: invalid, as libpng says
    (tmp_path / "gap.png").write_bytes(data[:cut] + png.text_chunk("Title", "x") + data[cut:])
    with pytest.raises(ImageError, match=r"gap.png: cannot read PNG: IDAT chunks are not consecutive"):
        read(tmp_path / "gap.png", 100)


def _with_junk_after_pixels(data: bytes) -> bytes:
    """The PNG `data` with bytes after the end of its compressed pixel data (libpng warns, decodes all rows)."""
    first = data.index(b"IDAT") - 4
    z = b"".join(_chunks(data, b"IDAT"))
    return data[:first] + png.chunk(b"IDAT", z + b"junk") + png.chunk(b"IEND", b"")


def test_libpng_warnings_on_pixel_data_become_notes(tmp_path, caplog):
    px = gradient(4, 5, 1, np.uint16)
    buf = io.BytesIO()
    png.write_png(buf, px, None, [])
    (tmp_path / "j.png").write_bytes(_with_junk_after_pixels(buf.getvalue()))
    pic = read(tmp_path / "j.png", 100)
    np.testing.assert_array_equal(pic.pixels, px)
    assert "imagecodecs: PNG warning: IDAT: Extra compressed data" in pic.notes and caplog.records == []


def test_16_bit_png_read_prints_nothing_in_a_fresh_interpreter(tmp_path):
    # without pytest's log capture, Python's last-resort handler wrote imagecodecs' warnings to stderr
    buf = io.BytesIO()
    png.write_png(buf, gradient(4, 5, 1, np.uint16), None, [png.chunk(b"iCCP", b"x\0\0" + zlib.compress(b"bad"))])
    path = tmp_path / "p.png"
    path.write_bytes(_with_junk_after_pixels(buf.getvalue()))
    code = f"from oldphoto.io import read; print(read({str(path)!r}, 100).notes)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(oldphoto.__file__).parents[1], capture_output=True,
                          text=True, timeout=60, check=True)
    assert "Extra compressed data" in done.stdout and done.stderr == ""


def test_16_bit_png_trns_after_the_pixel_data_is_ignored(tmp_path):
    # out of place (libpng never sees it): it was counted as alpha, and the decoder refused the buffer shape
    px = gradient(4, 5, 3, np.uint16)
    buf = io.BytesIO()
    png.write_png(buf, px, None, [])
    data = buf.getvalue()
    (tmp_path / "late.png").write_bytes(data[:-12] + png.chunk(b"tRNS", struct.pack(">HHH", 0, 1, 2)) + data[-12:])
    pic = read(tmp_path / "late.png", 100)
    assert pic.alpha is None and not probe(tmp_path / "late.png").alpha
    np.testing.assert_array_equal(pic.pixels, px)


@pytest.mark.parametrize("keep", [0, 20, -12])
def test_16_bit_png_cut_short_after_its_chunks_were_read_says_so(tmp_path, keep):
    """The scan is cut short (rewritten by another program) between reading its chunks and decoding its pixels: said
    as such, not as whatever the read of the short file meets (once a map's "cannot mmap an empty file")."""
    from oldphoto.io import raster_read

    buf = io.BytesIO()
    png.write_png(buf, gradient(8, 9, 3, np.uint16), None, [])
    path = tmp_path / "p.png"
    path.write_bytes(buf.getvalue())
    with open(path, "rb") as fh:
        plan = raster_read.plan(fh, "PNG", lambda w, h: None)
        path.write_bytes(buf.getvalue()[:keep % len(buf.getvalue())])
        with pytest.raises(ValueError, match=r"^truncated: the file has \d+ bytes, its chunks end at byte \d+ "
                                             r"\(changed while it was read\)$"):
            plan.decode(None)
