"""A lossless WebP master (VP8L) gives a lossless WebP derivative, whatever jpeg_quality; a lossy one (VP8) is
encoded at jpeg_quality as before (100: lossless)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from PIL import Image

from io_samples import SRGB_ICC, gradient
from oldphoto.io import Metadata, lossless_webp, read, write
from oldphoto.io.raster_read import webp_lossless
from oldphoto.io.writer import webp_is_lossless


def chunks(data: bytes) -> list[bytes]:
    """The top-level chunk ids of a RIFF WebP."""
    end, pos, found = 8 + struct.unpack("<I", data[4:8])[0], 12, []
    while pos + 8 <= end:
        fourcc, size = struct.unpack("<4sI", data[pos : pos + 8])
        found.append(fourcc)
        pos += 8 + size + size % 2
    return found


def _rgba(h=23, w=31) -> np.ndarray:
    a = np.concatenate([gradient(h, w, 3, np.uint8, seed=3), gradient(h, w, 1, np.uint8, seed=5)], axis=2)
    a[:4, :4, 3] = 0  # fully transparent pixels whose colour a lossless copy keeps too
    return a


def _master(path, pixels: np.ndarray, lossless: bool, **kw):
    Image.fromarray(pixels).save(path, "WEBP", lossless=lossless, exact=True, quality=70, **kw)
    return path


@pytest.mark.parametrize("lossless", [True, False])
@pytest.mark.parametrize("container", ["simple", "extended", "alpha"])
def test_the_reader_says_whether_the_master_is_lossless(tmp_path, lossless, container):
    pixels = _rgba() if container == "alpha" else _rgba()[..., :3]
    kw = {"icc_profile": SRGB_ICC} if container == "extended" else {}
    path = _master(tmp_path / "m.webp", pixels, lossless, **kw)
    ids = chunks(path.read_bytes())
    image = b"VP8L" if lossless else b"VP8 "
    # VP8L holds its alpha: a lossy WebP's is in an ALPH chunk beside VP8, in a VP8X container
    extended = container == "extended" or (container == "alpha" and not lossless)
    assert ids == ([b"VP8X", b"ICCP"] if container == "extended" else [b"VP8X", b"ALPH"] if extended else []) + [image]
    assert read(path, 10_000).meta.webp_lossless is lossless
    assert lossless_webp(path) is lossless


def test_only_a_webp_has_a_bitstream_to_tell(tmp_path):
    Image.fromarray(_rgba()[..., :3]).save(tmp_path / "m.png")
    assert read(tmp_path / "m.png", 10_000).meta.webp_lossless is None
    assert lossless_webp(tmp_path / "m.png") is False and lossless_webp(tmp_path / "missing.webp") is False


@pytest.mark.parametrize("kw", [{}, {"icc_profile": SRGB_ICC}], ids=["simple", "extended"])
def test_telling_a_lossless_master_reads_a_few_bytes_of_it_on_a_share_with_large_blocks(tmp_path, monkeypatch, kw):
    """Planning asks lossless_webp of every WebP master, each run: on a network share whose block size is 1 MiB (open's
    default buffer there), a buffered read of its first 4 bytes would fetch 1 MiB of each file."""
    import io

    from oldphoto.io import reader

    read_bytes = []

    class Counting(io.FileIO):
        def readinto(self, b):
            n = super().readinto(b)
            read_bytes.append(n or 0)
            return n

        def read(self, size=-1):
            data = super().read(size)
            read_bytes.append(len(data or b""))
            return data

    def share_open(path, mode="r", buffering=-1, *args, opener=None, **more):  # a 1 MiB st_blksize, as on CIFS or NFS
        assert mode == "rb"
        return io.BufferedReader(Counting(path, "r", opener=opener), 1 << 20 if buffering in (-1, 1) else buffering)

    noise = np.random.default_rng(0).integers(0, 256, (160, 200, 3), dtype=np.uint8)  # ~100 KB, lossless
    master = _master(tmp_path / "m.webp", noise, True, **kw)
    assert master.stat().st_size > 50_000
    monkeypatch.setattr(reader, "open", share_open, raising=False)
    assert lossless_webp(master) and read_bytes
    assert sum(read_bytes) <= 256, read_bytes


def test_chunks_before_the_image_are_passed_over_and_a_file_without_one_tells_nothing(tmp_path):
    data = _master(tmp_path / "m.webp", _rgba()[..., :3], True).read_bytes()
    odd = b"ZZZZ" + struct.pack("<I", 3) + b"abc\0"  # an unknown chunk, odd-sized (padded)
    body = data[12:]
    moved = b"RIFF" + struct.pack("<I", 4 + len(odd) + len(body)) + b"WEBP" + odd + body
    (tmp_path / "moved.webp").write_bytes(moved)
    assert lossless_webp(tmp_path / "moved.webp") is True
    cut = b"RIFF" + struct.pack("<I", 4 + len(odd)) + b"WEBP" + odd  # no image chunk within the RIFF size
    (tmp_path / "cut.webp").write_bytes(cut)
    with open(tmp_path / "cut.webp", "rb") as fh:
        assert webp_lossless(fh) is None
    assert lossless_webp(tmp_path / "cut.webp") is False


@pytest.mark.parametrize("layout", ["RGB", "RGBA"])
def test_a_lossless_master_gives_a_lossless_derivative_bit_for_bit(tmp_path, layout):
    pixels = _rgba() if layout == "RGBA" else _rgba()[..., :3]
    pic = read(_master(tmp_path / "m.webp", pixels, True), 10_000)
    assert np.array_equal(pic.pixels, pixels[..., :3])  # the master itself read back exactly
    for q in (95, 50):
        out = tmp_path / f"o{q}.webp"
        assert write(out, pic.pixels, pic.alpha, "WEBP", pic.meta, jpeg_quality=q) == []
        ids = chunks(out.read_bytes())
        assert b"VP8L" in ids and b"VP8 " not in ids and b"ALPH" not in ids
        back = read(out, 10_000)
        np.testing.assert_array_equal(back.pixels, pic.pixels)
        if layout == "RGBA":
            np.testing.assert_array_equal(back.alpha, pic.alpha)  # transparent pixels keep their colour (exact)
        else:
            assert back.alpha is None
    assert (tmp_path / "o95.webp").read_bytes() == (tmp_path / "o50.webp").read_bytes()  # quality plays no part


def test_a_lossy_master_stays_lossy_at_the_quality_asked(tmp_path):
    pixels = _rgba()
    pic = read(_master(tmp_path / "m.webp", pixels, False), 10_000)
    assert pic.meta.webp_lossless is False
    sizes = {}
    for q in (95, 30):
        out = tmp_path / f"o{q}.webp"
        write(out, pic.pixels, pic.alpha, "WEBP", pic.meta, jpeg_quality=q)
        ids = chunks(out.read_bytes())
        assert b"VP8 " in ids and b"ALPH" in ids and b"VP8L" not in ids
        sizes[q] = out.stat().st_size
    assert sizes[30] < sizes[95]
    write(tmp_path / "q100.webp", pic.pixels, pic.alpha, "WEBP", pic.meta, jpeg_quality=100)  # 100: lossless
    assert b"VP8L" in chunks((tmp_path / "q100.webp").read_bytes())
    np.testing.assert_array_equal(read(tmp_path / "q100.webp", 10_000).pixels, pic.pixels)


def test_which_webp_outputs_are_lossless():
    assert webp_is_lossless(Metadata(webp_lossless=True), 80)
    assert not webp_is_lossless(Metadata(webp_lossless=False), 80) and webp_is_lossless(Metadata(), 100)
    assert not webp_is_lossless(None, 95) and not webp_is_lossless(Metadata(), 95)  # no WebP master: as before
