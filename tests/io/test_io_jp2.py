"""JPEG 2000 input: JP2 files and bare codestreams, their header checked before decoding, their metadata boxes."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import pytest
import tifffile
from io_samples import IPTC, SRGB_ICC, XMP, gradient, rich_exif
from jp2_samples import (DPI_300, DPI_600, UUID_EXIF, UUID_IPTC, UUID_XMP, box, cdef, colr_icc, jp2, res,
                         top_boxes, uuid)

from oldphoto.errors import ImageError
from oldphoto.io import probe, read, read_metadata, sniff, write
from oldphoto.io import jp2 as jp2_mod


def _put(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("shape, dtype, codec", [
    ((21, 33, 3), np.uint8, "jp2"), ((21, 33, 1), np.uint8, "jp2"), ((21, 33, 3), np.uint16, "jp2"),
    ((21, 33, 3), np.uint8, "j2k"), ((21, 33, 1), np.uint16, "j2k")])
def test_pixels_are_read_exactly(tmp_path, shape, dtype, codec):
    px = gradient(*shape, dtype)
    path = _put(tmp_path / f"a.{codec}", jp2(px if shape[2] > 1 else px[..., 0], codec=codec))
    info = probe(path)
    assert (info.format, info.width, info.height, info.channels, info.dtype) == ("JPEG2000", 33, 21, shape[2],
                                                                                 np.dtype(dtype))
    pic = read(path, 10**6)
    assert pic.format == "JPEG2000" and pic.alpha is None and pic.notes == []
    assert pic.pixels.dtype == dtype and np.array_equal(pic.pixels, px)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("colour", [1, 3])
def test_a_fourth_or_second_component_is_alpha(tmp_path, dtype, colour):
    px = gradient(19, 25, colour + 1, dtype, seed=2)
    pic = read(_put(tmp_path / "a.jp2", jp2(px)), 10**6)
    assert np.array_equal(pic.pixels, px[..., :colour]) and np.array_equal(pic.alpha, px[..., colour])
    assert "extra component of unspecified meaning kept as alpha (no cdef box names it)" in pic.notes


def test_cdef_says_where_the_alpha_is_even_first(tmp_path):
    rgba = gradient(19, 25, 4, np.uint8, seed=3)
    argb = rgba[..., [3, 0, 1, 2]]  # stored alpha first; cdef associates the others with R, G, B
    data = jp2(argb, in_header=cdef((0, 1, 0), (1, 0, 1), (2, 0, 2), (3, 0, 3)))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    assert np.array_equal(pic.pixels, rgba[..., :3]) and np.array_equal(pic.alpha, rgba[..., 3])
    assert pic.notes == [] and pic.source_mode == "RGBA"


def test_premultiplied_alpha_is_made_straight(tmp_path):
    colour = np.full((8, 10, 3), 100, np.uint8)
    alpha = np.full((8, 10), 128, np.uint8)
    alpha[0] = 0
    pre = np.concatenate([(colour.astype(int) * alpha[..., None] // 255).astype(np.uint8), alpha[..., None]], 2)
    data = jp2(pre, in_header=cdef((0, 0, 1), (1, 0, 2), (2, 0, 3), (3, 2, 0)))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    assert "premultiplied alpha converted to straight alpha" in pic.notes
    assert np.abs(pic.pixels[1:].astype(int) - 100).max() <= 1 and (pic.pixels[0] == 0).all()


@pytest.mark.parametrize("bits, top", [(12, 65535), (10, 65535), (4, 255)])
def test_other_depths_are_scaled_to_the_full_range(tmp_path, bits, top):
    largest = (1 << bits) - 1
    px = np.linspace(0, largest, 256).round().reshape(16, 16).astype(np.uint16 if bits > 8 else np.uint8)
    pic = read(_put(tmp_path / "a.jp2", jp2(px, bits)), 10**6)
    want = px.astype(np.int64) * top // largest
    assert pic.pixels.dtype == (np.uint16 if bits > 8 else np.uint8)
    assert np.array_equal(pic.pixels[..., 0], want) and pic.pixels.max() == top
    assert f"{bits}-bit samples scaled to {8 if bits < 8 else 16}-bit" in pic.notes


def test_max_pixels_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", never)
    for name, codec in (("a.jp2", "jp2"), ("a.j2k", "j2k")):
        path = _put(tmp_path / name, jp2(gradient(40, 50, 3, np.uint8), codec=codec))
        for call in (lambda: read(path, 1999), lambda: probe(path, 1999)):
            with pytest.raises(ImageError, match=r"50 x 40 pixels \(0.0 MP\) exceeds the limit of 0.001999 MP"):
                call()


def _siz_offset(data: bytes) -> int:
    return data.index(b"\xff\x4f\xff\x51") + 4  # the SIZ marker segment, after SOC and its own marker


@pytest.mark.parametrize("what, edit, said", [
    ("subsampled", lambda d, s: d[: s + 38 + 3 + 1] + b"\x02\x02" + d[s + 38 + 6 :],
     "JPEG 2000 with subsampled components is not supported: 1x1, 2x2, 1x1"),
    ("signed", lambda d, s: d[: s + 38] + b"\x87" + d[s + 39 :], "JPEG 2000 with signed samples is not supported"),
    ("17-bit", lambda d, s: d[: s + 38] + bytes([16, 1, 1]) * 3 + d[s + 38 + 9 :],
     "17-bit JPEG 2000 is not supported (at most 16 bits)"),
    ("depths", lambda d, s: d[: s + 38] + b"\x0b" + d[s + 39 :],
     "JPEG 2000 whose components differ in bit depth is not supported: 12, 8, 8"),
])
def test_what_is_not_supported_is_refused_in_one_line_before_decoding(tmp_path, monkeypatch, what, edit, said):
    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", lambda *a, **k: pytest.fail("decoded"))
    data = jp2(gradient(8, 9, 3, np.uint8), codec="j2k")
    path = _put(tmp_path / "a.j2k", edit(data, _siz_offset(data) - 4 + 4))
    with pytest.raises(ImageError) as e:
        read(path, 10**6)
    assert e.value.reason == said


def test_more_than_four_components_and_a_palette_are_refused(tmp_path):
    five = jp2(gradient(8, 9, 5, np.uint8), codec="j2k")
    with pytest.raises(ImageError, match="JPEG 2000 with 5 components is not supported"):
        read(_put(tmp_path / "five.j2k", five), 10**6)
    palette = jp2(gradient(8, 9, 1, np.uint8)[..., 0], in_header=box(b"pclr", b"\0\x01\x01\x07\0"))
    with pytest.raises(ImageError, match=r"palette \(pclr box\) is not supported"):
        read(_put(tmp_path / "p.jp2", palette), 10**6)


def test_a_file_cut_short_is_refused_in_one_line(tmp_path):
    data = jp2(gradient(30, 40, 3, np.uint8))
    for name, cut in (("a.jp2", data[: len(data) - 100]), ("b.j2k", jp2(gradient(30, 40, 3, np.uint8),
                                                                           codec="j2k")[:-100])):
        with pytest.raises(ImageError) as e:
            read(_put(tmp_path / name, cut), 10**6)
        assert e.value.reason.startswith("cannot read JPEG2000: ") and "\n" not in e.value.reason
    assert sniff(data[:12]) == "JPEG2000" and sniff(b"\xff\x4f\xff\x51" + b"\0" * 8) == "JPEG2000"
    with pytest.raises(ImageError, match="cut short: the file has only 7 byte"):
        read(_put(tmp_path / "c.jp2", data[:7]), 10**6)


def test_metadata_boxes_are_read(tmp_path):
    exif = rich_exif()
    data = jp2(gradient(20, 30, 3, np.uint16), colr=colr_icc(SRGB_ICC), in_header=res(DPI_600, DPI_300),
               before=uuid(UUID_XMP, XMP) + uuid(UUID_EXIF, b"Exif\0\0" + exif),
               after=uuid(UUID_IPTC, IPTC) + box(b"xml ", b"<a/>") + uuid(b"0123456789abcdef", b"x"))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    m = pic.meta
    assert m.icc == SRGB_ICC and m.xmp == XMP and m.exif == exif and m.iptc == IPTC
    assert m.dpi == pytest.approx((600.0, 300.0))
    assert m.tiff_tags[271] == "Epson"
    assert pic.notes == ["JPEG 2000 box(es) 'xml ', 'uuid' (30313233343536373839616263646566) not carried"]
    info, meta = read_metadata(tmp_path / "a.jp2")
    assert meta.icc == SRGB_ICC and meta.xmp == XMP and info.width == 30


def test_exif_without_its_prefix_and_display_resolution(tmp_path):
    data = jp2(gradient(20, 30, 1, np.uint8)[..., 0], in_header=res(DPI_300, DPI_300, b"resd"),
               after=uuid(UUID_EXIF, rich_exif(">")))
    m = read(_put(tmp_path / "a.jp2", data), 10**6).meta
    assert m.exif == rich_exif(">") and m.dpi == pytest.approx((300.0, 300.0))


def test_capture_resolution_is_preferred_to_display(tmp_path):
    both = box(b"res ", box(b"resd", struct.pack(">HHHHbb", *DPI_300[:2], *DPI_300[:2], 2, 2))
               + box(b"resc", struct.pack(">HHHHbb", *DPI_600[:2], *DPI_600[:2], 2, 2)))
    m = read(_put(tmp_path / "a.jp2", jp2(gradient(8, 9, 3, np.uint8), in_header=both)), 10**6).meta
    assert m.dpi == pytest.approx((600.0, 600.0))


def test_a_damaged_box_after_the_codestream_costs_only_itself(tmp_path):
    px = gradient(20, 30, 3, np.uint8)
    bad = struct.pack(">I4s", 4000, b"uuid") + UUID_XMP + XMP[:20]  # its length runs past the end of the file
    pic = read(_put(tmp_path / "a.jp2", jp2(px, after=bad)), 10**6)
    assert np.array_equal(pic.pixels, px) and pic.meta.xmp is None
    assert any(n.startswith("JPEG 2000 boxes after the codestream not read: box 'uuid'") for n in pic.notes)
    with pytest.raises(ImageError, match="cannot read JPEG2000: box 'uuid' at byte"):
        read(_put(tmp_path / "b.jp2", jp2(px, before=bad)), 10**6)  # the codestream is lost behind it


def test_a_damaged_icc_profile_is_dropped_with_a_note(tmp_path):
    data = jp2(gradient(8, 9, 3, np.uint8), colr=colr_icc(SRGB_ICC[:-10]))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    assert pic.meta.icc is None and any(n.startswith("ICC profile dropped: the colr box holds") for n in pic.notes)


def test_the_box_walk_refuses_a_box_longer_than_its_parent(tmp_path):
    import io

    with pytest.raises(jp2_mod.BoxError, match="gives 100 bytes, but only 12 remain"):
        list(jp2_mod.boxes(io.BytesIO(struct.pack(">I4s", 100, b"abcd") + b"1234"), 0, 12))
    xl = struct.pack(">I4sQ", 1, b"abcd", 20) + b"1234"
    assert [(b.type, b.start, b.end) for b in jp2_mod.boxes(io.BytesIO(xl), 0, 20)] == [(b"abcd", 16, 20)]


def test_a_jp2_master_written_as_tiff_keeps_depth_alpha_and_metadata(tmp_path):
    px = gradient(20, 30, 4, np.uint16, seed=5)
    data = jp2(px, colr=colr_icc(SRGB_ICC), in_header=res(DPI_600, DPI_600),
               before=uuid(UUID_XMP, XMP) + uuid(UUID_EXIF, rich_exif()) + uuid(UUID_IPTC, IPTC))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    write(tmp_path / "a.tif", pic.pixels, pic.alpha, "TIFF", pic.meta)
    with tifffile.TiffFile(tmp_path / "a.tif") as t:
        page = t.pages[0]
        assert np.array_equal(page.asarray(), px)
        tags = page.tags
        assert tags["InterColorProfile"].value == SRGB_ICC and bytes(tags["XMP"].value) == XMP
        assert tags["ExifTag"].value["DateTimeOriginal"] == "1952:07:14 15:30:00"
        assert tags["XResolution"].value == (600, 1)
    assert [k for k, _ in top_boxes(data)][:3] == [b"jP  ", b"ftyp", b"jp2h"]


def test_an_icc_profile_leaves_the_pixels_as_stored(tmp_path):
    """Given the whole JP2, the decoder changed 16-bit RGB pixels of a file whose colr box holds an ICC profile (by
    up to 4); the codestream alone is decoded: the scanned values, which the carried profile describes."""
    px = gradient(20, 30, 3, np.uint16, seed=5)
    pic = read(_put(tmp_path / "a.jp2", jp2(px, colr=colr_icc(SRGB_ICC))), 10**6)
    assert np.array_equal(pic.pixels, px) and pic.meta.icc == SRGB_ICC


def test_sycc_is_converted_to_rgb(tmp_path):
    rgb = gradient(20, 30, 3, np.uint8, seed=6).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ycc = np.stack([0.299 * r + 0.587 * g + 0.114 * b, -0.168736 * r - 0.331264 * g + 0.5 * b + 128,
                    0.5 * r - 0.418688 * g - 0.081312 * b + 128], axis=2)
    data = jp2(np.clip(ycc.round(), 0, 255).astype(np.uint8), colr=box(b"colr", b"\x01\0\0" + struct.pack(">I", 18)))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    assert np.abs(pic.pixels.astype(int) - rgb).max() <= 3 and "sYCC converted to RGB" in pic.notes
    assert pic.meta.icc is None


def test_an_iptc_box_without_records_is_dropped_with_a_note(tmp_path):
    data = jp2(gradient(8, 9, 3, np.uint8), after=uuid(UUID_IPTC, b"8BIM not records"))
    pic = read(_put(tmp_path / "a.jp2", data), 10**6)
    assert pic.meta.iptc is None
    assert "IPTC uuid box dropped: it holds no IPTC-IIM records (they begin with 0x1C)" in pic.notes
