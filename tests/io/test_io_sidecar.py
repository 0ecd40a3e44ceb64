"""XMP sidecar files carried to a derivative: the packet gets the embedded packet's treatment (history entry with the
derivative's ids, restated layout dropped, regions mapped through the orientation and the enlargement), is written
as an XML document of its own, and is read back for its provenance."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from oldphoto.errors import ImageError, XmpError
from oldphoto.io import Metadata, provenance_xmp, read_provenance
from oldphoto.io import provenance as prov_mod
from oldphoto.io.atomic import Staging
from oldphoto.io.pixel_tags import PixelFrame
from oldphoto.io.sidecar import (IMAGE_STYLE, STEM_STYLE, SidecarId, carried_packet, is_sidecar_name, read_sidecar,
                                 sidecar_path, style_of, write_sidecar)

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS = {"mwg-rs": "http://www.metadataworkinggroup.com/schemas/regions/", "stArea": "http://ns.adobe.com/xmp/sType/Area#",
      "stDim": "http://ns.adobe.com/xap/1.0/sType/Dimensions#", "dc": "http://purl.org/dc/elements/1.1/",
      "xmp": "http://ns.adobe.com/xap/1.0/", "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
      "tiff": "http://ns.adobe.com/tiff/1.0/", "exif": "http://ns.adobe.com/exif/1.0/",
      "darktable": "http://darktable.sf.net/", "oldphoto": "urn:oldphoto:xmp:1.0/"}
# a digiKam / darktable style sidecar of a 9 x 6 stored scan: a face at pixels x 0-3, y 0-2 (centre 1.5, 1), caption,
# keywords, rating, the restated layout, and darktable's simple-property DerivedFrom naming the scan
DIGIKAM = f"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="{RDF}">
  <rdf:Description rdf:about="" {" ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())}
    xmp:Rating="4" tiff:ImageWidth="9" tiff:Orientation="6" exif:PixelXDimension="9" xmpMM:DerivedFrom="scan.tif"
    darktable:xmp_version="5">
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Aunt Rose at the mill, 1931</rdf:li></rdf:Alt></dc:description>
   <dc:subject><rdf:Bag><rdf:li>mill</rdf:li><rdf:li>Rose</rdf:li></rdf:Bag></dc:subject>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="9" stDim:h="6" stDim:unit="pixel"/>
    <mwg-rs:RegionList><rdf:Bag><rdf:li><rdf:Description mwg-rs:Name="Rose" mwg-rs:Type="Face">
     <mwg-rs:Area stArea:x="1.5" stArea:y="1" stArea:w="3" stArea:h="2" stArea:unit="pixel"/>
    </rdf:Description></rdf:li></rdf:Bag></mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
""".encode()
PROVENANCE = {"source_name": "scan.tif", "source_sha256": "ab" * 32, "action": "derived",
              "parameters": {"upscale": 2}, "models": {"restorer": {"name": "r-v1"}}, "mask_coverage": 1.5}


def _carry(packet: bytes, frame: PixelFrame, notes: list[str], **extra) -> bytes:
    """The sidecar of a derivative of the 9 x 6 scan turned by `frame` (orientation 6: 6 x 9, then enlarged)."""
    w, h = (6, 9) if frame.turns else (9, 6)
    return carried_packet(packet, sidecar_name="scan.tif.xmp", meta=Metadata(frame=frame), width=w * frame.scale,
                          height=h * frame.scale, fmt="TIFF", software="oldphoto 9", notes=notes,
                          **{**PROVENANCE, **extra})


def _root(data: bytes) -> ET.Element:
    return ET.fromstring(re.sub(rb"<\?xpacket[^>]*\?>", b"", data).split(b"?>", 1)[1].strip())


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


