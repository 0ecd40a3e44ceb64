"""XMP face and person regions (MWG, Microsoft, IPTC) follow the pixels: given in the stored image, they are turned
upright with it and enlarged; AppliedToDimensions becomes the derivative's size; a Camera Raw crop is dropped when
the pixels were turned."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from fractions import Fraction

import numpy as np
import pytest

from oldphoto.io import upright
from oldphoto.io import tiff_ifd as T
from oldphoto.io.pixel_tags import PixelFrame, map_xmp

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS = {"rdf": RDF, "mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/",
      "stArea": "http://ns.adobe.com/xmp/sType/Area#", "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#",
      "MP": "http://ns.microsoft.com/photo/1.2/", "MPRI": "http://ns.microsoft.com/photo/1.2/t/RegionInfo#",
      "MPReg": "http://ns.microsoft.com/photo/1.2/t/Region#",
      "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
      "crs": "http://ns.adobe.com/camera-raw-settings/1.0/", "dc": "http://purl.org/dc/elements/1.1/"}
W, H = 9, 6  # the stored source


def _packet(body: str) -> bytes:
    decls = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items() if p != "rdf")
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}"><rdf:Description rdf:about="" {decls}>'
            f"{body}</rdf:Description></rdf:RDF></x:xmpmeta>").encode()


def _mwg(*areas: str, dims: str = f'stDim:w="{W}" stDim:h="{H}" stDim:unit="pixel"') -> str:
    """MWG regions as Lightroom writes them: fields as attributes."""
    items = "".join(f'<rdf:li><rdf:Description mwg-rs:Name="p{i}" mwg-rs:Type="Face"><mwg-rs:Area {a}/>'
                    "</rdf:Description></rdf:li>" for i, a in enumerate(areas))
    dims_el = f"<mwg-rs:AppliedToDimensions {dims}/>" if dims else ""
    return (f'<mwg-rs:Regions rdf:parseType="Resource">{dims_el}<mwg-rs:RegionList><rdf:Bag>{items}</rdf:Bag>'
            "</mwg-rs:RegionList></mwg-rs:Regions>")


def _mp(*rectangles: str) -> str:
    items = "".join(f'<rdf:li MPReg:PersonDisplayName="p{i}" MPReg:Rectangle="{r}"/>' for i, r in enumerate(rectangles))
    return (f'<MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag>{items}</rdf:Bag></MPRI:Regions>'
            "</MP:RegionInfo>")


def _iptc(*boundaries: str) -> str:
    """IPTC regions as ExifTool writes them: fields as elements."""
    items = "".join(f'<rdf:li rdf:parseType="Resource"><Iptc4xmpExt:rId>r{i}</Iptc4xmpExt:rId>'
                    f'<Iptc4xmpExt:RegionBoundary rdf:parseType="Resource">{b}</Iptc4xmpExt:RegionBoundary></rdf:li>'
                    for i, b in enumerate(boundaries))
    return f"<Iptc4xmpExt:ImageRegion><rdf:Bag>{items}</rdf:Bag></Iptc4xmpExt:ImageRegion>"


def _rb(**fields) -> str:
    out = ""
    for k, v in fields.items():
        if k == "rbVertices":
            v = "".join(f'<rdf:li Iptc4xmpExt:rbX="{x}" Iptc4xmpExt:rbY="{y}"/>' for x, y in v)
            v = f"<rdf:Seq>{v}</rdf:Seq>"
        out += f"<Iptc4xmpExt:{k}>{v}</Iptc4xmpExt:{k}>"
    return out


def _root(packet: bytes) -> ET.Element:
    return ET.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", packet).strip())


def _fields(el: ET.Element, prefix: str) -> dict[str, Fraction]:
    """A struct's numeric fields in namespace `prefix`, from attributes or child elements."""
    ns = "{" + NS[prefix] + "}"
    out = {k[len(ns):]: v for k, v in el.attrib.items() if k.startswith(ns)}
    out.update({c.tag[len(ns):]: c.text for c in el if c.tag.startswith(ns) and len(c) == 0})
    return {k: Fraction(v) for k, v in out.items() if re.fullmatch(r"[-\d.e]+", v or "")}


