"""Odd but readable inputs found by a fuzzing campaign over archive-like folders: each is read, with a note where
something of the file is left out, never refused for a part oldphoto does not need."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import gradient
from oldphoto.errors import ImageError
from oldphoto.io import probe, read


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_with(path, pixels: np.ndarray, *chunks: bytes, mode: str | None = None) -> None:
    """A PNG written by Pillow, with `chunks` put just after its IHDR."""
    Image.fromarray(pixels, mode).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:33] + b"".join(chunks) + data[33:])


@pytest.mark.parametrize("kind", ["rgb", "palette", "gray_key"])
def test_an_8_bit_png_with_a_text_chunk_over_pillows_limit_is_read(tmp_path, kind):
    # ImageMagick stores profiles as hex in zTXt: a 600 KB XMP packet inflates past Pillow's 1 MB per text chunk,
    # which refused the whole photo ("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK"); read_chunks
    # takes such chunks up to 64 MiB, as a 16-bit PNG was read
    text = b"Comment\0\0" + zlib.compress(b"a long caption " * 100_000)
    path = tmp_path / "big_text.png"
    pixels = gradient(12, 10, 3, np.uint8)
    if kind == "rgb":
        Image.fromarray(pixels).save(path)
    elif kind == "palette":
        Image.fromarray(pixels).quantize(8).save(path, transparency=2)
    else:
        Image.fromarray(pixels[:, :, 0]).save(path, transparency=int(pixels[0, 0, 0]))
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB" if kind == "rgb" else "RGBA"))
    data = path.read_bytes()
    path.write_bytes(data[:33] + _chunk(b"zTXt", text) + data[33:])
    pic = read(path, 10**6)
    assert pic.meta.text["Comment"].startswith("a long caption ") and len(pic.meta.text["Comment"]) == 1_500_000
    if kind == "rgb":
        assert np.array_equal(pic.pixels, expected) and pic.alpha is None
    elif kind == "palette":  # PLTE and its tRNS alpha reach the decoder
        assert np.array_equal(pic.pixels, expected[:, :, :3]) and np.array_equal(pic.alpha, expected[:, :, 3])
    else:  # a gray colour key becomes alpha
        assert np.array_equal(pic.pixels[:, :, 0], pixels[:, :, 0]) and np.array_equal(pic.alpha, expected[:, :, 3])
        assert pic.alpha[0, 0] == 0
    assert probe(path).source_mode in ("RGB", "P", "L")


def test_a_text_chunk_after_the_pixel_data_of_an_8_bit_png_is_read_by_oldphoto_not_pillow(tmp_path):
    path = tmp_path / "late_text.png"
    Image.fromarray(gradient(9, 7, 3, np.uint8)).save(path)
    data = path.read_bytes()
    late = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"x" * 2_000_000))
    path.write_bytes(data[:-12] + late + data[-12:])  # before IEND
    pic = read(path, 10**6)
    assert pic.meta.text["Comment"] == "x" * 2_000_000 and pic.pixels.shape == (9, 7, 3)


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("phys, why", [(b"\1\2\3", "3 bytes, not 9"), (struct.pack(">IIB", 3000, 3000, 9),
                                                                     "unknown unit 9")])
def test_a_damaged_png_phys_is_left_out_with_a_note(tmp_path, depth, phys, why):
    # a pHYs of the wrong length failed an 8-bit PNG (Pillow: "Truncated pHYs chunk") and was dropped without a
    # word from a 16-bit one; one with an unknown unit was dropped without a word from both
    path = tmp_path / "phys.png"
    _png_with(path, gradient(6, 5, 1, np.uint16 if depth == 16 else np.uint8)[:, :, 0], _chunk(b"pHYs", phys))
    pic = read(path, 10**6)
    assert pic.meta.dpi is None and pic.meta.aspect is None
    assert f"PNG pHYs chunk is damaged ({why}) and was not kept" in pic.notes


def _jpeg_with_app2(path, *payloads: bytes) -> None:
    Image.fromarray(gradient(8, 10, 3, np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    segs = b"".join(b"\xff\xe2" + struct.pack(">H", len(p) + 2) + p for p in payloads)
    path.write_bytes(data[:2] + segs + data[2:])


_ICC = b"ICC_PROFILE\0"


@pytest.mark.parametrize("segments, note", [
    # an APP2 segment too short for its number and count: Pillow raised IndexError ("index out of range")
    ([_ICC + b"\x01"], "ICC profile dropped: one of its JPEG APP2 segments is cut short"),
    # an incomplete, repeated or miscounted profile: Pillow dropped it without a word
    ([_ICC + b"\x01\x02" + b"p" * 40], "ICC profile dropped: its JPEG APP2 segments do not make one whole "
                                      "(numbered 1, of 2)"),
    ([_ICC + b"\x01\x01" + b"p" * 40] * 2, "(numbered 1, 1, of 1)"),
    ([_ICC + b"\x01\x00" + b"p" * 40], "(numbered 1, of 0)"),
])
def test_a_jpeg_icc_profile_that_is_not_whole_is_dropped_with_a_note(tmp_path, segments, note):
    path = tmp_path / "icc.jpg"
    _jpeg_with_app2(path, *segments)
    pic = read(path, 10**6)
    assert pic.meta.icc is None and pic.pixels.shape == (8, 10, 3)
    assert [n for n in pic.notes if n.startswith("ICC profile dropped")] == [n for n in pic.notes if note in n]
    assert any(note in n for n in pic.notes)


def test_a_jpeg_icc_profile_in_two_segments_out_of_order_is_put_together(tmp_path):
    path = tmp_path / "icc2.jpg"
    profile = bytes(range(256)) * 3
    _jpeg_with_app2(path, _ICC + b"\x02\x02" + profile[300:], _ICC + b"\x01\x02" + profile[:300])
    pic = read(path, 10**6)
    assert pic.meta.icc == profile and not [n for n in pic.notes if "ICC" in n]


def _refused(path, *words: str) -> str:
    with pytest.raises(ImageError) as info:
        read(path, 10**6)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "not identified by this driver" not in msg
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("name, data, fmt", [("a.jpg", b"\xff\xd8", "JPEG"), ("b.png", b"\x89PN", "PNG"),
                                             ("c.tif", b"MM\0", "TIFF"), ("d.webp", b"RIFF\x10\0\0\0WE", "WebP")])
def test_a_file_cut_inside_its_signature_is_called_cut_short(tmp_path, name, data, fmt):
    # was "not a JPEG, PNG, TIFF or WebP image (file starts with b'\xff\xd8')"
    (tmp_path / name).write_bytes(data)
    _refused(tmp_path / name, f"cut short: the file has only {len(data)} byte(s), the start of a {fmt} header")


def test_headers_pillow_cannot_identify_are_explained(tmp_path):
    # Pillow's "not identified by this driver": a JPEG cut before its frame header, or with a height of 0 ...
    Image.fromarray(gradient(8, 10, 3, np.uint8)).save(tmp_path / "x.jpg")
    data = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:20])
    _refused(tmp_path / "cut.jpg", "cannot read JPEG: no valid frame header (SOF)", "damaged or cut short")
    sof = data.index(b"\xff\xc0")
    (tmp_path / "zero.jpg").write_bytes(data[: sof + 5] + b"\0\0" + data[sof + 7 :])
    _refused(tmp_path / "zero.jpg", "no valid frame header (SOF) giving the image's size and layout")
    # ... and a PNG bit depth its colour type cannot have
    Image.fromarray(gradient(8, 10, 3, np.uint8)).save(tmp_path / "x.png")
    data = bytearray((tmp_path / "x.png").read_bytes())
    data[24] = 7
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "seven.png").write_bytes(bytes(data))
    _refused(tmp_path / "seven.png", "cannot read PNG: invalid header: bit depth 7 with colour type 2")


def test_a_tiff_of_width_0_is_refused_from_its_header(tmp_path):
    # found by the pipeline after reading before ("empty image of shape (6, 0, 3)"), so --dry-run called it new
    path = tmp_path / "empty.tif"
    tifffile.imwrite(path, gradient(6, 5, 3, np.uint8), photometric="rgb")
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        if struct.unpack("<H", data[at : at + 2])[0] == 256:
            typ = struct.unpack("<H", data[at + 2 : at + 4])[0]
            data[at + 8 : at + 12] = b"\0\0\0\0" if typ == 4 else b"\0\0" + bytes(data[at + 10 : at + 12])
    path.write_bytes(bytes(data))
    _refused(path, "header gives an empty image (0 x 6)")
    with pytest.raises(ImageError, match=r"empty image \(0 x 6\)"):
        probe(path)


@pytest.mark.parametrize("depth", [2, 4])
def test_a_2_or_4_bit_gray_png_says_it_became_8_bit(tmp_path, depth):
    # 1-bit PNGs and 2/4-bit TIFFs had their note, 2/4-bit PNGs none: the bit depth changed without a word
    levels = (1 << depth) - 1
    values = (np.arange(6 * 8).reshape(6, 8) % (levels + 1)).astype(np.uint8)
    rows = [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 8 - depth :].ravel()) for r in values]
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    path = tmp_path / f"gray{depth}.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 6, depth, 0, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    pic = read(path, 10**6)
    assert np.array_equal(pic.pixels[:, :, 0], values * (255 // levels))
    assert f"{depth}-bit gray converted to 8-bit" in pic.notes


def test_an_8_bit_png_with_a_chunk_between_idat_chunks_is_read_from_the_first_run_as_pillow_read_it(tmp_path):
    # a stray chunk after the pixel data, then an empty IDAT: Pillow, shown the whole file, decoded the first run of
    # IDAT chunks and read the photo; PixelChunks refused it ("IDAT chunks are not consecutive")
    pixels = gradient(12, 10, 3, np.uint8)
    path = tmp_path / "gap.png"
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    end = data.index(b"IEND") - 4
    path.write_bytes(data[:end] + _chunk(b"tEXt", b"Note\0late") + _chunk(b"IDAT", b"") + data[end:])
    pic = read(path, 10**6)
    assert np.array_equal(pic.pixels, pixels) and pic.meta.text == {"Note": "late"}


def _with_tags(path, **tags: int) -> None:
    """The TIFF at `path` (little-endian, as tifffile writes it) with the SHORT or LONG tags named by number
    (`t256=0`) set to these values in every image directory, in place."""
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    while ifd:
        n = struct.unpack("<H", data[ifd: ifd + 2])[0]
        for k in range(n):
            at = ifd + 2 + 12 * k
            tag, typ = struct.unpack("<HH", data[at: at + 4])
            if f"t{tag}" in tags:
                data[at + 8: at + 12] = struct.pack("<I" if typ == 4 else "<HH", tags[f"t{tag}"], *([] if typ == 4
                                                                                                   else [0]))
        ifd = struct.unpack("<I", data[ifd + 2 + 12 * n: ifd + 6 + 12 * n])[0]
    path.write_bytes(bytes(data))


def test_tiff_fields_a_decoder_divides_by_or_looks_up_are_a_damaged_file_not_a_traceback(tmp_path):
    # found fuzzing curated masks (--masks), which are read as scans are: ZeroDivisionError and TypeError escaped
    two = tmp_path / "two_pages_of_width_0.tif"  # the largest, read, has no pixels: the other is not divided by it
    with tifffile.TiffWriter(two) as t:
        t.write(gradient(6, 5, 1, np.uint8)[:, :, 0])
        t.write(gradient(3, 2, 1, np.uint8)[:, :, 0])
    _with_tags(two, t256=0, t257=0)
    _refused(two, "header gives an empty image (0 x 0)")
    tiled = tmp_path / "tile_width_0.tif"
    tifffile.imwrite(tiled, gradient(32, 32, 1, np.uint8)[:, :, 0], tile=(16, 16))
    _with_tags(tiled, t322=0)
    _refused(tiled, "cannot read TIFF: damaged image directory")
    palette = tmp_path / "palette_without_colormap.tif"  # photometric 3, no ColorMap tag
    tifffile.imwrite(palette, gradient(6, 5, 1, np.uint8)[:, :, 0])
    _with_tags(palette, t262=3)
    _refused(palette, "damaged image directory (a palette image without its ColorMap)")