def test_a_sidecar_names_its_file_exactly_or_by_its_stem():
    assert is_sidecar_name("scan.tif.xmp") and is_sidecar_name("SCAN.XMP") and not is_sidecar_name(".xmp")
    assert not is_sidecar_name("scan.xmp.tif")
    assert style_of("scan.tif", "scan.tif.xmp") == IMAGE_STYLE and style_of("scan.tif", "scan.xmp") == STEM_STYLE
    # the derivative's sidecar follows the derivative's own name (--format changes its extension)
    assert sidecar_path(Path("/o/a.v2.jpg"), IMAGE_STYLE) == Path("/o/a.v2.jpg.xmp")
    assert sidecar_path(Path("/o/a.v2.jpg"), STEM_STYLE) == Path("/o/a.v2.xmp")


def test_the_carried_sidecar_gets_the_derivatives_history_and_regions_mapped_through_orientation_and_upscale():
    notes: list[str] = []
    when = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    data = _carry(DIGIKAM, PixelFrame(orientation=6, scale=2), notes, when=when, sidecar_sha256="cd" * 32,
                  document_id="xmp.did:D", instance_id="xmp.iid:I")
    # an XML document of its own (XMP part 3 on external files): declaration first, no padding for in-place edits
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<?xpacket begin=') and b" " * 99 not in data
    d = next(_root(data).iter(f"{{{RDF}}}Description"))
    # what the archivist wrote stays
    assert d.attrib[_q("xmp:Rating")] == "4" and d.attrib[_q("darktable:xmp_version")] == "5"
    assert "Aunt Rose at the mill, 1931" in data.decode() and "<rdf:li>Rose</rdf:li>" in data.decode()
    # the scan's layout, restated, is not the derivative's; darktable's DerivedFrom (a name, in attribute form) is
    # replaced by the derivative's own, which names the scan
    for gone in ("tiff:ImageWidth", "tiff:Orientation", "exif:PixelXDimension", "xmpMM:DerivedFrom"):
        assert _q(gone) not in d.attrib
    assert d.find(f"{_q('xmpMM:DerivedFrom')}/{{http://ns.adobe.com/xap/1.0/sType/ResourceRef#}}filePath").text \
        == "scan.tif"
    # the same history entry and ids as the derivative's embedded packet
    assert d.findtext(_q("xmpMM:DocumentID")) == "xmp.did:D" and d.findtext(_q("xmpMM:InstanceID")) == "xmp.iid:I"
    assert d.findtext(_q("oldphoto:SidecarSHA256")) == "cd" * 32 and "2026-12-07T12:00:00+00:00" in data.decode()
    # the face, at x 0-3, y 0-2 of the 9 x 6 scan, turned by orientation 6 (90 degrees clockwise) lies at x 4-6,
    # y 0-3 of the 6 x 9 upright photo; enlarged twice: centre (10, 3), 4 x 6, in 12 x 18 pixels
    area = next(_root(data).iter(_q("mwg-rs:Area")))
    assert {k.split("}")[1]: float(v) for k, v in area.attrib.items() if k.split("}")[1] in "xywh"} == \
        {"x": 10.0, "y": 3.0, "w": 4.0, "h": 6.0}
    dims = next(_root(data).iter(_q("mwg-rs:AppliedToDimensions")))
    assert (dims.attrib[_q("stDim:w")], dims.attrib[_q("stDim:h")]) == ("12", "18")
    # the turn digiKam's sidecar gives is the scan's own here: nothing to say; another one is named
    assert notes == []
    other: list[str] = []
    _carry(DIGIKAM, PixelFrame(orientation=1, scale=1), other)
    assert other == ["XMP sidecar scan.tif.xmp: its tiff:Orientation 6 is not applied: the restoration is written "
                     "upright from the scan's own orientation (1); turn it by hand if the sidecar's was meant"]