def _boxes(packet: bytes) -> dict[str, tuple]:
    """Every region of the packet as (left, top, right, bottom) in the derivative's pixels (fractions: x its size)."""
    root = _root(packet)
    dims = root.find(".//mwg-rs:AppliedToDimensions", NS)
    out_w, out_h = (Fraction(dims.get(f"{{{NS['stDim']}}}w")), Fraction(dims.get(f"{{{NS['stDim']}}}h")))
    out: dict[str, tuple] = {}
    for i, area in enumerate(root.iterfind(".//mwg-rs:Area", NS)):
        a = _fields(area, "stArea")
        k = (1, 1) if area.get(f"{{{NS['stArea']}}}unit") == "pixel" else (out_w, out_h)
        x, y, w, h = a["x"] * k[0], a["y"] * k[1], a["w"] * k[0], a["h"] * k[1]
        out[f"mwg{i}"] = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    for i, li in enumerate(root.iterfind(".//MPRI:Regions/rdf:Bag/rdf:li", NS)):
        x, y, w, h = map(Fraction, li.get(f"{{{NS['MPReg']}}}Rectangle").split(","))
        out[f"mp{i}"] = (x * out_w, y * out_h, (x + w) * out_w, (y + h) * out_h)
    for i, b in enumerate(root.iterfind(".//Iptc4xmpExt:RegionBoundary", NS)):
        f = _fields(b, "Iptc4xmpExt")
        k = (1, 1) if b.findtext("Iptc4xmpExt:rbUnit", namespaces=NS) == "pixel" else (out_w, out_h)
        if "rbW" in f:
            x, y, w, h = f["rbX"] * k[0], f["rbY"] * k[1], f["rbW"] * k[0], f["rbH"] * k[1]
            out[f"iptc{i}"] = (x, y, x + w, y + h)
        else:
            vs = [(_fields(v, "Iptc4xmpExt")["rbX"] * k[0], _fields(v, "Iptc4xmpExt")["rbY"] * k[1])
                  for v in b.iterfind(".//rdf:li", NS)]
            out[f"iptc{i}"] = (min(v[0] for v in vs), min(v[1] for v in vs), max(v[0] for v in vs),
                               max(v[1] for v in vs))
    return out


def _every_kind(x: int, y: int, w: int, h: int) -> bytes:
    """One rectangle (stored pixels) in every convention and unit."""
    fx, fy = Fraction(1, W), Fraction(1, H)

    def n(v: Fraction) -> str:  # as a writer's decimals (1/9: 0.1111111111111111)
        return str(float(v))

    return _packet(
        _mwg(f'stArea:x="{n((x + w / 2) * fx)}" stArea:y="{n((y + h / 2) * fy)}" stArea:w="{n(w * fx)}" '
             f'stArea:h="{n(h * fy)}" stArea:unit="normalized"',
             f'stArea:x="{x + w / 2}" stArea:y="{y + h / 2}" stArea:w="{w}" stArea:h="{h}" stArea:unit="pixel"')
        + _mp(f"{n(x * fx)}, {n(y * fy)}, {n(w * fx)}, {n(h * fy)}")
        + _iptc(_rb(rbShape="rectangle", rbUnit="relative", rbX=n(x * fx), rbY=n(y * fy), rbW=n(w * fx),
                    rbH=n(h * fy)),
                _rb(rbShape="rectangle", rbUnit="pixel", rbX=x, rbY=y, rbW=w, rbH=h),
                _rb(rbShape="polygon", rbUnit="pixel", rbVertices=[(x, y), (x + w, y), (x + w, y + h), (x, y + h)])))


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_kind_of_region_frames_its_block_once_turned_and_enlarged(orientation, scale):
    x, y, w, h = 1, 2, 3, 1  # a 3 x 1 block, off centre both ways
    stored = np.zeros((H, W), np.uint8)
    stored[y : y + h, x : x + w] = 1
    shown = upright(stored, orientation).repeat(scale, 0).repeat(scale, 1)
    ys, xs = np.nonzero(shown)
    block = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    notes: list[str] = []
    out = map_xmp(_every_kind(x, y, w, h), PixelFrame(orientation, scale), T.Ifd(), shown.shape[1], shown.shape[0],
                  notes)
    boxes = _boxes(out)
    assert set(boxes) == {"mwg0", "mwg1", "mp0", "iptc0", "iptc1", "iptc2"}
    for name, box in boxes.items():
        # the sources' decimals (1/9 is 0.111...) are a hair off the block
        assert all(abs(a - b) < Fraction(1, 10**6) for a, b in zip(box, block)), (name, box, block)
    assert notes == []
    dims = _root(out).find(".//mwg-rs:AppliedToDimensions", NS)
    assert (dims.get(f"{{{NS['stDim']}}}w"), dims.get(f"{{{NS['stDim']}}}h")) == tuple(map(str, shown.shape[1::-1]))


