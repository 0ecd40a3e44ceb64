"""EXIF values given in the source's pixels (SubjectArea, SubjectLocation, FocalPlaneX/YResolution) and their XMP
copies follow the pixels: turned upright from the source's orientation and enlarged."""

from __future__ import annotations

import dataclasses
import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from io_samples import rational, short, tiff_structure
from oldphoto.io import Metadata, read, upright, write
from oldphoto.io import tiff_ifd as T
from oldphoto.io.pixel_tags import PixelFrame, map_exif, map_xmp

EXT = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif", "WEBP": "webp"}
AREA, LOCATION, FPX, FPY = 0x9214, 0xA214, 0xA20E, 0xA20F
EXIF_NS, RDF_NS = "http://ns.adobe.com/exif/1.0/", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def _exif_block(order: str, orientation: int, exif: list) -> bytes:
    return tiff_structure(order, [short(274, orientation)], exif)


def _written(path) -> dict[int, tuple]:
    """The Exif directory's pixel values of a written file, read back through oldphoto's reader."""
    meta = read(path, 1_000_000).meta
    exif = T.parse_exif(meta.exif)[0].children[T.EXIF_IFD].entries
    out = {}
    for tag in (AREA, LOCATION):
        if tag in exif:
            out[tag] = exif[tag].ints()
    for tag in (FPX, FPY):
        if tag in exif:
            out[tag] = exif[tag].rationals()[0]
    return out


def _mark(stored: np.ndarray, x: int, y: int) -> None:
    """A 3 x 1 rectangle of 200 centred on (x, y), whose centre is 255."""
    stored[y, x - 1 : x + 2] = 200
    stored[y, x] = 255