def test_a_sidecar_that_cannot_be_parsed_raises_xmp_error():
    for bad in (b"<x:xmpmeta", b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", b"<other/>"):
        with pytest.raises(XmpError):
            _carry(bad, PixelFrame(), [])


def test_a_utf16_sidecar_is_carried_but_never_with_a_dtd():
    """A sidecar in UTF-16 hides the bytes b"<!DOCTYPE": its DTD must still be refused (a few hundred bytes of nested
    entities expand to gigabytes), and one without is carried, as UTF-8."""
    text = DIGIKAM.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    carried = _carry(b"\xfe\xff" + text.encode("utf-16-be"), PixelFrame(), [])
    assert carried.startswith(b'<?xml version="1.0" encoding="UTF-8"?>') and b"Aunt Rose at the mill" in carried
    laughs = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10 if i else "ha"}">' for i in range(4))
    bomb = text.replace("<x:xmpmeta", f"<!DOCTYPE x:xmpmeta [{laughs}]><x:xmpmeta", 1).replace("mill, 1931", "&e3;")
    for data in (b"\xfe\xff" + bomb.encode("utf-16-be"), bomb.encode("utf-16")):
        with pytest.raises(XmpError, match="declares a DTD"):
            _carry(data, PixelFrame(), [])


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_sidecar_in_either_byte_order_is_carried(encoding):
    """Stripping b"\\0" (an embedded packet's padding) from both ends took the last byte of a little-endian sidecar's
    final ">" (and the first of a big-endian one without its mark): refused as "not well-formed"."""
    text = DIGIKAM.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    for data in ("\ufeff" + text + "\n", text):  # with and without the byte order mark
        if encoding == "utf-16-le" and not data.startswith("\ufeff"):
            continue  # expat takes a document without a mark for big-endian (XML 1.0, F.1)
        carried = _carry(data.encode(encoding), PixelFrame(), [])
        assert carried.startswith(b'<?xml version="1.0" encoding="UTF-8"?>') and b"Aunt Rose at the mill" in carried
    laughs = '<!ENTITY a "ha">'
    bomb = text.replace("<x:xmpmeta", f"<!DOCTYPE x:xmpmeta [{laughs}]><x:xmpmeta", 1)
    with pytest.raises(XmpError, match="declares a DTD"):
        _carry(("\ufeff" + bomb).encode(encoding), PixelFrame(), [])


def test_an_embedded_packet_keeps_its_nul_padding_stripped():
    assert _carry(DIGIKAM + b"\0" * 64, PixelFrame(), []).count(b"Aunt Rose") == 1


def test_a_written_sidecar_is_read_back_for_its_provenance_and_staged_with_the_image(tmp_path):
    data = _carry(DIGIKAM, PixelFrame(), [], sidecar_sha256="cd" * 32)
    out = tmp_path / "scan.tif.xmp"
    staging = Staging()
    write_sidecar(out, data, staging)
    assert not out.exists()  # in place only with the photo it describes
    staging.commit()
    prov = read_provenance(out)
    assert (prov.source_sha256, prov.sidecar_sha256, prov.mask_coverage) == ("ab" * 32, "cd" * 32, 1.5)
    assert prov.parameters == {"settings": {"upscale": 2}, "models": {"restorer": {"name": "r-v1"}}}
    # the source's own sidecar is nobody's derivative; an embedded packet without a carried sidecar says none
    (tmp_path / "src.xmp").write_bytes(DIGIKAM)
    assert read_provenance(tmp_path / "src.xmp") is None
    assert _q("oldphoto:SidecarSHA256") not in provenance_xmp(DIGIKAM, software="oldphoto 9", **PROVENANCE).decode()


def test_reading_a_sidecar_gives_the_identity_of_the_very_bytes_read(tmp_path, monkeypatch):
    src = tmp_path / "scan.xmp"
    src.write_bytes(DIGIKAM)
    data, read = read_sidecar(src)
    assert data == DIGIKAM and read == SidecarId.of(src, with_hash=True)
    assert read.sha256 == hashlib.sha256(DIGIKAM).hexdigest() and read.name == "scan.xmp"
    monkeypatch.setattr(prov_mod, "SIDECAR_LIMIT", len(DIGIKAM) - 1)  # a misnamed large file is not read whole
    with pytest.raises(ImageError, match="not an XMP sidecar"):
        read_sidecar(src)
    with pytest.raises(ImageError, match="cannot"):
        read_sidecar(tmp_path / "gone.xmp")