def test_orientation_6_enlarged_twice_values():
    # stored 60 x 40, turned by 6 to 40 x 60 (x, y -> 40 - y, x), enlarged to 80 x 120
    packet = _packet(
        _mwg('stArea:x="0.25" stArea:y="0.5" stArea:w="0.1" stArea:h="0.2" stArea:unit="normalized"',
             'stArea:x="10" stArea:y="5" stArea:d="6" stArea:unit="pixel"',
             'stArea:x="0.5" stArea:y="0.25" stArea:d="0.1" stArea:unit="normalized"',
             dims='stDim:w="60" stDim:h="40" stDim:unit="pixel"')
        + _mp("0.2, 0.4, 0.1, 0.2")
        + _iptc(_rb(rbShape="circle", rbUnit="relative", rbX="0.5", rbY="0.25", rbRx="0.1"),
                _rb(rbShape="polygon", rbUnit="pixel", rbVertices=[(1, 2), (10, 20), (59, 0)])))
    notes: list[str] = []
    root = _root(map_xmp(packet, PixelFrame(6, 2), T.Ifd(), 80, 120, notes))
    areas = [_fields(a, "stArea") for a in root.iterfind(".//mwg-rs:Area", NS)]
    assert areas == [{"x": Fraction(1, 2), "y": Fraction(1, 4), "w": Fraction(1, 5), "h": Fraction(1, 10)},
                     {"x": 70, "y": 20, "d": 12},  # pixels: moved and doubled
                     # normalized diameter, a fraction of the width: 6 of 60 stored pixels, 12 of the 80 written
                     {"x": Fraction(3, 4), "y": Fraction(1, 2), "d": Fraction(3, 20)}]
    assert root.find(".//MPRI:Regions/rdf:Bag/rdf:li", NS).get(f"{{{NS['MPReg']}}}Rectangle") == "0.4, 0.2, 0.2, 0.1"
    circle, polygon = (_fields(b, "Iptc4xmpExt") for b in root.iterfind(".//Iptc4xmpExt:RegionBoundary", NS))
    assert circle == {"rbX": Fraction(3, 4), "rbY": Fraction(1, 2), "rbRx": Fraction(3, 20)}
    assert [(v["rbX"], v["rbY"]) for v in map(lambda li: _fields(li, "Iptc4xmpExt"),
                                              root.iterfind(".//Iptc4xmpExt:rbVertices/rdf:Seq/rdf:li", NS))] == [
        (76, 2), (40, 20), (80, 118)]
    assert notes == []


def test_pixel_areas_are_read_in_the_applied_dimensions():
    # the regions were applied to a 120 x 80 rendition of this 60 x 40 scan: a pixel area there is half here
    packet = _packet(_mwg('stArea:x="20" stArea:y="10" stArea:w="16" stArea:h="8" stArea:unit="pixel"',
                          dims='stDim:w="120" stDim:h="80" stDim:unit="pixel"'))
    root = _root(map_xmp(packet, PixelFrame(3, 2), T.Ifd(), 120, 80, []))
    # (10, 5) of 60 x 40, turned 180: (50, 35), x2
    assert _fields(root.find(".//mwg-rs:Area", NS), "stArea") == {"x": 100, "y": 70, "w": 16, "h": 8}
    dims = root.find(".//mwg-rs:AppliedToDimensions", NS)
    assert (dims.get(f"{{{NS['stDim']}}}w"), dims.get(f"{{{NS['stDim']}}}h")) == ("120", "80")


def test_element_and_description_forms_are_mapped_in_place():
    # ExifTool's rdf:parseType="Resource" elements, and rdf:Description with attributes, in one list
    packet = _packet(
        '<mwg-rs:Regions><rdf:Description><mwg-rs:AppliedToDimensions rdf:parseType="Resource"><stDim:w>60</stDim:w>'
        '<stDim:h>40</stDim:h><stDim:unit>pixel</stDim:unit></mwg-rs:AppliedToDimensions><mwg-rs:RegionList><rdf:Bag>'
        '<rdf:li rdf:parseType="Resource"><mwg-rs:Name>Ann</mwg-rs:Name><mwg-rs:Area rdf:parseType="Resource">'
        "<stArea:x>0.25</stArea:x><stArea:y>0.5</stArea:y><stArea:w>0.1</stArea:w><stArea:h>0.2</stArea:h>"
        "<stArea:unit>normalized</stArea:unit></mwg-rs:Area></rdf:li></rdf:Bag></mwg-rs:RegionList></rdf:Description>"
        "</mwg-rs:Regions><dc:title>Picnic</dc:title>")
    out = map_xmp(packet, PixelFrame(8), T.Ifd(), 40, 60, []).decode()
    # orientation 8: (x, y) -> (y, 1 - x)
    assert ("<stArea:x>0.5</stArea:x><stArea:y>0.75</stArea:y><stArea:w>0.2</stArea:w><stArea:h>0.1</stArea:h>"
            in out)
    assert "<stDim:w>40</stDim:w><stDim:h>60</stDim:h>" in out and "<dc:title>Picnic</dc:title>" in out


