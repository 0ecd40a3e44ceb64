"""EXIF values given in the source's pixel grid, and their XMP copies, mapped onto a derivative's pixels.

The derivative's pixels are the source's stored pixels turned upright from their EXIF orientation, then enlarged
(PixelFrame). These values follow them:
  SubjectArea (EXIF 0x9214; TIFF/EP SubjectLocation, the same tag in IFD0): 2 values, a point (x, y); 3, a circle
      (centre x, y, diameter); 4, a rectangle (centre x, y, width, height). SubjectLocation (EXIF 0xA214): a point.
      The point or centre is a pixel's column and row: it goes where that pixel went, and to the middle (rounded
      towards the origin) of the block it became when enlarged; a diameter, width or height is multiplied, width and
      height swapping under orientations 5-8.
  FocalPlaneX/YResolution (EXIF 0xA20E/0xA20F, TIFF/EP 0x920E/0x920F in IFD0): image pixels per unit of the focal
      plane, along the stored rows (X) and columns (Y): swapped under 5-8, multiplied by the enlargement, exactly.
  RelatedImageWidth/Length (Interop 0x1001/0x1002): the image's own size there (as cameras write it, stored or as
      shown) becomes the derivative's; another size names another file and is carried.
A value that is malformed (type, count), lies outside the source's pixels or does not fit its field once mapped is
dropped with a note. The XMP copies (exif:SubjectArea, exif:SubjectLocation, exif:FocalPlaneX/YResolution) take the
value the EXIF written holds, else their own mapped alike; the packet's face and person regions and Camera Raw crop
follow too (xmp_regions). Offsets inside maker notes cannot be known: they stay as they are.
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction

from ..errors import XmpError
from . import tiff_ifd as T
from . import xmp_regions, xmp_tree

SUBJECT_AREA, SUBJECT_LOCATION = 0x9214, 0xA214
FOCAL_PLANE_X, FOCAL_PLANE_Y = 0xA20E, 0xA20F
EP_FOCAL_PLANE_X, EP_FOCAL_PLANE_Y = 0x920E, 0x920F  # TIFF/EP, IFD0 (its SubjectLocation is 0x9214 there)
RELATED_WIDTH, RELATED_LENGTH = 0x1001, 0x1002  # Interop directory (DCF)
_IFD0 = 0  # key of IFD0 among the directories below (the others are keyed by their pointer tag)
# directory -> (tags of an area, tags of a point, focal plane X and Y tags)
_TAGS = {_IFD0: ((SUBJECT_AREA,), (), (EP_FOCAL_PLANE_X, EP_FOCAL_PLANE_Y)),
         T.EXIF_IFD: ((SUBJECT_AREA,), (SUBJECT_LOCATION,), (FOCAL_PLANE_X, FOCAL_PLANE_Y))}
_NAMES = {SUBJECT_AREA: "SubjectArea", SUBJECT_LOCATION: "SubjectLocation", FOCAL_PLANE_X: "FocalPlaneXResolution",
          FOCAL_PLANE_Y: "FocalPlaneYResolution", EP_FOCAL_PLANE_X: "FocalPlaneXResolution",
          EP_FOCAL_PLANE_Y: "FocalPlaneYResolution"}
_TOP = {T.SHORT: 0xFFFF, T.LONG: 0xFFFFFFFF}
_EXIF_NS = "http://ns.adobe.com/exif/1.0/"
_RDF = xmp_tree.RDF_NS
_XMP_NAMES = ("SubjectArea", "SubjectLocation", "FocalPlaneXResolution", "FocalPlaneYResolution")


@dataclass(frozen=True)
class PixelFrame:
    """How the pixels written relate to the pixels the source's EXIF and XMP values were given for: turned upright
    from EXIF `orientation` (1-8), then enlarged `scale` times."""

    orientation: int = 1
    scale: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.orientation <= 8 or self.scale < 1:
            raise ValueError(f"orientation must be 1-8 and scale at least 1, got {self.orientation}, {self.scale}")

    @property
    def identity(self) -> bool:
        return self.orientation == 1 and self.scale == 1

    @property
    def turns(self) -> bool:
        """Orientations 5-8 exchange rows and columns."""
        return self.orientation >= 5

    def source_size(self, width: int, height: int) -> tuple[int, int]:
        """The source's stored (width, height) for a derivative of `width` x `height`."""
        if width % self.scale or height % self.scale:
            raise ValueError(f"{width} x {height} pixels are not an enlargement x{self.scale}")
        w, h = width // self.scale, height // self.scale
        return (h, w) if self.turns else (w, h)

    def point(self, x: int, y: int, width: int, height: int) -> tuple[int, int]:
        """Where the source's pixel (column x, row y) of a `width` x `height` stored image lands; (x, y) must lie in
        it. Enlarged, the middle of its block (rounded towards the origin)."""
        w1, h1 = width - 1, height - 1
        x, y = {1: (x, y), 2: (w1 - x, y), 3: (w1 - x, h1 - y), 4: (x, h1 - y), 5: (y, x), 6: (h1 - y, x),
                7: (h1 - y, w1 - x), 8: (y, w1 - x)}[self.orientation]
        s = self.scale
        return s * x + (s - 1) // 2, s * y + (s - 1) // 2

    def extent(self, w: int, h: int) -> tuple[int, int]:
        """A width and height (in the source's pixels) in the derivative's."""
        return (h * self.scale, w * self.scale) if self.turns else (w * self.scale, h * self.scale)


