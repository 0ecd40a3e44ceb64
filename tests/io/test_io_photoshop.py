"""Photoshop image resources (TIFF tag 34377, JPEG APP13, PNG "Raw profile type 8bim") as Photoshop, Bridge and
scanner software leave them: what describes the photo is carried, what describes the source file is dropped with a
note, and the IPTC they hold is found where it is the only copy."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from io_samples import IPTC, gradient
from oldphoto.io import Metadata, read, write
from oldphoto.io import iptc as I

EXT = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp"}
URL = b"http://museum.example/rights"


def resource(rid: int, data: bytes, name: bytes = b"\0\0") -> bytes:
    # built by hand, not with oldphoto.io.iptc, so the tests do not check that module against itself
    return b"8BIM" + struct.pack(">H", rid) + name + struct.pack(">I", len(data)) + data + b"\0" * (len(data) % 2)


def resolution_info(dpi: float) -> bytes:
    # pixels per inch as 16.16 fixed point, then display units: inches (1) for the resolution, cm (2) for the size
    return struct.pack(">IHHIHH", int(dpi * 65536), 1, 2, int(dpi * 65536), 1, 2)


def thumbnail() -> bytes:
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 10, 10)).save(jpeg, "JPEG")
    return struct.pack(">IIIIIIHH", 1, 16, 12, 48, 576, len(jpeg.getvalue()), 24, 1) + jpeg.getvalue()


def photoshop_block(iptc: bytes = IPTC) -> bytes:
    """What Photoshop writes: resolution, IPTC and its digest, thumbnail, copyright flag, URL, version info."""
    return (resource(0x03ED, resolution_info(2400)) + resource(0x0404, iptc)
            + resource(0x0425, hashlib.md5(iptc).digest()) + resource(0x040C, thumbnail())
            + resource(0x040A, b"\x01") + resource(0x040B, URL) + resource(0x0421, b"\0\0\0\x01\x01" + b"\0" * 8))


def _scan_tiff(path, block: bytes, iptc_tag: bytes | None = None, dpi: float = 2400) -> None:
    tags = [(34377, 7, len(block), block, True)]
    if iptc_tag is not None:
        tags.append((33723, 7, len(iptc_tag), iptc_tag, True))
    tifffile.imwrite(path, gradient(24, 36, 3, np.uint16), photometric="rgb", compression="zlib", predictor=2,
                     resolution=(dpi, dpi), resolutionunit=2, extratags=tags, metadata=None)


def _kept(meta: Metadata) -> dict[int, bytes]:
    return I.photoshop_resources(meta.photoshop) if meta.photoshop else {}


def test_iptc_held_only_in_the_photoshop_block_of_a_tiff_is_kept(tmp_path):
    src = tmp_path / "scan.tif"
    _scan_tiff(src, photoshop_block())
    pic = read(src, 10_000)
    assert pic.meta.iptc == IPTC


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
def test_resources_about_the_photo_are_carried_and_the_thumbnail_dropped_with_a_note(tmp_path, fmt):
    src = tmp_path / "scan.tif"
    _scan_tiff(src, photoshop_block())
    pic = read(src, 10_000)
    out = tmp_path / f"out.{EXT[fmt]}"
    notes = write(out, pic.pixels, None, fmt, pic.meta)
    again = read(out, 10_000).meta
    kept = _kept(again)
    assert again.iptc == IPTC
    # a JPEG holds the IPTC in the block; a TIFF or PNG in its own tag or text, once (see test_iptc_tag_of_a_tiff_...)
    assert kept.get(0x0404) == (IPTC if fmt == "JPEG" else None)
    assert kept[0x040A] == b"\x01" and kept[0x040B] == URL
    written = IPTC + b"\0" * (-len(IPTC) % 4) if fmt == "TIFF" else IPTC  # TIFF's tag 33723: padded to whole LONGs
    assert kept[0x0425] == hashlib.md5(written).digest()  # the IPTC is the same: its digest still holds
    assert 0x040C not in kept and 0x0421 not in kept
    assert struct.unpack(">I", kept[0x03ED][:4])[0] == 2400 * 65536
    assert kept[0x03ED][4:] == resolution_info(2400)[4:]  # the display units stay
    dropped = [n for n in notes if n.startswith("Photoshop image resource(s)")]
    assert len(dropped) == 1 and "0x040c (thumbnail)" in dropped[0] and "0x0421 (version info)" in dropped[0]
    assert "unrestored" in dropped[0]


def test_resolution_info_follows_an_upscaled_resolution(tmp_path):
    src = tmp_path / "scan.tif"
    _scan_tiff(src, photoshop_block())
    pic = read(src, 10_000)
    pic.meta.dpi = (4800.0, 4800.0)
    out = tmp_path / "out.tif"
    write(out, pic.pixels, None, "TIFF", pic.meta)
    info = _kept(read(out, 10_000).meta)[0x03ED]
    assert struct.unpack(">IHHIHH", info) == (4800 * 65536, 1, 2, 4800 * 65536, 1, 2)


@pytest.mark.parametrize("dpi", [32768.0, 51200.0, 65535.99999999])
def test_resolution_info_beyond_photoshops_fixed_point_is_dropped_with_a_note(tmp_path, dpi):
    # Photoshop's Fixed is a signed 16.16 number: 32768 dpi and more (a 12800 dpi scan upscaled x4) were written as
    # unsigned and read back by Photoshop as a negative resolution; just under 65536 the packing itself failed
    src = tmp_path / "scan.tif"
    _scan_tiff(src, resource(0x03ED, resolution_info(2400)) + resource(0x040B, URL))
    pic = read(src, 10_000)
    pic.meta.dpi = (dpi, 300.0)
    notes = write(tmp_path / "out.tif", pic.pixels, None, "TIFF", pic.meta)
    assert _kept(read(tmp_path / "out.tif", 10_000).meta) == {0x040B: URL}
    assert notes == [f"Photoshop resolution info (0x03ed) dropped: {dpi:g} x 300 dpi is outside what its "
                     "fixed-point numbers hold (up to 32767.99)"]


def test_an_iptc_digest_that_does_not_match_is_carried_as_it_was(tmp_path):
    # the IPTC tag wins over the block's copy, edited by another tool since Photoshop wrote the block: the digest,
    # which no longer matches, tells MWG readers that the IPTC was changed after the XMP, as it was
    src = tmp_path / "scan.tif"
    other = IPTC + b"\x1c\x02\x19\x00\x06picnic"
    _scan_tiff(src, photoshop_block(), iptc_tag=other)
    pic = read(src, 10_000)
    out = tmp_path / "out.tif"
    write(out, pic.pixels, None, "TIFF", pic.meta)
    again = read(out, 10_000).meta
    assert again.iptc == other and 0x0404 not in _kept(again)  # the IPTC is in tag 33723 alone
    assert _kept(again)[0x0425] == hashlib.md5(IPTC).digest()


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
def test_an_iptc_digest_of_the_records_without_their_padding_is_renewed_for_the_records_written(tmp_path, fmt):
    """Older Photoshop wrote TIFF tag 33723 as LONG, NUL-padded to whole values, and its digest over the records
    without the padding (Adobe's XMP Toolkit accepts either). The padded records were written with that digest as
    it was, which over them no longer matches: MWG readers then take the IPTC as edited since by a tool that does not
    know XMP, and prefer it to the XMP."""
    padded = IPTC + b"\0" * (-len(IPTC) % 4)
    src = tmp_path / "scan.tif"
    block = resource(0x0404, IPTC) + resource(0x0425, hashlib.md5(IPTC).digest()) + resource(0x040B, URL)
    tags = [(34377, 7, len(block), block, True), (33723, 4, len(padded) // 4, np.frombuffer(padded, "<u4"), True)]
    tifffile.imwrite(src, gradient(24, 36, 3, np.uint8), photometric="rgb", extratags=tags, metadata=None)
    pic = read(src, 10_000)
    assert len(padded) > len(IPTC) and pic.meta.iptc == IPTC  # the records, without the padding
    out = tmp_path / f"out.{EXT[fmt]}"
    write(out, pic.pixels, None, fmt, pic.meta)
    again = read(out, 10_000).meta
    assert again.iptc == IPTC and _kept(again).get(0x0404) == (IPTC if fmt == "JPEG" else None)
    # over the records as written: a TIFF's padded again, as ExifTool's CurrentIPTCDigest takes tag 33723 whole
    assert _kept(again)[0x0425] == hashlib.md5(padded if fmt == "TIFF" else IPTC).digest()


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
def test_an_iptc_digest_over_a_whole_long_of_padding_is_renewed_for_the_records_written(tmp_path, fmt):
    """ImageMagick pads tag 33723 to the next whole LONG even when the records fill whole LONGs already: four NULs. A
    digest over the tag as stored (as ExifTool's CurrentIPTCDigest takes it) matched the source's records: the reader
    gives them without those NULs, and the digest, not recognised over them, was carried stale ("IPTCDigest is not
    current"), where it had been renewed before."""
    records = IPTC + b"\x1c\x02\x19\x00\x05Lyons"
    stored = records + b"\0" * 4
    assert len(records) % 4 == 0
    src = tmp_path / "scan.tif"
    block = resource(0x0425, hashlib.md5(stored).digest()) + resource(0x040B, URL)
    tags = [(34377, 7, len(block), block, True), (33723, 4, len(stored) // 4, np.frombuffer(stored, "<u4"), True)]
    tifffile.imwrite(src, gradient(24, 36, 3, np.uint8), photometric="rgb", extratags=tags, metadata=None)
    pic = read(src, 10_000)
    assert pic.meta.iptc == records
    out = tmp_path / f"out.{EXT[fmt]}"
    write(out, pic.pixels, None, fmt, pic.meta)
    again = read(out, 10_000).meta
    assert again.iptc == records and _kept(again)[0x0425] == hashlib.md5(records).digest()


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "PNG"])
def test_an_iptc_digest_without_iptc_to_describe_is_dropped_with_a_note(tmp_path, fmt):
    # a tool removed the IPTC and left its digest: written beside no IPTC, it would describe records not there
    src = tmp_path / "scan.tif"
    _scan_tiff(src, resource(0x0425, hashlib.md5(IPTC).digest()) + resource(0x040B, URL))
    pic = read(src, 10_000)
    assert pic.meta.iptc is None
    out = tmp_path / f"out.{EXT[fmt]}"
    notes = write(out, pic.pixels, None, fmt, pic.meta)
    assert _kept(read(out, 10_000).meta) == {0x040B: URL}
    assert "Photoshop IPTC digest (0x0425) dropped: no IPTC is written beside it" in notes


def test_resolution_info_without_a_resolution_is_dropped_with_its_own_note(tmp_path):
    src = tmp_path / "scan.tif"
    _scan_tiff(src, resource(0x03ED, resolution_info(2400)) + resource(0x040B, URL))
    pic = read(src, 10_000)
    pic.meta.dpi = None
    notes = write(tmp_path / "out.tif", pic.pixels, None, "TIFF", pic.meta)
    assert _kept(read(tmp_path / "out.tif", 10_000).meta) == {0x040B: URL}
    assert notes == ["Photoshop resolution info (0x03ed) dropped: the output has no resolution in dots per inch to "
                     "give it"]


def test_webp_notes_the_resources_it_cannot_hold(tmp_path):
    src = tmp_path / "scan.tif"
    _scan_tiff(src, photoshop_block())
    pic = read(src, 10_000)
    notes = write(tmp_path / "out.webp", pic.pixels, None, "WEBP", pic.meta)
    assert any("0x040a (copyright flag)" in n and "WEBP cannot hold" in n for n in notes)


def _jpeg(segments: list[bytes]) -> bytes:
    plain = io.BytesIO()
    Image.fromarray(gradient(24, 36, 3, np.uint8)).save(plain, "JPEG", quality=90)
    data = plain.getvalue()
    return data[:2] + b"".join(segments) + data[2:]


def _app13(payload: bytes) -> bytes:
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def test_a_block_split_over_two_app13_segments_is_read_whole(tmp_path):
    # Photoshop splits a block over APP13 segments of 64 KB; here a large thumbnail crosses the boundary and the
    # IPTC comes after it, in the second segment
    block = resource(0x040C, thumbnail() + b"\0" * 70000) + resource(0x0404, IPTC) + resource(0x040B, URL)
    header = b"Photoshop 3.0\0"
    src = tmp_path / "scan.jpg"
    src.write_bytes(_jpeg([_app13(header + block[:65000]), _app13(header + block[65000:])]))
    pic = read(src, 10_000)
    assert pic.meta.iptc == IPTC
    out = tmp_path / "out.jpg"
    notes = write(out, pic.pixels, None, "JPEG", pic.meta)
    kept = _kept(read(out, 10_000).meta)
    assert kept == {0x0404: IPTC, 0x040B: URL}
    assert any("0x040c (thumbnail)" in n for n in notes)


def test_a_block_split_inside_a_resource_header_is_read_whole(tmp_path):
    """Pillow parses each APP13 segment on its own and raised IndexError (read as "cannot read JPEG: index out of
    range") for one that ends after a resource's signature and id, before its name: a split there failed a photo
    whose pixels and resources are whole."""
    first = resource(0x0404, IPTC)
    block = first + resource(0x040B, URL)
    header = b"Photoshop 3.0\0"
    src = tmp_path / "scan.jpg"
    at = len(first) + 6  # "8BIM" and the id of the URL resource in the first segment, the rest in the second
    src.write_bytes(_jpeg([_app13(header + block[:at]), _app13(header + block[at:])]))
    pic = read(src, 10_000)
    assert pic.meta.iptc == IPTC and _kept(pic.meta) == {0x0404: IPTC, 0x040B: URL} and pic.notes == []


def test_a_damaged_block_keeps_the_resources_before_the_damage_with_a_note(tmp_path):
    block = resource(0x0404, IPTC) + resource(0x040B, URL)[:-6]  # the URL resource is cut short
    src = tmp_path / "scan.jpg"
    src.write_bytes(_jpeg([_app13(b"Photoshop 3.0\0" + block)]))
    pic = read(src, 10_000)
    assert pic.meta.iptc == IPTC and _kept(pic.meta) == {0x0404: IPTC}
    assert any("JPEG APP13" in n and "damaged" in n and "1 resource(s) before" in n for n in pic.notes)


def test_png_raw_profile_8bim_is_read_and_written(tmp_path):
    # ImageMagick keeps a Photoshop block of a converted file as the text chunk "Raw profile type 8bim"
    first = tmp_path / "a.png"
    write(first, gradient(24, 36, 3, np.uint16), None, "PNG", Metadata(photoshop=photoshop_block()))
    assert b"Raw profile type iptc" not in first.read_bytes()  # the IPTC is in the 8bim profile only
    back = read(first, 10_000)
    assert "Raw profile type 8bim" not in back.meta.text  # read as the block, not as text
    second = tmp_path / "b.tif"
    write(second, back.pixels, None, "TIFF", back.meta)
    again = read(second, 10_000).meta
    assert again.iptc == IPTC and _kept(again)[0x040B] == URL


def test_resource_names_and_padding_survive_a_round_trip():
    block = resource(0x0404, IPTC, name=b"\x04IPTC\0") + resource(0x040B, URL) + b"\0\0"
    parsed = I.resource_list(block)
    assert [(r, n) for r, n, _ in parsed] == [(0x0404, b"\x04IPTC\0"), (0x040B, b"\0\0")]
    assert I.pack_resources(parsed) == block[:-2]


def test_resources_larger_than_one_app13_segment_are_written_over_several(tmp_path):
    """A caption and IPTC over 64 KB (long archival descriptions) are split over APP13 segments, not dropped."""
    caption = b"\x1c\x02\x78" + struct.pack(">H", 30000) + b"d" * 30000
    big_iptc = IPTC + caption * 3
    block = resource(0x0404, big_iptc) + resource(0x040B, URL)
    src = tmp_path / "scan.jpg"
    src.write_bytes(_jpeg([_app13(b"Photoshop 3.0\0" + block[:65000]), _app13(b"Photoshop 3.0\0" + block[65000:])]))
    pic = read(src, 10_000)
    assert pic.meta.iptc == big_iptc
    out = tmp_path / "out.jpg"
    notes = write(out, pic.pixels, None, "JPEG", pic.meta)
    assert not any("not written" in n for n in notes)
    again = read(out, 10_000)
    assert again.meta.iptc == big_iptc and _kept(again.meta) == {0x0404: big_iptc, 0x040B: URL}


def test_a_split_resource_block_is_cut_between_resources_where_they_fit(tmp_path):
    """Pillow parses each APP13 segment alone: IPTC cut in two by a split at a fixed size read back truncated
    (getiptcinfo errors, later resources lost); cut between resources, each that fits is whole."""
    from PIL import IptcImagePlugin

    caption = b"\x1c\x02\x78" + struct.pack(">H", 30000) + b"d" * 30000
    block = resource(0x03F0, b"c" * 40000) + resource(0x0404, caption) + resource(0x040B, URL)
    out = tmp_path / "out.jpg"
    out.write_bytes(_jpeg([I.jpeg_app13(block)]))
    with Image.open(out) as im:
        assert im.info["photoshop"] == {0x03F0: b"c" * 40000, 0x0404: caption, 0x040B: URL}
        assert IptcImagePlugin.getiptcinfo(im) == {(2, 120): b"d" * 30000}
    assert read(out, 10_000).meta.iptc == caption  # ours joins the segments, as before
    for size in (0, 65519, 65520, 200_000):  # empty, exactly one segment's worth, one byte more, a big one
        data = I.jpeg_app13(b"x" * size)
        lengths, pos = [], 0
        while pos < len(data):
            assert data[pos : pos + 2] == b"\xff\xed"
            lengths.append(struct.unpack(">H", data[pos + 2 : pos + 4])[0])
            pos += 2 + lengths[-1]
        assert pos == len(data) and max(lengths) <= 65535 and sum(n - 16 for n in lengths) == size
