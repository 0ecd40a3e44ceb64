"""XMP areas given in the source's stored pixels (face and person regions, a Camera Raw crop), mapped onto a
derivative's pixels: turned upright from the source's EXIF orientation, then enlarged (pixel_tags.PixelFrame).

Which pixels each convention is given in:
  MWG regions (mwg-rs:Regions; Picasa, Lightroom, digiKam, Photo Mechanic): the Metadata Working Group's Guidelines
      for Handling Image Metadata 2.0 (2010), 5.9 Image Region Metadata: region metadata is applied to the image
      stored; a viewer applying the Exif Orientation must turn the regions with it, else they miss their areas.
      stArea x, y is the centre, w, h (or d, a circle's diameter) the size, `normalized` (fractions of the width and
      height) or `pixel`; AppliedToDimensions is the (stored) image's size in pixels the regions were applied to.
      A region's mwg-rs:Rotation (an angle ExifTool knows beside the guidelines' fields) changes sign when mirrored.
      Immich (pull request 18021) and PiGallery2 turn imported regions by the orientation for this reason.
  Microsoft People Tagging (MP:RegionInfo/MPRI:Regions, MPReg:Rectangle "x, y, w, h": top-left corner and size,
      fractions of the width and height; Windows Live Photo Gallery): Microsoft's People Tagging Overview does not
      speak of orientation; ExifTool's convert_regions.config converts it to and from MWG's areas unturned (x - w/2)
      and digiKam writes both alike, so it is taken in MWG's frame, the stored image.
  IPTC Extension image regions (Iptc4xmpExt:ImageRegion/RegionBoundary, Photo Metadata Standard 2019.1 on: rbShape
      rectangle (rbX, rbY top-left, rbW, rbH), circle (rbX, rbY centre, rbRx radius) or polygon (rbVertices), rbUnit
      `relative` (fractions of the width and height; a radius, of the width) or `pixel`): the standard gives no
      frame but the image's; its user guide maps Exif SubjectArea (stored pixels) onto a region unchanged, and
      Photini draws the regions on the stored pixels and turns them with the view: the stored image, like MWG.
So all three are mapped through the orientation, then the enlargement (pixel values only: fractions do not change
with the size); coordinates are continuous (a rectangle x, w covers x to x + w), so a mirrored x becomes width - x.
A normalized MWG diameter is taken as a fraction of the width, as IPTC's relative radius is. AppliedToDimensions
becomes the derivative's size. A region that cannot be mapped (a value missing or not a number, an unknown unit or
shape) is dropped with a note, the rest of its list kept; a list whose AppliedToDimensions cannot be read is
dropped whole (its pixel values have no frame).

Camera Raw's crop (crs:HasCrop, crs:CropTop/Left/Bottom/Right/Angle ...) is a develop setting given relative to the
unrotated image; Lightroom and Camera Raw apply it to JPEG and TIFF files too. Turned upright, the derivative's
pixels no longer match it, and its angle's geometry (which depends on the aspect ratio) is not published: it is
dropped with a note when an orientation was applied. An enlargement alone leaves its fractions valid: kept.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from . import xmp_tree

if TYPE_CHECKING:  # pixel_tags calls this module
    from .pixel_tags import PixelFrame

MWG_RS = "http://www.metadataworkinggroup.com/schemas/regions/"
ST_AREA = "http://ns.adobe.com/xmp/sType/Area#"
ST_DIM = "http://ns.adobe.com/xap/1.0/sType/Dimensions#"
MP = "http://ns.microsoft.com/photo/1.2/"
MPRI = "http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
MPREG = "http://ns.microsoft.com/photo/1.2/t/Region#"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
CRS = "http://ns.adobe.com/camera-raw-settings/1.0/"
NAMESPACES = (MWG_RS, MP, IPTC_EXT, CRS)  # a packet naming none holds no region nor crop: left unparsed
_RDF = xmp_tree.RDF_NS
_DESCRIPTION, _LI = f"{{{_RDF}}}Description", f"{{{_RDF}}}li"
_ARRAYS = tuple(f"{{{_RDF}}}{a}" for a in ("Bag", "Seq", "Alt"))
_MIRRORS = (2, 4, 5, 7)  # the orientations that mirror the image (the others only turn it)


class _Bad(ValueError):
    """A region that cannot be mapped: the reason, for the note."""


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


class _Struct:
    """An XMP struct in RDF/XML: its fields are attributes or child elements of the property element (or rdf:li),
    or of the rdf:Description it holds (rdf:parseType="Resource" puts them on the element itself)."""

    def __init__(self, el: ET.Element):
        self.holders = [el]
        d = el.find(_DESCRIPTION)
        if d is not None:
            self.holders.append(d)

    def element(self, name: str) -> ET.Element | None:
        for h in self.holders:
            for c in h:
                if c.tag == name:
                    return c
        return None

    def text(self, name: str) -> str | None:
        for h in self.holders:
            if name in h.attrib:
                return h.attrib[name]
        el = self.element(name)
        return None if el is None else (el.text or "")

    def set(self, name: str, value: str) -> None:
        """Give an existing field `value`, where it is."""
        for h in self.holders:
            if name in h.attrib:
                h.attrib[name] = value
                return
        el = self.element(name)
        if el is None:
            raise KeyError(name)
        el.text = value


def _items(el: ET.Element, what: str) -> tuple[ET.Element, list[ET.Element]]:
    """(the rdf:Bag/Seq/Alt of an array property, its rdf:li items)."""
    for c in el:
        if c.tag in _ARRAYS:
            return c, c.findall(_LI)
    raise _Bad(f"{what} is not an RDF array")


# an XMP Real: a decimal, with an exponent short enough that the exact value stays small (1e999999999 would not)
_REAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")


def _number(value: str | None, name: str) -> Fraction:
    if value is None:
        raise _Bad(f"it has no {name}")
    if not _REAL.fullmatch(value.strip()):
        raise _Bad(f"{name} {value!r} is not a number")
    return Fraction(value.strip())


def _size(value: str | None, name: str) -> Fraction:
    n = _number(value, name)
    if n < 0:
        raise _Bad(f"{name} {value!r} is negative")
    return n


def _text(n: Fraction) -> str:
    """A number as XMP Real text: exact when it ends within 12 decimals, else rounded to 12."""
    q = round(n * 10**12)
    whole, part = divmod(abs(q), 10**12)
    decimals = f"{part:012d}".rstrip("0")
    return ("-" if q < 0 else "") + str(whole) + (f".{decimals}" if decimals else "")


@dataclass(frozen=True)
class _Grid:
    """The unit a region's values are in: the source's stored image is `width` x `height` of it, the derivative
    `out_w` x `out_h`; `aspect` is the source's width / height (a relative radius is a fraction of the width)."""

    frame: PixelFrame
    width: Fraction
    height: Fraction
    out_w: Fraction
    out_h: Fraction
    aspect: Fraction
    relative: bool

    @property
    def _factors(self) -> tuple[Fraction, Fraction]:
        turned_w, turned_h = (self.height, self.width) if self.frame.turns else (self.width, self.height)
        return self.out_w / turned_w, self.out_h / turned_h

    def point(self, x: Fraction, y: Fraction) -> tuple[Fraction, Fraction]:
        w, h = self.width, self.height
        x, y = {1: (x, y), 2: (w - x, y), 3: (w - x, h - y), 4: (x, h - y), 5: (y, x), 6: (h - y, x),
                7: (h - y, w - x), 8: (y, w - x)}[self.frame.orientation]
        fx, fy = self._factors
        return x * fx, y * fy

    def extent(self, w: Fraction, h: Fraction) -> tuple[Fraction, Fraction]:
        fx, fy = self._factors
        return (h * fx, w * fy) if self.frame.turns else (w * fx, h * fy)

    def box(self, x: Fraction, y: Fraction, w: Fraction, h: Fraction) -> tuple[Fraction, ...]:
        """A rectangle by its top-left corner and size: the corner the old one's opposite corners make."""
        (x0, y0), (x1, y1) = self.point(x, y), self.point(x + w, y + h)
        return (min(x0, x1), min(y0, y1), *self.extent(w, h))

    def along_width(self, r: Fraction) -> Fraction:
        """A radius or diameter measured in units of the width."""
        if self.relative:
            return r * self.aspect if self.frame.turns else r
        return r * self._factors[0]