class _Unfit(ValueError):
    """A value that cannot be mapped: the reason, for the note."""


def map_area(values: tuple[int, ...], frame: PixelFrame, width: int, height: int,
             point_only: bool = False) -> tuple[int, ...]:
    """A SubjectArea (2, 3 or 4 values; 2 with point_only) of a `width` x `height` stored source, for the
    derivative; _Unfit when the count is wrong or the point lies outside the source."""
    if len(values) not in ((2,) if point_only else (2, 3, 4)):
        raise _Unfit(f"{len(values)} value(s), not {'2' if point_only else '2 to 4'}")
    x, y = values[:2]
    if not (0 <= x < width and 0 <= y < height):
        raise _Unfit(f"({x}, {y}) lies outside the {width} x {height} pixels it was given for")
    out = frame.point(x, y, width, height)
    if len(values) == 3:
        return (*out, values[2] * frame.scale)
    if len(values) == 4:
        return (*out, *frame.extent(values[2], values[3]))
    return out


def map_resolution(value: tuple[int, int], scale: int) -> tuple[int, int]:
    """A focal-plane resolution (num, den) times `scale`, exact: reduced only when the numerator would not fit."""
    num, den = value
    if den == 0:
        raise _Unfit(f"{num}/{den} is no number")
    if num * scale <= 0xFFFFFFFF:
        return num * scale, den
    f = Fraction(num * scale, den)
    if max(f.numerator, f.denominator) > 0xFFFFFFFF:
        raise _Unfit(f"{num}/{den} x{scale} does not fit a TIFF rational")
    return f.numerator, f.denominator


def map_exif(ifd0: T.Ifd, frame: PixelFrame, width: int, height: int, notes: list[str]) -> None:
    """Map the values of IFD0 (TIFF/EP) and its Exif directory in place for an upright `width` x `height`
    derivative; what cannot be mapped is dropped, with a note."""
    if frame.identity:
        return
    sw, sh = frame.source_size(width, height)
    for key, (areas, points, (fx, fy)) in _TAGS.items():
        ifd = ifd0 if key == _IFD0 else ifd0.children.get(key)
        if ifd is None:
            continue
        for tag in areas + points:
            e = ifd.entries.get(tag)
            if e is None:
                continue
            try:
                if e.type not in _TOP:
                    raise _Unfit(f"type {e.type}, not SHORT or LONG")
                values = map_area(e.ints(), frame, sw, sh, point_only=tag in points)
                if max(values) > _TOP[e.type]:
                    raise _Unfit(f"{max(values)} does not fit its {'16' if e.type == T.SHORT else '32'}-bit field "
                                 f"once enlarged x{frame.scale}")
            except _Unfit as why:
                del ifd.entries[tag]
                notes.append(f"EXIF {_NAMES[tag]} dropped: {why}")
                continue
            fmt = "<" + ("H" if e.type == T.SHORT else "I") * len(values)
            ifd.entries[tag] = T.Entry(tag, e.type, len(values), struct.pack(fmt, *values))
        pair = {tag: ifd.entries.pop(tag) for tag in (fx, fy) if tag in ifd.entries}
        for tag, e in pair.items():
            new = {fx: fy, fy: fx}[tag] if frame.turns else tag
            try:
                if e.type != T.RATIONAL or e.count != 1:
                    raise _Unfit(f"type {e.type} with {e.count} value(s), not one RATIONAL")
                ifd.entries[new] = T.rational_entry(new, *map_resolution(e.rationals()[0], frame.scale))
            except _Unfit as why:
                notes.append(f"EXIF {_NAMES[tag]} dropped: {why}")
    exif = ifd0.children.get(T.EXIF_IFD)
    interop = None if exif is None else exif.children.get(T.INTEROP_IFD)
    if interop is not None:
        _map_related_size(interop, frame, sw, sh, width, height)


def _map_related_size(interop: T.Ifd, frame: PixelFrame, sw: int, sh: int, width: int, height: int) -> None:
    """RelatedImageWidth/Length: cameras give the image's own size there (stored, or as shown), which becomes the
    derivative's, as PixelX/YDimension do; a size that is not the image's names another file (DCF's related image,
    whose format RelatedImageFileFormat gives), unchanged by oldphoto: carried as it is."""
    pair = [interop.entries.get(t) for t in (RELATED_WIDTH, RELATED_LENGTH)]
    if any(e is None or e.type not in _TOP or e.count != 1 for e in pair):
        return
    shown = (sh, sw) if frame.turns else (sw, sh)
    if (pair[0].ints()[0], pair[1].ints()[0]) in ((sw, sh), shown):
        interop.entries[RELATED_WIDTH] = T.int_entry(RELATED_WIDTH, width)
        interop.entries[RELATED_LENGTH] = T.int_entry(RELATED_LENGTH, height)