def _check_marks(px: np.ndarray, area: tuple, location: tuple) -> None:
    """The point lands on the marker's centre; the rectangle is exactly the marked pixels."""
    assert px[location[1], location[0]] == 255 and (px == 255).sum() == 1
    cx, cy, w, h = area
    ys, xs = np.nonzero(px >= 200)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (cx - (w - 1) // 2, cx + w // 2, cy - (h - 1) // 2, cy + h // 2)


# ------------------------------------------------------------------------------------------ the mapping itself


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_point_goes_where_its_pixel_goes(orientation, scale):
    h, w = 5, 7
    frame = PixelFrame(orientation, scale)
    for y in range(h):
        for x in range(w):
            stored = np.zeros((h, w), np.uint8)
            stored[y, x] = 1
            shown = upright(stored, orientation).repeat(scale, 0).repeat(scale, 1)
            ys, xs = np.nonzero(shown)
            px, py = frame.point(x, y, w, h)
            assert shown[py, px] == 1
            assert (px, py) == (xs.min() + (scale - 1) // 2, ys.min() + (scale - 1) // 2)  # the block's middle
    assert frame.source_size(*shown.shape[1::-1]) == (w, h)
    assert frame.extent(3, 2) == ((2 * scale, 3 * scale) if orientation >= 5 else (3 * scale, 2 * scale))


def _ifd(exif: dict[int, T.Entry], ifd0: dict[int, T.Entry] | None = None) -> T.Ifd:
    return T.Ifd(dict(ifd0 or {}), {T.EXIF_IFD: T.Ifd(dict(exif))})


def _shorts(tag, *values):
    return T.Entry(tag, T.SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def test_orientation_6_rectangle_circle_and_focal_plane_enlarged_twice():
    # stored 60 x 40; turned by 6 the upright photo is 40 x 60, enlarged x2: 80 x 120
    ifd = _ifd({AREA: _shorts(AREA, 10, 5, 8, 4), LOCATION: _shorts(LOCATION, 3, 7),
                FPX: T.rational_entry(FPX, 4000, 3), FPY: T.rational_entry(FPY, 5000, 1)},
               {0x9214: _shorts(0x9214, 10, 5, 9), 0x920E: T.rational_entry(0x920E, 7, 1)})  # TIFF/EP in IFD0
    notes: list[str] = []
    map_exif(ifd, PixelFrame(6, 2), 80, 120, notes)
    exif = ifd.children[T.EXIF_IFD].entries
    assert exif[AREA].ints() == (68, 20, 8, 16)  # (39 - 5, 10) x 2; width and height swapped, x 2
    assert exif[AREA].type == T.SHORT
    assert exif[LOCATION].ints() == (64, 6)
    assert exif[FPX].rationals() == ((10000, 1),) and exif[FPY].rationals() == ((8000, 3),)
    assert ifd.entries[0x9214].ints() == (68, 20, 18)  # a circle: its diameter doubles
    assert 0x920E not in ifd.entries and ifd.entries[0x920F].rationals() == ((14, 1),)
    assert notes == []


def test_identity_carries_everything_as_it_is():
    entries = {AREA: _shorts(AREA, 500, 500, 1, 2, 3), FPX: T.rational_entry(FPX, 1, 0)}  # nonsense, but the scan's
    ifd = _ifd(entries)
    notes: list[str] = []
    map_exif(ifd, PixelFrame(), 10, 10, notes)
    assert ifd.children[T.EXIF_IFD].entries == entries and notes == []


@pytest.mark.parametrize("entry, why", [
    (_shorts(AREA, 1, 2, 3, 4, 5), "5 value(s), not 2 to 4"),
    (_shorts(AREA, 60, 5), "(60, 5) lies outside the 60 x 40 pixels"),
    (_shorts(LOCATION, 3, 7, 1), "3 value(s), not 2"),
    (T.Entry(AREA, T.RATIONAL, 1, struct.pack("<II", 1, 2)), "type 5, not SHORT or LONG"),
    (T.Entry(FPX, T.SHORT, 1, b"\x01\x00"), "type 3 with 1 value(s), not one RATIONAL"),
    (T.rational_entry(FPY, 3, 0), "3/0 is no number"),
])
def test_malformed_or_misplaced_values_are_dropped_with_a_note(entry, why):
    ifd = _ifd({entry.tag: entry})
    notes: list[str] = []
    map_exif(ifd, PixelFrame(3), 60, 40, notes)
    assert ifd.children[T.EXIF_IFD].entries == {}
    assert len(notes) == 1 and notes[0].startswith("EXIF ") and why in notes[0]


def test_a_value_that_outgrows_its_field_is_dropped_and_a_rational_reduced_when_it_must():
    ifd = _ifd({AREA: _shorts(AREA, 20000, 10), LOCATION: T.Entry(LOCATION, T.LONG, 2, struct.pack("<II", 20000, 10)),
                FPX: T.rational_entry(FPX, 3_000_000_000, 4), FPY: T.rational_entry(FPY, 4_000_000_001, 3)})
    notes: list[str] = []
    map_exif(ifd, PixelFrame(1, 4), 4 * 30000, 4 * 20, notes)
    exif = ifd.children[T.EXIF_IFD].entries
    assert AREA not in exif and exif[LOCATION].ints() == (80001, 41)  # a LONG holds it
    assert exif[FPX].rationals() == ((3_000_000_000, 1),)  # 3e9 x 4 / 4, reduced: exact
    assert FPY not in exif
    assert sorted(notes) == ["EXIF FocalPlaneYResolution dropped: 4000000001/3 x4 does not fit a TIFF rational",
                             "EXIF SubjectArea dropped: 80001 does not fit its 16-bit field once enlarged x4"]


# ------------------------------------------------------------------------------------------ read -> write, real files


@pytest.mark.parametrize("src_fmt, order", [("PNG", "<"), ("TIFF", ">"), ("TIFF", "<")])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_marker_at_the_subject_is_where_the_written_values_say(tmp_path, orientation, src_fmt, order):
    h, w, x, y = 6, 9, 2, 1
    stored = np.zeros((h, w), np.uint8)
    _mark(stored, x, y)
    exif = [short(AREA, x, y, 3, 1), short(LOCATION, x, y), rational(FPX, (300, 1)), rational(FPY, (200, 1))]
    src = tmp_path / f"src.{EXT[src_fmt]}"
    if src_fmt == "PNG":
        Image.fromarray(stored).save(src, exif=b"Exif\0\0" + _exif_block(order, orientation, exif))
    else:
        strip_tags = [short(256, w), short(257, h), short(258, 8), short(259, 1), short(262, 1), short(277, 1),
                      short(278, h), short(274, orientation)]
        src.write_bytes(tiff_structure(order, strip_tags, exif, strip=stored.tobytes()))
    pic = read(src, 10_000)
    assert pic.orientation == orientation and pic.meta.frame == PixelFrame(orientation)
    for fmt in ("PNG", "TIFF"):
        out = tmp_path / f"out.{EXT[fmt]}"
        assert write(out, pic.pixels, None, fmt, pic.meta) == []
        back = read(out, 10_000)
        values = _written(out)
        _check_marks(back.pixels[..., 0], values[AREA], values[LOCATION])
        turned = orientation >= 5
        assert (values[FPX], values[FPY]) == (((200, 1), (300, 1)) if turned else ((300, 1), (200, 1)))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_every_output_format_gets_the_mapped_values(tmp_path, fmt):
    exif = _exif_block("<", 8, [short(AREA, 10, 5, 8, 4), rational(FPX, (4000, 3))])
    meta = Metadata(exif=exif, frame=PixelFrame(8, 2))
    notes = write(tmp_path / f"o.{EXT[fmt]}", np.zeros((120, 80, 3), np.uint8), None, fmt, meta)
    assert notes == []
    # stored 60 x 40; orientation 8: (x, y) -> (y, 59 - x)
    assert _written(tmp_path / f"o.{EXT[fmt]}") == {AREA: (10, 98, 8, 16), FPY: (8000, 3)}


# ------------------------------------------------------------------------------------------ XMP copies


def _xmp(body: str) -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF_NS}"><rdf:Description rdf:about="" '
            f'xmlns:exif="{EXIF_NS}" xmlns:dc="http://purl.org/dc/elements/1.1/" {body}</rdf:Description>'
            '</rdf:RDF></x:xmpmeta>').encode()


def _seq(name: str, *values) -> str:
    return f"<exif:{name}><rdf:Seq>" + "".join(f"<rdf:li>{v}</rdf:li>" for v in values) + f"</rdf:Seq></exif:{name}>"


def _xmp_values(packet: bytes) -> dict[str, object]:
    d = ET.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", packet).strip()).find(f".//{{{RDF_NS}}}Description")
    out: dict[str, object] = {}
    for name in ("SubjectArea", "SubjectLocation"):
        el = d.find(f"{{{EXIF_NS}}}{name}")
        if el is not None:
            out[name] = tuple(int(li.text) for li in el.iter(f"{{{RDF_NS}}}li"))
    for name in ("FocalPlaneXResolution", "FocalPlaneYResolution"):
        q = f"{{{EXIF_NS}}}{name}"
        if q in d.attrib:
            out[name] = d.attrib[q]
        elif d.find(q) is not None:
            out[name] = d.find(q).text
    out["title"] = d.findtext("{http://purl.org/dc/elements/1.1/}title")
    return out


def test_xmp_copies_agree_with_the_exif_written(tmp_path):
    # the XMP's SubjectArea is a stale point where EXIF has the rectangle: the EXIF written wins
    packet = _xmp(f'exif:FocalPlaneXResolution="4000/3">{_seq("SubjectArea", 10, 5)}'
                  '<exif:FocalPlaneYResolution>5000/1</exif:FocalPlaneYResolution><dc:title>Picnic</dc:title>')
    exif = _exif_block(">", 6, [short(AREA, 10, 5, 8, 4), rational(FPX, (4000, 3)), rational(FPY, (5000, 1))])
    src = tmp_path / "src.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(src, exif=b"Exif\0\0" + exif, xmp=packet)
    pic = read(src, 100_000)
    meta = dataclasses.replace(pic.meta, frame=PixelFrame(6, 2))
    for fmt in ("JPEG", "PNG", "TIFF"):
        out = tmp_path / f"o.{EXT[fmt]}"
        assert write(out, np.zeros((120, 80, 3), np.uint8), None, fmt, meta) == []
        assert _written(out) == {AREA: (68, 20, 8, 16), FPX: (10000, 1), FPY: (8000, 3)}
        assert _xmp_values(read(out, 100_000).meta.xmp) == {
            "SubjectArea": (68, 20, 8, 16), "FocalPlaneXResolution": "10000/1", "FocalPlaneYResolution": "8000/3",
            "title": "Picnic"}


def test_xmp_copies_without_exif_are_mapped_on_their_own():
    packet = _xmp(f'exif:FocalPlaneYResolution="300/1">{_seq("SubjectLocation", 3, 7)}{_seq("SubjectArea", 10, 5, 9)}')
    notes: list[str] = []
    out = map_xmp(packet, PixelFrame(6, 2), T.Ifd(), 80, 120, notes)
    assert _xmp_values(out) == {"SubjectLocation": (64, 6), "SubjectArea": (68, 20, 18),
                                "FocalPlaneXResolution": "600/1", "title": None}
    assert notes == []


def test_malformed_xmp_copies_are_dropped_with_a_note():
    packet = _xmp(f'exif:FocalPlaneXResolution="wide">{_seq("SubjectArea", 1, 2, 3, 4, 5)}'
                  '<exif:SubjectLocation>3, 7</exif:SubjectLocation><dc:title>Kept</dc:title>')
    notes: list[str] = []
    out = map_xmp(packet, PixelFrame(2), T.Ifd(), 60, 40, notes)
    assert _xmp_values(out) == {"title": "Kept"}
    assert sorted(notes) == ["XMP exif:FocalPlaneXResolution dropped: 'wide' is not a rational",
                             "XMP exif:SubjectArea dropped: 5 value(s), not 2 to 4",
                             "XMP exif:SubjectLocation dropped: not an rdf:Seq"]


def test_a_packet_without_them_or_an_upright_source_is_left_byte_for_byte():
    plain = _xmp("><dc:title>Picnic</dc:title>")
    with_area = _xmp(f">{_seq('SubjectArea', 1, 2)}")
    assert map_xmp(plain, PixelFrame(6, 2), T.Ifd(), 80, 120, []) is plain
    assert map_xmp(with_area, PixelFrame(), T.Ifd(), 80, 120, []) is with_area


# ---------------------------------------------------------------------------------- Interop: RelatedImageWidth/Length


def _related(width: int, length: int, typ: int = T.SHORT) -> T.Ifd:
    fmt = "<H" if typ == T.SHORT else "<I"
    interop = T.Ifd({0x1001: T.Entry(0x1001, typ, 1, struct.pack(fmt, width)),
                     0x1002: T.Entry(0x1002, typ, 1, struct.pack(fmt, length))})
    return T.Ifd({}, {T.EXIF_IFD: T.Ifd({}, {T.INTEROP_IFD: interop})})


@pytest.mark.parametrize("given, written", [
    ((60, 40), (80, 120)),  # the stored size, as cameras write it
    ((40, 60), (80, 120)),  # the size as shown
    ((3000, 2000), (3000, 2000)),  # another file's: carried
])
def test_related_image_size_follows_when_it_was_the_image(given, written):
    ifd = _related(*given)
    map_exif(ifd, PixelFrame(6, 2), 80, 120, [])
    interop = ifd.children[T.EXIF_IFD].children[T.INTEROP_IFD].entries
    assert (interop[0x1001].ints()[0], interop[0x1002].ints()[0]) == written


def test_related_image_size_beyond_16_bits_is_written_as_long():
    ifd = _related(20000, 10000, T.LONG)
    map_exif(ifd, PixelFrame(1, 4), 80000, 40000, [])
    interop = ifd.children[T.EXIF_IFD].children[T.INTEROP_IFD].entries
    assert interop[0x1001].type == T.LONG and interop[0x1001].ints() == (80000,) and interop[0x1002].ints() == (40000,)
