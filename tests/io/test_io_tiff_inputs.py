"""TIFF layouts archives produce: compressions, bit depths, photometric interpretations, planar/tiled, BigTIFF."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import oldphoto
from io_samples import ascii_, gradient, long_, rational, short, tiff_structure
from oldphoto.io import probe, read, write
from oldphoto.io import tiff_ifd as T

RGB16 = gradient(20, 30, 3, np.uint16, seed=4)
GRAY8 = gradient(20, 30, 1, np.uint8, seed=5)[:, :, 0]


def _read(path, **kw):
    return read(path, max_pixels=10_000, **kw)


@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "adobe_deflate", "packbits", "zstd"])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_lossless_compressions_are_exact(tmp_path, compression, bigtiff):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, RGB16, photometric="rgb", compression=compression, bigtiff=bigtiff, rowsperstrip=7)
    pic = _read(path)
    assert pic.source_mode == "RGB;16" and pic.pixels.dtype == np.uint16
    np.testing.assert_array_equal(pic.pixels, RGB16)


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_planar_and_tiled_layouts(tmp_path, byteorder):
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(RGB16, 2, 0), photometric="rgb", planarconfig="separate",
                     byteorder=byteorder)
    np.testing.assert_array_equal(_read(tmp_path / "p.tif").pixels, RGB16)
    tifffile.imwrite(tmp_path / "t.tif", RGB16, photometric="rgb", tile=(16, 16), compression="zlib",
                     byteorder=byteorder)
    np.testing.assert_array_equal(_read(tmp_path / "t.tif").pixels, RGB16)
    tifffile.imwrite(tmp_path / "u.tif", RGB16, photometric="rgb", byteorder=byteorder)
    pic = _read(tmp_path / "u.tif")  # uncompressed: mapped when the byte order is native
    assert pic.pixels.dtype == np.uint16  # native uint16 either way
    np.testing.assert_array_equal(pic.pixels, RGB16)


def test_jpeg_compressed_tiff(tmp_path):
    rgb8 = (RGB16 // 257).astype(np.uint8)
    tifffile.imwrite(tmp_path / "j.tif", rgb8, photometric="rgb", compression="jpeg")  # stored as YCbCr JPEG
    pic = _read(tmp_path / "j.tif")
    assert pic.source_mode == "YCbCr" and pic.pixels.shape == (20, 30, 3)
    assert np.abs(pic.pixels.astype(int) - rgb8.astype(int)).mean() < 4


def test_gray_variants(tmp_path):
    tifffile.imwrite(tmp_path / "g.tif", GRAY8, photometric="minisblack")
    np.testing.assert_array_equal(_read(tmp_path / "g.tif").pixels[:, :, 0], GRAY8)
    tifffile.imwrite(tmp_path / "w.tif", GRAY8, photometric="miniswhite")
    pic = _read(tmp_path / "w.tif")
    np.testing.assert_array_equal(pic.pixels[:, :, 0], 255 - GRAY8)
    assert any("MinIsWhite" in n for n in pic.notes)
    bits = GRAY8 > 128
    tifffile.imwrite(tmp_path / "b.tif", bits, photometric="miniswhite")
    pic = _read(tmp_path / "b.tif")
    assert pic.source_mode == "1" and pic.pixels.dtype == np.uint8
    np.testing.assert_array_equal(pic.pixels[:, :, 0], np.where(bits, 0, 255))  # MinIsWhite: 1 = black
    tifffile.imwrite(tmp_path / "4.tif", GRAY8 // 16, photometric="minisblack", bitspersample=4)
    np.testing.assert_array_equal(_read(tmp_path / "4.tif").pixels[:, :, 0], (GRAY8 // 16) * 17)
    g16 = RGB16[:, :, 0]
    tifffile.imwrite(tmp_path / "16.tif", np.stack([g16, RGB16[:, :, 1]], axis=2), photometric="minisblack",
                     extrasamples=["unassalpha"], planarconfig="contig")
    pic = _read(tmp_path / "16.tif")
    assert pic.source_mode == "LA;16"
    np.testing.assert_array_equal(pic.pixels[:, :, 0], g16)
    np.testing.assert_array_equal(pic.alpha, RGB16[:, :, 1])


def test_palette_tiff(tmp_path):
    idx = (GRAY8 % 8).astype(np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :8] = np.array([[i * 30, 255 - i * 30, i * 10] for i in range(8)]).T * 257
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    pic = _read(tmp_path / "p.tif")
    assert pic.source_mode == "P" and pic.pixels.dtype == np.uint8 and "palette converted to RGB" in pic.notes
    np.testing.assert_array_equal(pic.pixels[:, :, 1], 255 - idx.astype(int) * 30)
    cmap[0, 1] = 1000  # not a multiple of 257: a genuinely 16-bit palette
    tifffile.imwrite(tmp_path / "p16.tif", idx, photometric="palette", colormap=cmap)
    pic = _read(tmp_path / "p16.tif")
    assert pic.pixels.dtype == np.uint16 and pic.pixels[idx == 1][0, 0] == 1000


def test_palette_tiff_written_by_pillow_is_8_bit(tmp_path):
    # Pillow stores colormap values as v * 256 (white is 65280), libtiff and tifffile as v * 257
    idx = (GRAY8 % 3).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 255, 255, 10, 20, 30, 0, 128, 1])
    im.save(tmp_path / "p.tif")
    pic = _read(tmp_path / "p.tif")
    assert pic.source_mode == "P" and pic.pixels.dtype == np.uint8
    want = np.array([[255, 255, 255], [10, 20, 30], [0, 128, 1]], np.uint8)[idx]
    np.testing.assert_array_equal(pic.pixels, want)


def test_cmyk_tiff_and_jpeg(tmp_path):
    cmyk = np.random.default_rng(0).integers(0, 256, (20, 30, 4)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", cmyk, photometric="separated")
    pic = _read(tmp_path / "c.tif")
    assert pic.source_mode == "CMYK" and pic.pixels.shape == (20, 30, 3)
    f = cmyk.astype(float) / 255
    want = np.rint((1 - f[:, :, :3]) * (1 - f[:, :, 3:]) * 255)
    np.testing.assert_array_equal(pic.pixels, want.astype(np.uint8))
    assert any("CMYK converted to RGB" in n for n in pic.notes)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=100)
    pic = _read(tmp_path / "c.jpg")
    assert pic.source_mode == "CMYK" and pic.pixels.shape == (20, 30, 3)
    decoded = np.asarray(Image.open(tmp_path / "c.jpg")).astype(float) / 255
    want = np.rint((1 - decoded[:, :, :3]) * (1 - decoded[:, :, 3:]) * 255)
    np.testing.assert_array_equal(pic.pixels, want.astype(np.uint8))
    cmyk16 = (cmyk.astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "c16.tif", cmyk16, photometric="separated")
    pic = _read(tmp_path / "c16.tif")
    assert pic.pixels.dtype == np.uint16 and pic.source_mode == "CMYK;16"
    f16 = cmyk16.astype(np.float64) / 65535
    want16 = np.rint((1 - f16[:, :, :3]) * (1 - f16[:, :, 3:]) * 65535).astype(np.uint16)
    assert np.abs(pic.pixels.astype(int) - want16).max() <= 1  # float32 arithmetic in the reader


def test_associated_alpha_is_unpremultiplied(tmp_path):
    straight = np.full((4, 4, 3), 200, np.uint8)
    alpha = np.array([0, 64, 128, 255], np.uint8)[None, :].repeat(4, 0)
    premult = np.rint(straight * (alpha[:, :, None] / 255.0)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", np.concatenate([premult, alpha[:, :, None]], 2), photometric="rgb",
                     extrasamples=["assocalpha"])
    pic = _read(tmp_path / "a.tif")
    np.testing.assert_array_equal(pic.alpha, alpha)
    assert np.abs(pic.pixels[:, 1:].astype(int) - 200).max() <= 2  # straight colour back (rounding aside)
    assert (pic.pixels[:, 0] == 0).all()  # fully transparent: no colour to recover


def test_associated_alpha_of_gray_is_unpremultiplied(tmp_path):
    alpha = np.array([0, 64, 128, 255], np.uint8)[None, :].repeat(4, 0)
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        a = alpha.astype(dtype) * (top // 255)
        premult = np.rint(0.8 * a).astype(dtype)  # straight gray 0.8 of full scale
        tifffile.imwrite(tmp_path / "ga.tif", np.stack([premult, a], 2), photometric="minisblack",
                         extrasamples=["assocalpha"])
        pic = _read(tmp_path / "ga.tif")
        np.testing.assert_array_equal(pic.alpha, a)
        assert np.abs(pic.pixels[:, 1:, 0].astype(int) - round(0.8 * top)).max() <= top // 100
        assert "associated (premultiplied) alpha converted to straight alpha" in pic.notes


def test_probe_reports_upright_size_and_layout(tmp_path):
    tifffile.imwrite(tmp_path / "o.tif", RGB16, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    info = probe(tmp_path / "o.tif")
    assert (info.format, info.width, info.height, info.orientation) == ("TIFF", 20, 30, 6)
    assert (info.channels, info.dtype, info.pages, info.source_mode) == (3, np.dtype(np.uint16), 1, "RGB;16")
    pic = _read(tmp_path / "o.tif")
    np.testing.assert_array_equal(pic.pixels, np.rot90(RGB16, -1))


def _bad_unit_tiff(path: Path) -> None:
    """8-bit gray TIFF whose ResolutionUnit (110) tifffile logs as invalid."""
    tags = [long_(256, 4), long_(257, 2), short(258, 8), short(259, 1), short(262, 1), short(277, 1),
            long_(278, 2), rational(282, (300, 1)), rational(283, (300, 1)), short(296, 110)]
    path.write_bytes(tiff_structure("<", tags, strip=bytes(range(8))))


def test_tifffile_log_records_become_notes(tmp_path, caplog):
    _bad_unit_tiff(tmp_path / "u.tif")
    with caplog.at_level(logging.DEBUG):
        pic = _read(tmp_path / "u.tif")
        probe(tmp_path / "u.tif")
    assert [r for r in caplog.records if r.name == "tifffile"] == []
    assert any(n.startswith("tifffile: ") and "RESUNIT" in n for n in pic.notes), pic.notes
    with caplog.at_level(logging.DEBUG), tifffile.TiffFile(tmp_path / "u.tif") as t:
        assert t.pages[0].imagewidth == 4  # tifffile used directly still logs as before
    assert any(r.name == "tifffile" for r in caplog.records)


def test_tifffile_never_prints_during_a_read(tmp_path):
    # a fresh interpreter, where Python's last-resort handler would print tifffile's warnings to stderr
    path = str(tmp_path / "u.tif")
    _bad_unit_tiff(Path(path))
    code = f"from oldphoto.io import probe, read; probe({path!r}); read({path!r}, 100)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(oldphoto.__file__).parents[1], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout == "" and done.stderr == ""


MASK = np.zeros((20, 30), bool)
MASK[3:15, 5:25] = True


def _with_mask(path: Path, px: np.ndarray, mask: np.ndarray, **kw) -> None:
    """A main page, then a transparency mask page (NewSubfileType 4, Photometric 4, 1-bit, PackBits)."""
    with tifffile.TiffWriter(path) as t:
        t.write(px, photometric="rgb" if px.ndim == 3 else "minisblack", **kw)
        t.write(mask, photometric=4, subfiletype=4, compression="packbits")


@pytest.mark.parametrize("px, compression", [(RGB16, "zlib"), (GRAY8, None)])
def test_transparency_mask_page_becomes_alpha(tmp_path, px, compression):
    # refused as a multi-page TIFF before; a compressed page is decoded, an uncompressed one mapped
    _with_mask(tmp_path / "m.tif", px, MASK, compression=compression)
    pic = _read(tmp_path / "m.tif")
    np.testing.assert_array_equal(pic.pixels.reshape(px.shape), px)
    top = np.iinfo(px.dtype).max
    assert pic.alpha.dtype == px.dtype
    np.testing.assert_array_equal(pic.alpha, np.where(MASK, top, 0))  # 1 = inside the region: opaque
    assert pic.notes == ["page 2 (transparency mask) carried as alpha"]
    info = probe(tmp_path / "m.tif")
    assert info.alpha and info.pages == 2
    for fmt, ext in (("PNG", "png"), ("TIFF", "tif"), ("WEBP", "webp")):  # outputs keep the transparency
        write(tmp_path / f"o.{ext}", pic.pixels, pic.alpha, fmt, pic.meta)
        np.testing.assert_array_equal(_read(tmp_path / f"o.{ext}").alpha, to8(pic.alpha) if fmt == "WEBP"
                                      else pic.alpha)
    assert "alpha dropped: JPEG has no transparency" in write(tmp_path / "o.jpg", pic.pixels, pic.alpha, "JPEG",
                                                              pic.meta)


def to8(a: np.ndarray) -> np.ndarray:
    return (a // 257).astype(np.uint8) if a.dtype == np.uint16 else a


def test_transparency_mask_turns_with_the_image_and_previews_stay_ignored(tmp_path):
    with tifffile.TiffWriter(tmp_path / "o.tif") as t:
        t.write(RGB16, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
        t.write(MASK, photometric=4, subfiletype=4)
        t.write(RGB16[::4, ::4], photometric="rgb", subfiletype=1)
    pic = _read(tmp_path / "o.tif")
    np.testing.assert_array_equal(pic.alpha, np.rot90(np.where(MASK, 65535, 0), -1))
    assert pic.notes[:2] == ["read page 1; 1 other page(s) are previews",
                             "page 2 (transparency mask) carried as alpha"]
    assert probe(tmp_path / "o.tif").pages == 3


def test_transparency_mask_that_does_not_fit_is_noted(tmp_path):
    _with_mask(tmp_path / "small.tif", RGB16, MASK[:10, :15])  # another size: not this image's mask
    pic = _read(tmp_path / "small.tif")
    assert pic.alpha is None and not probe(tmp_path / "small.tif").alpha
    assert "page 2 (transparency mask) not carried: it is 15 x 10 pixels, the image 30 x 20" in pic.notes
    own = np.concatenate([RGB16, RGB16[:, :, :1]], axis=2)
    _with_mask(tmp_path / "own.tif", own, MASK, extrasamples=["unassalpha"])
    pic = _read(tmp_path / "own.tif")
    np.testing.assert_array_equal(pic.alpha, RGB16[:, :, 0])  # the image's own alpha wins
    assert "page 2 (transparency mask) not carried: the image has an alpha channel of its own" in pic.notes
    _with_mask(tmp_path / "gray.tif", RGB16, MASK)
    with tifffile.TiffFile(tmp_path / "gray.tif") as t:
        at = t.pages[1].tags[262].valueoffset
    with open(tmp_path / "gray.tif", "r+b") as f:  # flagged as a mask, but 1-bit gray (tifffile cannot write it)
        f.seek(at)
        f.write(b"\1\0")
    pic = _read(tmp_path / "gray.tif")
    assert pic.alpha is None and not probe(tmp_path / "gray.tif").alpha
    assert ("page 2 (transparency mask) not carried: photometric 1, 1 sample(s) of 1 bit(s) is not a 1-bit mask"
            in pic.notes)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
def test_windows_tags_are_carried_and_unknown_tags_noted(tmp_path, fmt):
    # Windows Explorer writes title and rating into IFD0 (UCS-2 bytes); Photoshop layers (37724), Epson's PrintIM
    # (50341) and a scanner's private tag are not carried, and the note says so; storage details (FillOrder) are not
    # worth a note
    title = "Grand-mère".encode("utf-16-le") + b"\0\0"
    px = gradient(2, 4, 3, np.uint8)
    tags = [long_(256, 4), long_(257, 2), short(258, 8, 8, 8), short(259, 1), short(262, 2), short(277, 3),
            long_(278, 2), short(266, 1), (40091, 1, len(title), title), short(18246, 4),
            (37724, 7, 8, b"Adobe Ph"), (50341, 7, 8, b"PrintIM\0"), ascii_(65000, "FlexColor 4.8")]
    src = tmp_path / "scan.tif"
    src.write_bytes(tiff_structure("<", tags, strip=px.tobytes()))
    pic = read(src, 10_000)
    (note,) = [n for n in pic.notes if n.startswith("TIFF tag(s)")]
    assert "37724 (ImageSourceData)" in note and "50341 (PrintImageMatching)" in note and "65000" in note
    assert "266" not in note
    out = tmp_path / f"out.{fmt.lower()}"
    write(out, pic.pixels, None, fmt, pic.meta)
    ifd0, _, _ = T.parse_exif(read(out, 10_000).meta.exif)
    assert ifd0.entries[40091].data == title and ifd0.entries[40091].type == 1
    assert ifd0.entries[18246].ints() == (4,)
    assert 37724 not in ifd0.entries and 65000 not in ifd0.entries


@pytest.mark.parametrize("pointer", [(34665, 4, 0, b""), long_(34665, 8, 8), long_(34853, 8, 8)],
                         ids=["exif-count-0", "exif-count-2", "gps-count-2"])
def test_a_pointer_tag_without_one_offset_drops_only_its_directory(tmp_path, pointer):
    """An Exif or GPS pointer in a TIFF's IFD0 holding no offset (count 0) refused the whole scan ("cannot read TIFF:
    tuple index out of range"); one holding several read its first. Its directory is unreadable: dropped alone, with
    a note, as a pointer of the wrong type is; the pixels and other tags are read."""
    layout = [short(256, 3), short(257, 2), short(258, 8, 8, 8), short(259, 1), short(262, 2), short(277, 3),
              short(278, 2)]
    path = tmp_path / "scan.tif"
    path.write_bytes(tiff_structure("<", layout + [pointer, ascii_(271, "Epson")], strip=bytes(range(18))))
    pic = read(path, 10_000)
    np.testing.assert_array_equal(pic.pixels.reshape(-1), np.arange(18))
    name = "EXIF" if pointer[0] == 34665 else "GPS"
    assert [n for n in pic.notes if not n.startswith("tifffile:")] == [
        f"{name} directory is unreadable and was not kept (tag {pointer[0]} holds {pointer[2]} offsets, not 1)"]
    assert pic.meta.tiff_tags[271] == "Epson"