@pytest.mark.parametrize("region, why", [
    (_mwg('stArea:x="a" stArea:y="0.5" stArea:unit="normalized"'),
     "MWG region 'p0' dropped: stArea:x 'a' is not a number"),
    (_mwg('stArea:x="0.1" stArea:y="0.5"'), "MWG region 'p0' dropped: it has no stArea:unit"),
    (_mwg('stArea:x="1" stArea:y="2" stArea:unit="inch"'), "MWG region 'p0' dropped: stArea:unit is 'inch', not"),
    (_mwg('stArea:x=".1" stArea:y=".5" stArea:w=".1" stArea:unit="normalized"'), "without the other"),
    (_mwg('stArea:y=".5" stArea:unit="normalized"'), "MWG region 'p0' dropped: it has no stArea:x"),
    (_mp("0.1, 0.2, 0.3"), "Microsoft region 'p0' dropped: MPReg:Rectangle '0.1, 0.2, 0.3' is not 4 numbers"),
    (_mp("0.1, 0.2, -0.3, 0.1"), "Microsoft region 'p0' dropped: MPReg:Rectangle '-0.3' is negative"),
    (_iptc(_rb(rbShape="ellipse", rbUnit="pixel", rbX=1, rbY=1)),
     "IPTC image region 'r0' dropped: rbShape is 'ellipse'"),
    (_iptc(_rb(rbShape="rectangle", rbUnit="pixel", rbX=1, rbY=1, rbW=2)),
     "IPTC image region 'r0' dropped: it has no rbH"),
    (_iptc(_rb(rbShape="circle", rbUnit="cm", rbX=1, rbY=1, rbRx=2)), "rbUnit is 'cm', not relative or pixel"),
    (_iptc(_rb(rbShape="polygon", rbUnit="pixel", rbVertices=[(1, 2), (3, "x")])), "'r0' dropped: rbY 'x' is not"),
    (_mwg('stArea:x=".1" stArea:y=".5" stArea:unit="normalized"', dims='stDim:w="0" stDim:h="4"'),
     "MWG regions (mwg-rs:Regions) dropped: its AppliedToDimensions 0 x 4 are not a size"),
])
def test_a_region_that_cannot_be_mapped_is_dropped_with_a_note_the_others_kept(region, why):
    # a good region of another kind (MWG, or IPTC beside a bad MWG list), mapped beside it
    if region.startswith("<mwg-rs"):
        good = _iptc(_rb(rbShape="rectangle", rbUnit="relative", rbX="0.4", rbY="0.4", rbW="0.2", rbH="0.2"))
    else:
        good = _mwg('stArea:x="0.5" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2" stArea:unit="normalized"', dims="")
    notes: list[str] = []
    out = map_xmp(_packet(region + good + "<dc:title>Kept</dc:title>"), PixelFrame(3), T.Ifd(), W, H, notes)
    assert len(notes) == 1 and notes[0].startswith("XMP ") and why in notes[0], notes
    root = _root(out)
    assert root.findtext(".//dc:title", namespaces=NS) == "Kept"
    # the bad region, and its list with it when nothing is left, is gone; the good one stays, mapped
    kinds = {"MWG": "mwg-rs:Regions", "Microsoft": "MP:RegionInfo", "IPTC": "Iptc4xmpExt:ImageRegion"}
    bad_kind = next(k for k in kinds if f"XMP {k} " in notes[0])
    assert root.find(f".//{kinds[bad_kind]}", NS) is None
    assert len(root.findall(".//mwg-rs:Area", NS) + root.findall(".//Iptc4xmpExt:RegionBoundary", NS)) == 1


def test_a_named_region_without_an_area_is_kept_as_it_is():
    packet = _packet('<MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag>'
                     '<rdf:li MPReg:PersonDisplayName="Ann"/></rdf:Bag></MPRI:Regions></MP:RegionInfo>')
    assert map_xmp(packet, PixelFrame(6, 2), T.Ifd(), 12, 18, []) is packet