def _exif_values(ifd0: T.Ifd) -> dict[str, str | list[str]]:
    """The written Exif directory's values of the XMP properties, as XMP text."""
    exif = ifd0.children.get(T.EXIF_IFD)
    out: dict[str, str | list[str]] = {}
    if exif is None:
        return out
    for tag in (SUBJECT_AREA, SUBJECT_LOCATION):
        if tag in exif.entries:
            out[_NAMES[tag]] = [str(v) for v in exif.entries[tag].ints()]
    for tag in (FOCAL_PLANE_X, FOCAL_PLANE_Y):
        if tag in exif.entries:
            num, den = exif.entries[tag].rationals()[0]
            out[_NAMES[tag]] = f"{num}/{den}"
    return out


def map_xmp(packet: bytes, frame: PixelFrame, ifd0: T.Ifd, width: int, height: int, notes: list[str]) -> bytes:
    """The XMP packet with its exif:SubjectArea, exif:SubjectLocation and exif:FocalPlaneX/YResolution for the
    derivative: the value `ifd0` (the EXIF written) holds, else their own mapped as map_exif maps EXIF; dropped with
    a note when that fails. Its face and person regions and a Camera Raw crop likewise (xmp_regions). The packet
    comes back as it is when nothing in it changes."""
    if frame.identity or not xmp_tree.names_any(packet, _XMP_NAMES + xmp_regions.NAMESPACES):
        return packet
    try:
        root, prefixes = xmp_tree.parse(packet, "XMP")
    except XmpError as e:
        notes.append("XMP values in the scan's pixels (SubjectArea, SubjectLocation, FocalPlane resolutions, regions, "
                     f"Camera Raw crop) left as in the source: {e.reason}")
        return packet
    written = _exif_values(ifd0)
    sw, sh = frame.source_size(width, height)
    changed = False
    for d in root.iter(f"{{{_RDF}}}Description"):
        # every occurrence first: a focal-plane resolution renamed X -> Y must not be met again as a Y
        found: list[tuple[str, ET.Element | None, str]] = []
        for local in _XMP_NAMES:
            name = _q(local)
            if name in d.attrib:
                found.append((local, None, d.attrib.pop(name)))
            found += [(local, c, "") for c in d if c.tag == name]
        for local, el, text in found:
            changed = True
            try:
                _map_property(d, el, text, local, frame, written, sw, sh)
            except _Unfit as why:
                if el is not None:
                    d.remove(el)
                notes.append(f"XMP exif:{local} dropped: {why}")
    changed |= xmp_regions.map_regions(root, frame, width, height, notes)
    if not changed:
        return packet
    return xmp_tree.wrap(xmp_tree.serialize(root, prefixes))


def _q(local: str) -> str:
    return f"{{{_EXIF_NS}}}{local}"


def _map_property(d: ET.Element, el: ET.Element | None, text: str, local: str, frame: PixelFrame, written: dict,
                  sw: int, sh: int) -> None:
    """Map one occurrence of a property of `d`: the element `el`, or with None the attribute whose value was `text`
    (taken off `d`: set again here once mapped)."""
    if local.startswith("FocalPlane"):
        new = local
        if frame.turns:
            new = "FocalPlaneYResolution" if local == "FocalPlaneXResolution" else "FocalPlaneXResolution"
        value = written.get(new)
        if value is None:
            value = "{}/{}".format(*map_resolution(_xmp_rational(text if el is None else el.text or ""), frame.scale))
        if el is None:
            d.attrib[_q(new)] = value
        else:
            el.tag, el.text = _q(new), value
        return
    seq = None if el is None else el.find(f"{{{_RDF}}}Seq")
    if seq is None:
        raise _Unfit("not an rdf:Seq")
    items = seq.findall(f"{{{_RDF}}}li")
    value = written.get(local)
    if value is None:
        try:
            numbers = tuple(int((li.text or "").strip()) for li in items)
        except ValueError as e:
            raise _Unfit(f"not integers ({e})") from e
        value = [str(v) for v in map_area(numbers, frame, sw, sh, point_only=local == "SubjectLocation")]
    for li in items[len(value):]:
        seq.remove(li)
    for i, text in enumerate(value):
        if i < len(items):
            items[i].text = text
        else:
            ET.SubElement(seq, f"{{{_RDF}}}li").text = text


def _xmp_rational(text: str) -> tuple[int, int]:
    """An XMP Rational "num/den" (or a whole number)."""
    num, _, den = text.strip().partition("/")
    try:
        value = (int(num), int(den) if den else 1)
    except ValueError as e:
        raise _Unfit(f"{text!r} is not a rational") from e
    if value[0] < 0 or value[1] <= 0:
        raise _Unfit(f"{text!r} is not a positive rational")
    return value
