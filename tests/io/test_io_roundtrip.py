"""Pixels survive write -> read for every format x bit depth x channel layout."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import gradient
from oldphoto.io import allocate, probe, read, to_uint8, write
from oldphoto.io import tiff_write

LAYOUTS = [(c, a) for c in (1, 3) for a in (False, True)]
DTYPES = [np.uint8, np.uint16]


def _make(c, has_alpha, dtype, h=29, w=41):
    px = gradient(h, w, c, dtype, seed=c)
    alpha = gradient(h, w, 1, dtype, seed=7)[:, :, 0] if has_alpha else None
    return px, alpha


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,has_alpha", LAYOUTS)
def test_lossless_formats_are_exact(tmp_path, fmt, dtype, c, has_alpha):
    px, alpha = _make(c, has_alpha, dtype)
    path = tmp_path / f"x.{fmt.lower()}"
    assert write(path, px, alpha, fmt, None) == []
    pic = read(path, max_pixels=10_000)
    assert pic.format == fmt
    assert pic.pixels.dtype == dtype and pic.pixels.shape == px.shape
    np.testing.assert_array_equal(pic.pixels, px)
    if has_alpha:
        np.testing.assert_array_equal(pic.alpha, alpha)
    else:
        assert pic.alpha is None
    info = probe(path)
    assert (info.width, info.height, info.channels, info.dtype, info.alpha) == (41, 29, c, np.dtype(dtype),
                                                                                has_alpha)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,has_alpha", LAYOUTS)
def test_jpeg_is_close_drops_alpha_and_says_so(tmp_path, dtype, c, has_alpha):
    px, alpha = _make(c, has_alpha, dtype)
    notes = write(tmp_path / "x.jpg", px, alpha, "JPEG", None, jpeg_quality=95)
    assert any("alpha dropped" in n for n in notes) == has_alpha
    assert any("16-bit reduced to 8-bit" in n for n in notes) == (dtype == np.uint16)
    pic = read(tmp_path / "x.jpg", max_pixels=10_000)
    assert pic.pixels.dtype == np.uint8 and pic.pixels.shape == px.shape and pic.alpha is None
    err = np.abs(pic.pixels.astype(int) - to_uint8(px).astype(int))
    assert err.mean() < 3.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,has_alpha", LAYOUTS)
def test_webp(tmp_path, dtype, c, has_alpha):
    px, alpha = _make(c, has_alpha, dtype)
    notes = write(tmp_path / "x.webp", px, alpha, "WEBP", None, jpeg_quality=100)  # 100 = lossless
    assert any("gray stored as RGB" in n for n in notes) == (c == 1)
    pic = read(tmp_path / "x.webp", max_pixels=10_000)
    assert pic.pixels.shape == px.shape[:2] + (3,)
    want = np.broadcast_to(to_uint8(px), pic.pixels.shape)
    np.testing.assert_array_equal(pic.pixels, want)  # lossless WebP is exact in 8 bits
    if has_alpha:
        np.testing.assert_array_equal(pic.alpha, to_uint8(alpha))
    lossy_notes = write(tmp_path / "y.webp", px, None, "WEBP", None, jpeg_quality=80)
    assert lossy_notes == notes[: len(lossy_notes)]
    assert np.abs(read(tmp_path / "y.webp", 10_000).pixels.astype(int) - want.astype(int)).mean() < 4


def test_16bit_rgb_png_keeps_16_bits_and_is_standard(tmp_path):
    px, alpha = _make(3, True, np.uint16, h=50, w=70)
    px[0, 0] = (0, 1, 65535)  # values Pillow's 8-bit path would lose
    write(tmp_path / "x.png", px, alpha, "PNG", None)
    data = (tmp_path / "x.png").read_bytes()
    assert data[24] == 16 and data[25] == 6  # IHDR: bit depth 16, colour type RGBA
    decoded = imagecodecs.png_decode(data)  # libpng as an independent decoder
    np.testing.assert_array_equal(decoded[:, :, :3], px)
    np.testing.assert_array_equal(decoded[:, :, 3], alpha)
    pic = read(tmp_path / "x.png", 10_000)
    assert pic.source_mode == "RGBA;16"
    np.testing.assert_array_equal(pic.pixels, px)


def test_16bit_png_written_by_libpng_is_read_exactly(tmp_path):
    for c in (1, 2, 3, 4):
        arr = gradient(31, 17, c, np.uint16, seed=c)
        (tmp_path / "l.png").write_bytes(imagecodecs.png_encode(arr if c > 1 else arr[:, :, 0]))
        pic = read(tmp_path / "l.png", 10_000)
        colour = 1 if c < 3 else 3
        np.testing.assert_array_equal(pic.pixels, arr[:, :, :colour])
        if c in (2, 4):
            np.testing.assert_array_equal(pic.alpha, arr[:, :, -1])


def _png(path, color_type: int, samples: np.ndarray, trns: bytes) -> None:
    """A 16-bit PNG with a tRNS chunk, built by hand (Pillow cannot write 16-bit RGB)."""
    def chunk(ctype, data):
        return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))

    h, w = samples.shape[:2]
    raw = b"".join(b"\0" + samples[r].astype(">u2").tobytes() for r in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"tRNS", trns) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("c", [1, 3])
def test_16bit_png_with_a_colour_key_reads_as_alpha(tmp_path, c):
    px = gradient(12, 16, c, np.uint16, seed=c)
    key = px[3, 5].copy()
    _png(tmp_path / "k.png", {1: 0, 3: 2}[c], px, struct.pack(f">{c}H", *key.tolist()))
    assert probe(tmp_path / "k.png").alpha
    pic = read(tmp_path / "k.png", 10_000)
    assert pic.pixels.dtype == np.uint16 and pic.pixels.shape == px.shape
    np.testing.assert_array_equal(pic.pixels, px)
    np.testing.assert_array_equal(pic.alpha, np.where((px == key).all(axis=2), 0, 65535))
    assert write(tmp_path / "o.png", pic.pixels, pic.alpha, "PNG", pic.meta) == []
    out = read(tmp_path / "o.png", 10_000)
    np.testing.assert_array_equal(out.alpha, pic.alpha)
    assert out.pixels.dtype == np.uint16


def test_8bit_png_and_tiff_open_in_other_decoders(tmp_path):
    px, alpha = _make(3, True, np.uint8)
    write(tmp_path / "x.png", px, alpha, "PNG", None)
    write(tmp_path / "x.tif", px, alpha, "TIFF", None)
    want = np.concatenate([px, alpha[:, :, None]], axis=2)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), want)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.tif")), want)  # libtiff
    with tifffile.TiffFile(tmp_path / "x.tif") as t:
        page = t.pages[0]
        assert page.compression == 5 and page.predictor == 2 and len(page.dataoffsets) >= 1  # LZW: no TIFF master
        np.testing.assert_array_equal(page.asarray(), want)


def test_16bit_tiff_is_written_in_strips_and_read_by_tifffile(tmp_path, monkeypatch):
    monkeypatch.setattr(tiff_write, "_STRIP_BYTES", 1024)  # force many strips on a small image
    px, _ = _make(3, False, np.uint16, h=64, w=40)
    write(tmp_path / "x.tif", px, None, "TIFF", None)
    with tifffile.TiffFile(tmp_path / "x.tif") as t:
        assert len(t.pages[0].dataoffsets) == 64 // (1024 // (40 * 6))
        np.testing.assert_array_equal(t.pages[0].asarray(), px)


def test_bigtiff_output(tmp_path, monkeypatch):
    monkeypatch.setattr(tiff_write, "_CLASSIC_LIMIT", 0)  # what a > 4 GiB image would get
    px, alpha = _make(1, True, np.uint16)
    write(tmp_path / "x.tif", px, alpha, "TIFF", None)
    assert (tmp_path / "x.tif").read_bytes()[:4] == b"II+\0"
    with tifffile.TiffFile(tmp_path / "x.tif") as t:
        assert t.is_bigtiff
    pic = read(tmp_path / "x.tif", 10_000)
    np.testing.assert_array_equal(pic.pixels, px)
    np.testing.assert_array_equal(pic.alpha, alpha)


def test_memmap_input_is_written_without_error(tmp_path):
    big = allocate((30, 20, 3), np.uint16, tmp_dir=tmp_path, threshold=0)
    assert isinstance(big, np.memmap)
    big[...] = gradient(30, 20, 3, np.uint16)
    for fmt in ("PNG", "TIFF"):
        write(tmp_path / f"m.{fmt}", big, None, fmt, None)
        np.testing.assert_array_equal(read(tmp_path / f"m.{fmt}", 10_000).pixels, big)


def test_to_uint8_rounds_to_nearest():
    x = np.array([0, 128, 129, 257, 385, 386, 65535], np.uint16)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 1, 1, 1, 2, 255])
    every = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8(every), np.round(every / 257).astype(np.uint8))


def test_allocate_switches_to_disk_above_threshold(tmp_path):
    small = allocate((4, 4, 3), np.uint8, tmp_dir=tmp_path, threshold=1024)
    assert type(small) is np.ndarray
    big = allocate((32, 32, 3), np.uint16, tmp_dir=tmp_path, threshold=1024)
    assert isinstance(big, np.memmap) and big.shape == (32, 32, 3) and big.dtype == np.uint16
    big[...] = 7
    assert int(big.sum()) == 7 * 32 * 32 * 3
    assert list(tmp_path.iterdir()) == []  # the backing file is already unlinked


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        write(tmp_path / "x.png", np.zeros((5, 5), np.uint8), None, "PNG", None)
    with pytest.raises(ValueError, match="float32"):
        write(tmp_path / "x.png", np.zeros((5, 5, 3), np.float32), None, "PNG", None)
    with pytest.raises(ValueError, match="alpha"):
        write(tmp_path / "x.png", np.zeros((5, 5, 3), np.uint8), np.zeros((4, 5), np.uint8), "PNG", None)
    with pytest.raises(ValueError, match="GIF"):
        write(tmp_path / "x.gif", np.zeros((5, 5, 3), np.uint8), None, "GIF", None)
    assert list(tmp_path.iterdir()) == []


def test_read_accepts_pillow_png_modes(tmp_path):
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 6, (12, 9)).astype(np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180])
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=2)
    (tmp_path / "p.png").write_bytes(buf.getvalue())
    pic = read(tmp_path / "p.png", 10_000)
    assert pic.source_mode == "P" and "palette converted to RGB" in pic.notes
    np.testing.assert_array_equal(pic.pixels[:, :, 0], (idx * 30 + 10).astype(np.uint8))
    np.testing.assert_array_equal(pic.alpha == 0, idx == 2)
    bits = rng.random((12, 9)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    pic = read(tmp_path / "b.png", 10_000)
    np.testing.assert_array_equal(pic.pixels[:, :, 0], np.where(bits, 255, 0))
    assert "1-bit converted to 8-bit gray" in pic.notes