def test_nothing_to_change_leaves_the_packet_byte_for_byte():
    fractions_only = _packet(_mp("0.2, 0.4, 0.1, 0.2")
                             + _iptc(_rb(rbShape="circle", rbUnit="relative", rbX="0.5", rbY="0.25", rbRx="0.1"))
                             + '<crs:HasCrop>True</crs:HasCrop><crs:CropTop>0.1</crs:CropTop>')
    assert map_xmp(fractions_only, PixelFrame(1, 4), T.Ifd(), 4 * W, 4 * H, []) is fractions_only  # enlarged only
    every = _every_kind(1, 2, 3, 1)
    assert map_xmp(every, PixelFrame(), T.Ifd(), W, H, []) is every  # upright, not enlarged


def test_enlarged_only_normalized_areas_keep_their_text_and_the_dimensions_follow():
    area = 'stArea:x="0.123456789" stArea:y="0.5" stArea:w="0.1" stArea:h="0.2" stArea:unit="normalized"'
    out = map_xmp(_packet(_mwg(area)), PixelFrame(1, 2), T.Ifd(), 2 * W, 2 * H, []).decode()
    assert area in out and f'stDim:w="{2 * W}" stDim:h="{2 * H}"' in out


def test_a_camera_raw_crop_is_dropped_once_the_pixels_are_turned():
    packet = _packet('<crs:HasCrop>True</crs:HasCrop><crs:CropTop>0.1</crs:CropTop><crs:CropLeft>0.2</crs:CropLeft>'
                     '<crs:CropBottom>0.9</crs:CropBottom><crs:CropRight>0.8</crs:CropRight><crs:CropAngle>1.5'
                     '</crs:CropAngle><crs:Exposure2012>+0.50</crs:Exposure2012>')
    notes: list[str] = []
    out = map_xmp(packet, PixelFrame(5), T.Ifd(), H, W, notes).decode()
    assert "Crop" not in out and "<crs:Exposure2012>+0.50</crs:Exposure2012>" in out  # other settings stay
    assert notes == ["XMP Camera Raw crop (crs:HasCrop, crs:CropTop, crs:CropLeft, crs:CropBottom, crs:CropRight, "
                     "crs:CropAngle) dropped: it is given in the scan's pixels as stored, which orientation 5 turned "
                     "upright"]


def test_an_unreadable_packet_is_carried_with_a_note():
    packet = _packet(_mp("0.2, 0.4, 0.1, 0.2")).replace(b"</x:xmpmeta>", b"")
    notes: list[str] = []
    assert map_xmp(packet, PixelFrame(6), T.Ifd(), H, W, notes) is packet
    assert len(notes) == 1 and "regions, Camera Raw crop) left as in the source" in notes[0]


@pytest.mark.parametrize("orientation, rotation", [(2, "-0.25"), (5, "-0.25"), (3, "0.25"), (6, "0.25")])
def test_a_region_rotation_changes_sign_when_mirrored(orientation, rotation):
    packet = _packet('<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag><rdf:li '
                     'rdf:parseType="Resource"><mwg-rs:Rotation>0.25</mwg-rs:Rotation><mwg-rs:Area stArea:x="0.5" '
                     'stArea:y="0.5" stArea:w="0.2" stArea:h="0.2" stArea:unit="normalized"/></rdf:li></rdf:Bag>'
                     "</mwg-rs:RegionList></mwg-rs:Regions>")
    out = map_xmp(packet, PixelFrame(orientation), T.Ifd(), W, H, [])
    assert _root(out).findtext(".//mwg-rs:Rotation", namespaces=NS) == rotation


@pytest.mark.parametrize("body, note", [
    ('<MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions>Ann</MPRI:Regions></MP:RegionInfo>',
     "XMP Microsoft regions (MP:RegionInfo) dropped: MPRI:Regions is not an RDF array"),
    ("<Iptc4xmpExt:ImageRegion>face</Iptc4xmpExt:ImageRegion>",
     "XMP IPTC image regions dropped: Iptc4xmpExt:ImageRegion is not an RDF array"),
    ('<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList>Ann</mwg-rs:RegionList></mwg-rs:Regions>',
     "XMP MWG regions (mwg-rs:Regions) dropped: RegionList is not an RDF array"),
])
def test_a_region_list_that_is_no_array_is_dropped_whole(body, note):
    notes: list[str] = []
    out = map_xmp(_packet(body + "<dc:title>Kept</dc:title>"), PixelFrame(6), T.Ifd(), H, W, notes)
    assert notes == [note]
    assert b"Regions" not in out and b"ImageRegion" not in out and b"<dc:title>Kept</dc:title>" in out