def _update(s: _Struct, values: dict[str, Fraction]) -> bool:
    """Write the fields whose value changed (the others keep their text); True when any did."""
    changed = False
    for name, value in values.items():
        old = s.text(name)
        if old is None or _number(old, name) != value:  # old was read (and checked) before
            s.set(name, _text(value))
            changed = True
    return changed


class _Mapper:
    def __init__(self, root: ET.Element, frame: PixelFrame, width: int, height: int, notes: list[str]):
        self.root, self.frame, self.notes = root, frame, notes
        self.out_w, self.out_h = Fraction(width), Fraction(height)
        sw, sh = frame.source_size(width, height)
        self.source = (Fraction(sw), Fraction(sh))
        self.parents = {c: p for p in root.iter() for c in p}
        self.changed = False

    def grid(self, relative: bool, size: tuple[Fraction, Fraction] | None = None) -> _Grid:
        aspect = self.source[0] / self.source[1]
        if relative:
            return _Grid(self.frame, Fraction(1), Fraction(1), Fraction(1), Fraction(1), aspect, True)
        w, h = size or self.source
        return _Grid(self.frame, w, h, self.out_w, self.out_h, aspect, False)

    def remove(self, el: ET.Element) -> None:
        self.parents[el].remove(el)
        self.changed = True

    def region_list(self, prop: ET.Element, array: ET.Element, what: str,
                    label: str) -> tuple[ET.Element, list[ET.Element]] | None:
        """The container and items of a region list; None, the property dropped with a note, when it is no array."""
        try:
            return _items(array, what)
        except _Bad as why:
            self.remove(prop)
            self.notes.append(f"XMP {label} dropped: {why}")
            return None

    def each_region(self, prop: ET.Element, container: ET.Element, items: list[ET.Element], kind: str,
                    label, map_one) -> bool:
        """Map every item of a region list; drop those that cannot be, with a note, and the property when none is
        left (then False)."""
        kept = 0
        for i, li in enumerate(items, 1):
            try:
                self.changed |= map_one(_Struct(li))
                kept += 1
            except _Bad as why:
                container.remove(li)
                self.changed = True
                self.notes.append(f"XMP {kind} {label(_Struct(li), i)} dropped: {why}")
        if items and not kept:
            self.remove(prop)
            return False
        return True

    # ---------------------------------------------------------------------------------------------- MWG

    def mwg(self, prop: ET.Element) -> None:
        s = _Struct(prop)
        dims_el = s.element(_q(MWG_RS, "AppliedToDimensions"))
        try:
            applied = None if dims_el is None else self._applied(_Struct(dims_el))
            listed = s.element(_q(MWG_RS, "RegionList"))
            container, items = (None, []) if listed is None else _items(listed, "RegionList")
        except _Bad as why:
            self.remove(prop)
            self.notes.append(f"XMP MWG regions (mwg-rs:Regions) dropped: {why}")
            return
        pixels = self.grid(False, applied)
        relative = self.grid(True)

        def map_one(region: _Struct) -> bool:
            area_el = region.element(_q(MWG_RS, "Area"))
            if area_el is None:
                return False  # a region named without an area: nothing in pixels
            area = _Struct(area_el)
            unit = (area.text(_q(ST_AREA, "unit")) or "").strip()
            if unit not in ("normalized", "pixel"):
                raise _Bad(f"stArea:unit is {unit!r}, not normalized or pixel" if unit else "it has no stArea:unit")
            grid = relative if unit == "normalized" else pixels
            name = {k: _q(ST_AREA, k) for k in "xywhd"}
            x, y = grid.point(_number(area.text(name["x"]), "stArea:x"), _number(area.text(name["y"]), "stArea:y"))
            values = {name["x"]: x, name["y"]: y}
            w, h = area.text(name["w"]), area.text(name["h"])
            if (w is None) != (h is None):
                raise _Bad("it has one of stArea:w and stArea:h without the other")
            if w is not None:
                values[name["w"]], values[name["h"]] = grid.extent(_size(w, "stArea:w"), _size(h, "stArea:h"))
            if area.text(name["d"]) is not None:
                values[name["d"]] = grid.along_width(_size(area.text(name["d"]), "stArea:d"))
            rotation = _q(MWG_RS, "Rotation")
            turn = region.text(rotation)
            # a mirror reverses the angle's sense, whichever way it is counted; a quarter turn keeps it
            if turn is not None and self.frame.orientation in _MIRRORS:
                angle = -_number(turn, "mwg-rs:Rotation")  # read before any field is written
                return _update(area, values) | _update(region, {rotation: angle})
            return _update(area, values)

        kept = container is None or self.each_region(prop, container, items, "MWG region",
                                                     lambda r, i: repr(r.text(_q(MWG_RS, "Name")) or i), map_one)
        if dims_el is not None and kept:
            dims = _Struct(dims_el)
            self.changed |= _update(dims, {_q(ST_DIM, "w"): self.out_w, _q(ST_DIM, "h"): self.out_h})

    @staticmethod
    def _applied(dims: _Struct) -> tuple[Fraction, Fraction]:
        unit = (dims.text(_q(ST_DIM, "unit")) or "pixel").strip()
        if unit != "pixel":
            raise _Bad(f"its AppliedToDimensions are in {unit!r}, not pixel")
        w = _number(dims.text(_q(ST_DIM, "w")), "AppliedToDimensions stDim:w")
        h = _number(dims.text(_q(ST_DIM, "h")), "AppliedToDimensions stDim:h")
        if w <= 0 or h <= 0:
            raise _Bad(f"its AppliedToDimensions {w} x {h} are not a size")
        return w, h

    # ---------------------------------------------------------------------------------------------- Microsoft

    def microsoft(self, prop: ET.Element) -> None:
        regions = _Struct(prop).element(_q(MPRI, "Regions"))
        if regions is None:
            return
        listed = self.region_list(prop, regions, "MPRI:Regions", "Microsoft regions (MP:RegionInfo)")
        if listed is None:
            return
        container, items = listed
        grid = self.grid(True)
        rectangle = _q(MPREG, "Rectangle")

        def map_one(region: _Struct) -> bool:
            text = region.text(rectangle)
            if text is None:
                return False  # a person named without a rectangle
            parts = [p.strip() for p in text.split(",")]
            if len(parts) != 4:
                raise _Bad(f"MPReg:Rectangle {text!r} is not 4 numbers")
            x, y = (_number(p, "MPReg:Rectangle") for p in parts[:2])
            w, h = (_size(p, "MPReg:Rectangle") for p in parts[2:])
            new = grid.box(x, y, w, h)
            if new == (x, y, w, h):
                return False
            region.set(rectangle, ", ".join(map(_text, new)))
            return True

        self.each_region(prop, container, items, "Microsoft region",
                         lambda r, i: repr(r.text(_q(MPREG, "PersonDisplayName")) or i), map_one)

    # ---------------------------------------------------------------------------------------------- IPTC

    def iptc(self, prop: ET.Element) -> None:
        listed = self.region_list(prop, prop, "Iptc4xmpExt:ImageRegion", "IPTC image regions")
        if listed is None:
            return
        container, items = listed
        rb = {k: _q(IPTC_EXT, k) for k in ("rbShape", "rbUnit", "rbX", "rbY", "rbW", "rbH", "rbRx", "rbVertices")}

        def point(s: _Struct, grid: _Grid) -> bool:
            return _update(s, dict(zip((rb["rbX"], rb["rbY"]),
                                       grid.point(_number(s.text(rb["rbX"]), "rbX"),
                                                  _number(s.text(rb["rbY"]), "rbY")))))

        def map_one(region: _Struct) -> bool:
            boundary_el = region.element(_q(IPTC_EXT, "RegionBoundary"))
            if boundary_el is None:
                return False
            b = _Struct(boundary_el)
            unit, shape = ((b.text(rb[k]) or "").strip() for k in ("rbUnit", "rbShape"))
            if unit not in ("relative", "pixel"):
                raise _Bad(f"rbUnit is {unit!r}, not relative or pixel" if unit else "it has no rbUnit")
            grid = self.grid(unit == "relative")
            if shape == "rectangle":
                new = grid.box(_number(b.text(rb["rbX"]), "rbX"), _number(b.text(rb["rbY"]), "rbY"),
                               _size(b.text(rb["rbW"]), "rbW"), _size(b.text(rb["rbH"]), "rbH"))
                return _update(b, dict(zip((rb["rbX"], rb["rbY"], rb["rbW"], rb["rbH"]), new)))
            if shape == "circle":
                radius = grid.along_width(_size(b.text(rb["rbRx"]), "rbRx"))
                return point(b, grid) | _update(b, {rb["rbRx"]: radius})
            if shape == "polygon":
                vertices_el = b.element(rb["rbVertices"])
                if vertices_el is None:
                    raise _Bad("a polygon without rbVertices")
                _, vertices = _items(vertices_el, "rbVertices")
                if not vertices:
                    raise _Bad("a polygon without vertices")
                # every vertex read before any is written: a bad one leaves the region as it was, to be dropped
                mapped = [(v, grid.point(_number(v.text(rb["rbX"]), "rbX"), _number(v.text(rb["rbY"]), "rbY")))
                          for v in map(_Struct, vertices)]
                return any([_update(v, dict(zip((rb["rbX"], rb["rbY"]), p))) for v, p in mapped])
            raise _Bad(f"rbShape is {shape!r}, not rectangle, circle or polygon" if shape else "it has no rbShape")

        self.each_region(prop, container, items, "IPTC image region",
                         lambda r, i: repr(r.text(_q(IPTC_EXT, "rId")) or i), map_one)

    # ---------------------------------------------------------------------------------------------- Camera Raw

    def camera_raw_crop(self) -> None:
        dropped: list[str] = []
        for d in self.root.iter(_DESCRIPTION):
            for name in [k for k in d.attrib if _is_crop(k)]:
                del d.attrib[name]
                dropped.append(name)
            for el in [c for c in d if _is_crop(c.tag)]:
                d.remove(el)
                dropped.append(el.tag)
        if dropped:
            self.changed = True
            names = ", ".join(f"crs:{n.split('}', 1)[1]}" for n in dropped)
            self.notes.append(f"XMP Camera Raw crop ({names}) dropped: it is given in the scan's pixels as stored, "
                              f"which orientation {self.frame.orientation} turned upright")


def _is_crop(name: str) -> bool:
    if not name.startswith(f"{{{CRS}}}"):
        return False
    local = name.split("}", 1)[1]
    return local.startswith("Crop") or local == "HasCrop"


def map_regions(root: ET.Element, frame: PixelFrame, width: int, height: int, notes: list[str]) -> bool:
    """Map the packet's MWG, Microsoft and IPTC regions in place for an upright `width` x `height` derivative, and
    drop a Camera Raw crop when an orientation was applied; True when anything changed. A region that cannot be
    mapped is dropped with a note."""
    if frame.identity:
        return False
    m = _Mapper(root, frame, width, height, notes)
    for tag, handler in ((_q(MWG_RS, "Regions"), m.mwg), (_q(MP, "RegionInfo"), m.microsoft),
                         (_q(IPTC_EXT, "ImageRegion"), m.iptc)):
        for prop in list(root.iter(tag)):
            handler(prop)
    if frame.orientation != 1:
        m.camera_raw_crop()
    return m.changed
