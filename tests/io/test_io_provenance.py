"""Provenance XMP: valid XML, merged into the source packet without losing anything, carried by every format."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
import pytest

from io_samples import XMP, gradient
from oldphoto.errors import ImageError, XmpError
from oldphoto.io import Metadata, provenance_xmp, read, read_provenance, read_source_sha256, write

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "oldphoto": "urn:oldphoto:xmp:1.0/",
}
WHEN = datetime(2026, 11, 22, 10, 30, tzinfo=timezone.utc)
SHA = "ab" * 32
MODELS = {"detector": {"name": "detector-v1", "sha256": "cd" * 32}, "restorer": {"name": "mapping-v1"}}


def _build(source, **kw):
    args = dict(source_name="scan_0042.tif", source_sha256=SHA, software="oldphoto 0.1.0",
                parameters={"upscale": 2, "tile": 256}, models=MODELS, when=WHEN)
    args.update(kw)
    return provenance_xmp(source, **args)


def _packet(rdf: bytes) -> bytes:
    """A source packet: `rdf` (its rdf:Description elements) inside x:xmpmeta and rdf:RDF."""
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            + rdf + b'</rdf:RDF></x:xmpmeta>')


def _events(root):
    return root.findall(".//xmpMM:History/rdf:Seq/rdf:li", NS)


def test_fresh_packet_is_valid_xml_with_history(tmp_path):
    packet = _build(None)
    assert packet.startswith(b"<?xpacket begin=") and packet.rstrip().endswith(b'<?xpacket end="w"?>')
    root = ET.fromstring(packet)
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    (event,) = _events(root)
    assert event.find("stEvt:action", NS).text == "derived"
    assert event.find("stEvt:softwareAgent", NS).text == "oldphoto 0.1.0"
    assert event.find("stEvt:when", NS).text == "2026-11-22T10:30:00+00:00"
    params = json.loads(event.find("stEvt:parameters", NS).text)
    assert params == {"settings": {"upscale": 2, "tile": 256}, "models": MODELS}
    assert root.find(".//oldphoto:SourceSHA256", NS).text == SHA
    assert root.find(".//xmpMM:DerivedFrom/stRef:filePath", NS).text == "scan_0042.tif"
    instance = root.find(".//xmpMM:InstanceID", NS).text
    assert instance.startswith("xmp.iid:") and event.find("stEvt:instanceID", NS).text == instance


def test_merge_keeps_source_properties_and_prefixes():
    packet = _build(XMP)
    root = ET.fromstring(packet)
    assert root.find(".//dc:title/rdf:Alt/rdf:li", NS).text == "Grandmother & the bakery"
    desc = root.find(".//rdf:Description", NS)
    assert desc.get(f"{{{NS['photoshop']}}}City") == "Lyon"
    assert b"photoshop:City=" in packet and b"<dc:title>" in packet  # the source's prefixes, not ns0/ns1
    assert root.find(".//oldphoto:SourceFile", NS).text == "scan_0042.tif"


def test_properties_restating_the_source_files_layout_are_removed():
    # as Photoshop and Lightroom write them: attribute and element forms, a Seq for BitsPerSample; the scan was
    # stored turned (Orientation 6), 4000 x 3000 at 2400 dpi, 16-bit, and its JPEG had Extended XMP
    source = _packet(b'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                     b'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
                     b'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
                     b'tiff:Orientation="6" tiff:ImageWidth="4000" tiff:ImageLength="3000" tiff:XResolution="2400/1" '
                     b'tiff:ResolutionUnit="2" exif:PixelXDimension="4000" exif:ExposureTime="1/125" '
                     b'photoshop:ColorMode="3" photoshop:City="Lyon" xmpNote:HasExtendedXMP="0123456789ABCDEF">'
                     b'<tiff:BitsPerSample><rdf:Seq><rdf:li>16</rdf:li><rdf:li>16</rdf:li><rdf:li>16</rdf:li></rdf:Seq>'
                     b'</tiff:BitsPerSample><exif:PixelYDimension>3000</exif:PixelYDimension>'
                     b'<exif:ComponentsConfiguration><rdf:Seq><rdf:li>4</rdf:li><rdf:li>5</rdf:li><rdf:li>6</rdf:li>'
                     b'<rdf:li>0</rdf:li></rdf:Seq></exif:ComponentsConfiguration>'
                     b'<exif:CompressedBitsPerPixel>4/1</exif:CompressedBitsPerPixel>'
                     b'<tiff:Make>Epson</tiff:Make><dc:rights>CC BY</dc:rights>'
                     b'</rdf:Description>')
    packet = _build(source)
    for gone in (b"Orientation", b"ImageWidth", b"ImageLength", b"XResolution", b"ResolutionUnit", b"PixelXDimension",
                 b"PixelYDimension", b"BitsPerSample", b"ColorMode", b"HasExtendedXMP", b"ComponentsConfiguration",
                 b"CompressedBitsPerPixel"):
        assert gone not in packet, gone
    root = ET.fromstring(packet)
    desc = root.find(".//rdf:Description", NS)
    assert desc.get("{http://ns.adobe.com/exif/1.0/}ExposureTime") == "1/125"  # about the photo: kept
    assert desc.get(f"{{{NS['photoshop']}}}City") == "Lyon"
    assert root.find(".//{http://ns.adobe.com/tiff/1.0/}Make").text == "Epson"
    assert root.find(".//dc:rights", NS).text == "CC BY"


def test_a_thumbnail_in_the_packet_is_dropped_with_a_note():
    # Photoshop and Bridge CS to CS4 kept a base64 JPEG preview of the scan in the packet
    source = _packet(b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
                     b'xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/" xmp:CreatorTool="Adobe Photoshop CS3">'
                     b'<xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource"><xmpGImg:width>256</xmpGImg:width>'
                     b'<xmpGImg:format>JPEG</xmpGImg:format><xmpGImg:image>/9j/4AAQSkZJRgABAgEASABIAAD</xmpGImg:image>'
                     b'</rdf:li></rdf:Alt></xmp:Thumbnails></rdf:Description>')
    notes: list[str] = []
    packet = _build(source, notes=notes)
    assert b"Thumbnails" not in packet and b"/9j/" not in packet and b'CreatorTool="Adobe Photoshop CS3"' in packet
    assert notes == ["XMP thumbnail (xmp:Thumbnails) dropped: it shows the unrestored image"]
    assert _build(XMP, notes=notes) and len(notes) == 1  # nothing to say of a packet without one


def test_history_is_appended_and_ids_chain():
    source = _packet(b'<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
                     b'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" '
                     b'xmpMM:DocumentID="xmp.did:scan" xmpMM:InstanceID="xmp.iid:scan-1">'
                     b'<xmpMM:History><rdf:Seq><rdf:li rdf:parseType="Resource"><stEvt:action>created</stEvt:action>'
                     b'<stEvt:softwareAgent>EPSON Scan</stEvt:softwareAgent></rdf:li></rdf:Seq></xmpMM:History>'
                     b'</rdf:Description>')
    first = _build(source)
    root = ET.fromstring(first)
    assert [e.find("stEvt:action", NS).text for e in _events(root)] == ["created", "derived"]
    assert root.find(".//xmpMM:DerivedFrom/stRef:documentID", NS).text == "xmp.did:scan"
    assert root.find(".//xmpMM:DerivedFrom/stRef:instanceID", NS).text == "xmp.iid:scan-1"
    assert root.find(".//xmpMM:OriginalDocumentID", NS).text == "xmp.did:scan"
    assert len(root.findall(".//xmpMM:DocumentID", NS)) == 1  # replaced, not duplicated
    assert root.find(".//xmpMM:DocumentID", NS).text != "xmp.did:scan"
    second = ET.fromstring(_build(first, source_name="out.png", action="converted"))
    assert [e.find("stEvt:action", NS).text for e in _events(second)] == ["created", "derived", "converted"]
    assert len(second.findall(".//xmpMM:DerivedFrom", NS)) == 1
    assert second.find(".//xmpMM:OriginalDocumentID", NS).text == "xmp.did:scan"


def test_bare_rdf_packet_is_wrapped():
    bare = (b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:rights>CC BY</dc:rights></rdf:Description></rdf:RDF>')
    root = ET.fromstring(_build(bare))
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    assert root.find(".//dc:rights", NS).text == "CC BY"


def test_bad_packets_are_refused_with_the_file_name():
    with pytest.raises(ImageError, match="scan_0042.tif: XMP packet is not well-formed"):
        _build(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>")
    with pytest.raises(ImageError, match="DTD"):
        _build(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>')
    with pytest.raises(ValueError, match="time zone"):
        _build(None, when=datetime(2026, 1, 1))
    for encoding in ("bogus", "shift_jis"):  # unknown to Python, or multi-byte, which expat cannot read
        with pytest.raises(XmpError, match="scan_0042.tif: XMP packet declares an encoding that cannot be read"):
            _build(f"<?xml version='1.0' encoding='{encoding}'?><x:xmpmeta xmlns:x='adobe:ns:meta/'/>".encode())


def test_text_is_escaped():
    packet = _build(None, source_name='a<b>&"c".tif', parameters={"note": "x < y & z"})
    root = ET.fromstring(packet)
    assert root.find(".//oldphoto:SourceFile", NS).text == 'a<b>&"c".tif'
    assert json.loads(_events(root)[0].find("stEvt:parameters", NS).text)["settings"]["note"] == "x < y & z"


def test_file_name_that_is_not_utf8_is_stored_with_replacement_characters(tmp_path):
    name = os.fsdecode(b"caf\xe9\x01.png")  # Latin-1 bytes and a control character, as Linux allows
    packet = _build(None, source_name=name, parameters={"out": name})
    root = ET.fromstring(packet)
    assert root.find(".//oldphoto:SourceFile", NS).text == "caf\ufffd\ufffd.png"
    assert root.find(".//xmpMM:DerivedFrom/stRef:filePath", NS).text == "caf\ufffd\ufffd.png"
    params = json.loads(_events(root)[0].find("stEvt:parameters", NS).text)
    assert params["settings"]["out"] == "caf\ufffd\x01.png"  # JSON escapes the control character itself
    write(tmp_path / "o.png", gradient(4, 4, 3, np.uint8), None, "PNG", None, provenance_xmp=packet)
    assert read(tmp_path / "o.png", 100).meta.xmp == packet


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("TIFF", "tif"), ("WEBP", "webp")])
def test_writer_stores_the_provenance_packet(tmp_path, fmt, ext):
    packet = _build(XMP)
    write(tmp_path / f"x.{ext}", gradient(8, 8, 3, np.uint8), None, fmt, Metadata(xmp=XMP), provenance_xmp=packet)
    assert read(tmp_path / f"x.{ext}", 100).meta.xmp == packet


def test_source_sha256_streams(tmp_path):
    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    (tmp_path / "f.bin").write_bytes(data)
    assert read_source_sha256(tmp_path / "f.bin", chunk_size=65536) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ImageError, match="missing.tif"):
        read_source_sha256(tmp_path / "missing.tif")


def test_properties_spread_over_several_descriptions_are_replaced_once():
    source = _packet(b'<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
                     b'xmpMM:InstanceID="xmp.iid:a"/>'
                     b'<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
                     b'xmpMM:InstanceID="xmp.iid:b"><xmpMM:DocumentID>xmp.did:d</xmpMM:DocumentID></rdf:Description>')
    root = ET.fromstring(_build(source))
    ids = [d.get(f"{{{NS['xmpMM']}}}InstanceID") for d in root.iter(f"{{{NS['rdf']}}}Description")]
    assert ids == [None, None]  # attribute forms removed everywhere
    assert len(root.findall(".//xmpMM:InstanceID", NS)) == 1
    assert root.find(".//xmpMM:DerivedFrom/stRef:instanceID", NS).text == "xmp.iid:a"
    assert root.find(".//xmpMM:DerivedFrom/stRef:documentID", NS).text == "xmp.did:d"


_MM = b'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"'


def _with_ids(**ids: str) -> bytes:
    said = b"".join(f' xmpMM:{k}="{v}"'.encode() for k, v in ids.items())
    return _packet(b'<rdf:Description rdf:about="" ' + _MM + said + b'/>')


def test_a_scans_identity_is_its_embedded_packets_else_its_sidecars_whole():
    from oldphoto.io import ParentIds, parent_ids

    embedded = _with_ids(DocumentID="xmp.did:e", InstanceID="xmp.iid:e")
    sidecar = _with_ids(DocumentID="xmp.did:s", InstanceID="xmp.iid:s", OriginalDocumentID="xmp.did:o")
    assert parent_ids(embedded, sidecar) == ParentIds("xmp.did:e", "xmp.iid:e")  # not mixed with the sidecar's
    assert parent_ids(embedded, sidecar).original == "xmp.did:e"
    for none in (None, b"", XMP, b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF>"):  # none, no ids, not parsed
        assert parent_ids(none, sidecar) == ParentIds("xmp.did:s", "xmp.iid:s", "xmp.did:o"), none
        assert parent_ids(none, sidecar).original == "xmp.did:o"
        assert parent_ids(none, None) == parent_ids(none, b"<broken") == ParentIds()
    # a Photoshop Pantry item's ids are another document's, not the file's
    pantry = _packet(b'<rdf:Description rdf:about="" ' + _MM + b'><xmpMM:Pantry><rdf:Bag><rdf:li>'
                     b'<rdf:Description xmpMM:DocumentID="xmp.did:placed" xmpMM:InstanceID="xmp.iid:placed"/>'
                     b'</rdf:li></rdf:Bag></xmpMM:Pantry></rdf:Description>')
    assert parent_ids(pantry, sidecar).document_id == "xmp.did:s"


def test_a_packet_whose_root_is_refused_gives_no_parent_ids():
    """A sidecar whose root provenance_xmp refuses (x:xapmeta, another root: not carried, a note says so) names no
    parent either: the restoration's DerivedFrom would otherwise name a packet the run said it left out; an embedded
    one so (carried unchanged, without oldphoto's entry) leaves the parent to the sidecar, as one not parsed does."""
    from oldphoto.io import ParentIds, parent_ids

    rdf = (b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" ' + _MM
           + b' xmpMM:DocumentID="xmp.did:x" xmpMM:InstanceID="xmp.iid:x"/></rdf:RDF>')
    xapmeta = b'<x:xapmeta xmlns:x="adobe:ns:meta/">' + rdf + b'</x:xapmeta>'
    with pytest.raises(XmpError, match="root"):
        _build(xapmeta)
    sidecar = _with_ids(DocumentID="xmp.did:s", InstanceID="xmp.iid:s")
    assert parent_ids(None, xapmeta) == ParentIds()
    assert parent_ids(xapmeta, sidecar) == ParentIds("xmp.did:s", "xmp.iid:s")
    assert parent_ids(rdf, None) == ParentIds("xmp.did:x", "xmp.iid:x")  # a bare rdf:RDF is taken, as there


def _provenance_of(packet: bytes, folder):
    write(folder / "p.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=packet)
    return read_provenance(folder / "p.png")


def test_the_parent_given_is_named_instead_of_the_source_packets_ids(tmp_path):
    from oldphoto.io import ParentIds

    source = _with_ids(DocumentID="xmp.did:s", InstanceID="xmp.iid:s", OriginalDocumentID="xmp.did:o")
    for parent, named in [(ParentIds("xmp.did:e", "xmp.iid:e"), ("xmp.did:e", "xmp.iid:e", "xmp.did:e")),
                          (ParentIds(), (None, None, None)), (None, ("xmp.did:s", "xmp.iid:s", "xmp.did:o"))]:
        packet = _build(source, parent=parent)
        root = ET.fromstring(packet)
        assert (root.findtext(".//xmpMM:DerivedFrom/stRef:documentID", namespaces=NS),
                root.findtext(".//xmpMM:DerivedFrom/stRef:instanceID", namespaces=NS),
                root.findtext(".//xmpMM:OriginalDocumentID", namespaces=NS)) == named
        assert root.findtext(".//xmpMM:DerivedFrom/stRef:filePath", namespaces=NS) == "scan_0042.tif"
        assert b"xmp.did:s" not in packet or parent is None  # the source's own ids are not the derivative's
        prov = _provenance_of(packet, tmp_path)
        assert (prov.parent.document_id, prov.parent.instance_id, prov.parent.original) == named
        again = _provenance_of(_build(None, parent=prov.parent), tmp_path)  # named so again (update_sidecar)
        assert again.parent.original == prov.parent.original and again.parent.document_id == named[0]


def test_the_parent_is_read_back_from_a_derived_from_another_tool_rewrote():
    """xmpMM:DerivedFrom as a nested rdf:Description with attributes, as a tool rewriting the packet may give it."""
    from oldphoto.io import ParentIds, xmp_tree
    from oldphoto.io.provenance import _named_parent

    packet = _packet(b'<rdf:Description rdf:about="" ' + _MM + b' xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/'
                     b'ResourceRef#" xmpMM:OriginalDocumentID="xmp.did:o"><xmpMM:DerivedFrom><rdf:Description '
                     b'stRef:documentID="xmp.did:p" stRef:instanceID="xmp.iid:p" stRef:filePath="scan.tif"/>'
                     b'</xmpMM:DerivedFrom></rdf:Description>')
    assert _named_parent(xmp_tree.parse(packet, "t")[0]) == ParentIds("xmp.did:p", "xmp.iid:p", "xmp.did:o")


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("TIFF", ".tif"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_read_provenance_finds_what_oldphoto_recorded_in_every_format(tmp_path, fmt, suffix):
    ours = provenance_xmp(XMP, source_name="scan.tif", source_sha256=SHA, software="oldphoto 9.9",
                          parameters={"tile": {"size": 256}}, models={"restorer": {"sha256": "cd" * 32}})
    path = tmp_path / f"d{suffix}"
    write(path, gradient(16, 24, 3, np.uint8), None, fmt, Metadata(), provenance_xmp=ours)
    prov = read_provenance(path)
    assert prov is not None and prov.source_sha256 == SHA and prov.software == "oldphoto 9.9"
    assert prov.parameters == {"settings": {"tile": {"size": 256}}, "models": {"restorer": {"sha256": "cd" * 32}}}


def test_read_provenance_is_none_unless_oldphoto_made_the_last_change(tmp_path):
    ours = provenance_xmp(None, source_name="scan.tif", source_sha256=SHA, software="oldphoto 9.9")
    retouched = provenance_xmp(ours, source_name="d.tif", source_sha256=SHA, software="Photo Editor 3")
    cases = {"retouched.png": retouched, "plain.png": XMP, "none.png": None,
             "broken.png": ours.replace(b"</rdf:RDF>", b"")}
    for name, packet in cases.items():
        write(tmp_path / name, gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=packet)
        assert read_provenance(tmp_path / name) is None, name
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_provenance(tmp_path / "empty.png") is None
    odd = ours.replace(b"?>", b"?><?xml version='1.0' encoding='bogus'?>", 1)  # another tool's file, say
    write(tmp_path / "odd.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=odd)
    assert read_provenance(tmp_path / "odd.png") is None
    deep = ours.replace(b"<stEvt:parameters>{", b"<stEvt:parameters>" + b"[" * 100_000 + b"{", 1)
    write(tmp_path / "deep.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=deep)
    assert read_provenance(tmp_path / "deep.png") is None


def _exif_with_packets(packet: bytes) -> bytes:
    """An EXIF block holding XMP packets of its own, as some cameras and editors write them: in tag 700 and in the
    ImageDescription, whose values come before the file's own XMP in every format oldphoto writes."""
    from oldphoto.io import tiff_ifd as T

    ifd = T.Ifd()
    ifd.entries[700] = T.bytes_entry(700, T.BYTE, packet)
    ifd.entries[270] = T.Entry(270, T.ASCII, len(packet) + 1, packet + b"\0")
    return T.build_exif(ifd)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("TIFF", ".tif"), ("WEBP", ".webp")])
def test_read_provenance_takes_the_files_own_packet_not_one_carried_in_its_exif(tmp_path, fmt, suffix):
    """The first packet in the bytes was taken for the file's own: a scan whose EXIF (or comment) held a packet
    gave outputs oldphoto did not recognise after a lost state file. And a carried packet that names oldphoto must
    never stand in for the file's own XMP, which another tool may have changed since."""
    stray = provenance_xmp(None, source_name="old.tif", source_sha256="ee" * 32, software="oldphoto 9.9")
    meta = Metadata(exif=_exif_with_packets(stray), text={"Comment": stray.decode()})
    ours = provenance_xmp(XMP, source_name="scan.jpg", source_sha256=SHA, software="oldphoto 9.9")
    path = tmp_path / f"d{suffix}"
    write(path, gradient(16, 24, 3, np.uint8), None, fmt, meta, provenance_xmp=ours)
    assert path.read_bytes().find(b"<?xpacket begin=") < path.read_bytes().find(ours[:300])  # the stray comes first
    prov = read_provenance(path)
    assert prov is not None and prov.source_sha256 == SHA

    retouched = provenance_xmp(ours, source_name="d.tif", source_sha256=SHA, software="Photo Editor 3")
    write(path, gradient(16, 24, 3, np.uint8), None, fmt, meta, provenance_xmp=retouched)
    assert read_provenance(path) is None
    if fmt != "TIFF":  # a TIFF's first directory is made from the EXIF one: its tag 700 would be the file's own
        write(path, gradient(16, 24, 3, np.uint8), None, fmt, meta, provenance_xmp=None)  # no XMP of its own
        assert read_provenance(path) is None


def test_read_provenance_refuses_a_file_with_two_xmp_slots_or_a_damaged_structure(tmp_path):
    from oldphoto.io import png

    ours = provenance_xmp(None, source_name="scan.png", source_sha256=SHA, software="oldphoto 9.9")
    path = tmp_path / "d.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=ours)
    data = path.read_bytes()
    assert read_provenance(path) is not None
    other = provenance_xmp(None, source_name="scan.png", source_sha256="ee" * 32, software="oldphoto 9.9")
    (tmp_path / "two.png").write_bytes(data[:33] + png.xmp_chunk(other) + data[33:])  # readers differ on which
    assert read_provenance(tmp_path / "two.png") is None
    (tmp_path / "cut.png").write_bytes(data[: data.index(b"IDAT")])
    assert read_provenance(tmp_path / "cut.png") is None
    (tmp_path / "not-an-image.png").write_bytes(b"PNG" + ours)  # a packet in bytes of no known format
    assert read_provenance(tmp_path / "not-an-image.png") is None
    jpeg = tmp_path / "d.jpg"
    write(jpeg, gradient(8, 8, 3, np.uint8), None, "JPEG", Metadata(), provenance_xmp=ours)
    start = jpeg.read_bytes().index(b"http://ns.adobe.com/xap/1.0/\0")
    (tmp_path / "cut.jpg").write_bytes(jpeg.read_bytes()[: start + 40])
    assert read_provenance(jpeg) is not None and read_provenance(tmp_path / "cut.jpg") is None
    tiff = tmp_path / "d.tif"
    write(tiff, gradient(8, 8, 3, np.uint8), None, "TIFF", Metadata(), provenance_xmp=ours)
    (tmp_path / "cut.tif").write_bytes(tiff.read_bytes()[:6])
    assert read_provenance(tiff) is not None and read_provenance(tmp_path / "cut.tif") is None


def test_read_provenance_of_a_png_reads_past_damage_in_other_chunks(tmp_path):
    """Only the XMP chunk is read and its CRC checked: a bad CRC in another chunk (an ancillary one, which the reader
    drops with a note) or a file cut inside IEND's CRC does not hide the provenance (png.walk_chunks frames the
    chunks for both)."""
    from oldphoto.io import png

    ours = provenance_xmp(None, source_name="scan.png", source_sha256=SHA, software="oldphoto 9.9")
    path = tmp_path / "d.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=ours)
    data = path.read_bytes()
    stamp = bytearray(png.chunk(b"tIME", bytes([7, 234, 1, 2, 3, 4, 5])))
    stamp[-1] ^= 1
    (tmp_path / "crc.png").write_bytes(data[:33] + stamp + data[33:])
    (tmp_path / "iend.png").write_bytes(data[:-2])
    assert read(tmp_path / "crc.png", 10**6).notes == ["PNG tIME chunk at byte 33 dropped: CRC mismatch (damaged)"]
    assert read_provenance(tmp_path / "crc.png") == read_provenance(tmp_path / "iend.png") == read_provenance(path)
    assert read_provenance(path).source_sha256 == SHA


def test_a_png_xmp_chunk_with_a_bad_crc_gives_no_provenance(tmp_path):
    """An XMP chunk whose CRC does not hold is not trusted, though its packet parses: read_provenance gives None (the
    file is not recognised as oldphoto's), and the reader drops the packet with a note."""
    from oldphoto.io import png

    ours = provenance_xmp(None, source_name="scan.png", source_sha256=SHA, software="oldphoto 9.9")
    path = tmp_path / "d.png"
    write(path, gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=ours)
    data = bytearray(path.read_bytes())
    at = data.index(png.XMP_KEY.encode()) - 8
    (length,) = struct.unpack(">I", data[at : at + 4])
    data[at + 12 + length - 1] ^= 1  # the CRC's last byte: the packet itself is intact
    (tmp_path / "crc.png").write_bytes(bytes(data))
    assert read_provenance(path).source_sha256 == SHA and read_provenance(tmp_path / "crc.png") is None
    pic = read(tmp_path / "crc.png", 10**6)
    assert pic.meta.xmp is None and pic.notes == [f"PNG iTXt chunk at byte {at} dropped: CRC mismatch (damaged)"]


def test_mask_coverage_is_recorded_beside_the_source_checksum_and_read_back_exactly(tmp_path):
    coverage = 100 / 3
    ours = provenance_xmp(None, source_name="scan.tif", source_sha256=SHA, software="oldphoto 9.9",
                          mask_coverage=coverage)
    root = ET.fromstring(ours)
    assert root.find(".//oldphoto:MaskCoverage", NS).text == repr(coverage)
    assert "mask" not in json.dumps(json.loads(_events(root)[0].find("stEvt:parameters", NS).text))  # no setting
    write(tmp_path / "d.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=ours)
    assert read_provenance(tmp_path / "d.png").mask_coverage == coverage
    # a derivative of a derivative: the first one's coverage does not describe it
    again = provenance_xmp(ours, source_name="d.png", source_sha256=SHA, software="oldphoto 9.9")
    assert b"MaskCoverage" not in again
    write(tmp_path / "e.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=again)
    assert read_provenance(tmp_path / "e.png").mask_coverage is None
    for bad in (b"lots", b"-1.0", b"nan", b"250.0"):  # written by hand or another tool: not taken
        odd = ours.replace(repr(coverage).encode(), bad)
        write(tmp_path / "f.png", gradient(8, 8, 3, np.uint8), None, "PNG", Metadata(), provenance_xmp=odd)
        assert read_provenance(tmp_path / "f.png").mask_coverage is None, bad


@pytest.mark.parametrize("where", [1 << 40, 0x7FFF_FFFF_FFFF_FFF0, 0xFFFF_FFFF_FFFF_FFF0])
def test_read_provenance_is_none_for_a_bigtiff_whose_directory_lies_beyond_any_file(tmp_path, where):
    """A BigTIFF's offsets have 64 bits: one past what a seek can reach made the file reader raise OverflowError or
    ValueError ("cannot fit 'int' into an offset-sized integer"), neither of which read_provenance documents, so an
    odd file among the outputs ended the run with a traceback."""
    import io
    import struct

    import tifffile

    from oldphoto.io.xmp_slot import SlotError, read_xmp_slot

    ours = provenance_xmp(None, source_name="scan.tif", source_sha256=SHA, software="oldphoto 9.9")
    buf = io.BytesIO()
    tifffile.imwrite(buf, gradient(8, 8, 3, np.uint8), bigtiff=True, extratags=[(700, 1, len(ours), ours, True)])
    data = bytearray(buf.getvalue())
    path = tmp_path / "big.tif"
    path.write_bytes(bytes(data))
    assert read_provenance(path) is not None  # as written
    struct.pack_into("<Q", data, 8, where)  # the first directory's offset
    path.write_bytes(bytes(data))
    with open(path, "rb") as f, pytest.raises(SlotError):
        read_xmp_slot(f)
    assert read_provenance(path) is None


NOTES = ("orientation 6 applied: pixels are stored upright", "alpha dropped: JPEG has no transparency",
         "CMYK converted to RGB with the plain formula (approximate colours) <&> \u00e9")


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("TIFF", ".tif"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_kept_notes_are_written_as_oldphoto_notes_and_read_back_in_order(tmp_path, fmt, suffix):
    ours = _build(XMP, kept_notes=NOTES, mask_coverage=1.5)
    path = tmp_path / f"n{suffix}"
    write(path, gradient(16, 24, 3, np.uint8), None, fmt, Metadata(), provenance_xmp=ours)
    prov = read_provenance(path)
    assert prov is not None and prov.notes == NOTES and prov.mask_coverage == 1.5
    again = _build(ours, kept_notes=NOTES[:1])  # a derivative of it: its notes replace the source's
    assert len(ET.fromstring(again).findall(".//oldphoto:Notes", NS)) == 1
    older = tmp_path / f"old{suffix}"  # written before notes were kept: none, recognised all the same
    write(older, gradient(16, 24, 3, np.uint8), None, fmt, Metadata(), provenance_xmp=_build(XMP))
    assert read_provenance(older).notes == () and read_provenance(older).source_sha256 == SHA


def test_notes_of_a_jpeg_whose_history_goes_to_extended_xmp_are_read_back(tmp_path):
    packet = None
    for _ in range(200):  # another tool's edits: a history over one JPEG segment
        packet = _build(packet, software="Adobe Photoshop CC")
    many = tuple(f"note {i}: " + "x" * 90 for i in range(60))  # past the cap: the last entry says how many
    ours = _build(packet, kept_notes=many)
    assert len(ours) > 65000
    path = tmp_path / "big.jpg"
    assert write(path, gradient(16, 24, 3, np.uint8), None, "JPEG", Metadata(), provenance_xmp=ours) == []
    data = path.read_bytes()
    assert data.count(b"http://ns.adobe.com/xmp/extension/\0") >= 2
    prov = read_provenance(path)
    assert prov is not None and prov.software == "oldphoto 0.1.0"
    kept = sum(len(n.encode()) for n in prov.notes[:-1])
    assert prov.notes[:-1] == many[:len(prov.notes) - 1] and 4096 - 100 < kept <= 4096
    assert prov.notes[-1] == f"{len(many) - len(prov.notes) + 1} more note(s) not kept in the XMP"


@pytest.mark.parametrize("case", ["gray webp", "xmp value dropped"])
def test_a_packet_made_from_the_writers_notes_says_every_one_of_them(tmp_path, case):
    """A packet made by a function from the notes the writer knows holds them all as oldphoto:Notes: "gray stored as
    RGB" (noted as the WEBP was encoded, after the packet was made) and what of the packet's own EXIF copies the
    pixels' frame drops (noted as it was mapped) were missing from it."""
    from oldphoto.io.pixel_tags import PixelFrame

    if case == "gray webp":
        pixels, fmt, meta = np.zeros((20, 30, 1), np.uint8), "WEBP", Metadata()
    else:
        area = "<exif:SubjectArea><rdf:Seq>" + "".join(f"<rdf:li>{v}</rdf:li>" for v in range(5)) + "</rdf:Seq>"
        source = _packet(b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/">'
                         + area.encode() + b"</exif:SubjectArea></rdf:Description>")
        pixels, fmt, meta = np.zeros((20, 30, 3), np.uint8), "PNG", Metadata(xmp=source, frame=PixelFrame(2))
    out = tmp_path / f"made.{fmt.lower()}"
    notes = write(out, pixels, None, fmt, meta,
                  provenance_xmp=lambda found: _build(meta.xmp, kept_notes=found))
    assert notes and read_provenance(out).notes == tuple(notes)


@pytest.mark.parametrize("case", ["exif", "iptc", "comment", "aspect"])
def test_a_jpegs_packet_says_what_its_segments_could_not_hold(tmp_path, case):
    """What a JPEG's segments cannot hold (EXIF or IPTC larger than they take, a comment over one segment, an aspect
    ratio beyond JFIF's 16-bit densities) was noted only as the file was encoded, after its packet was made: the
    packet's oldphoto:Notes lacked it, and so did a run recognising the output after a lost state file."""
    meta = {"exif": Metadata(tiff_tags={270: "d" * 70000}), "iptc": Metadata(iptc=b"\x1c\x02\x78" + b"i" * 1_200_000),
            "comment": Metadata(text={"Comment": "c" * 70000}), "aspect": Metadata(aspect=(70001, 3))}[case]
    out = tmp_path / "made.jpg"
    notes = write(out, gradient(16, 24, 3, np.uint8), None, "JPEG", meta,
                  provenance_xmp=lambda found: _build(meta.xmp, kept_notes=found))
    assert any(w in n for n in notes for w in ("EXIF block", "IPTC not written", "comment of", "not written to JFIF"))
    assert read_provenance(out).notes == tuple(notes)


def test_a_jpeg_whose_encoder_writes_no_jfif_header_says_so_in_its_packet(tmp_path, monkeypatch):
    """Whether the aspect ratio can go in the JFIF header is asked of the encoder before the packet is made: an
    encoder writing none (here made to by the test) is said in the packet, and the file is written as before."""
    from io import BytesIO

    from PIL import Image, JpegImagePlugin

    def no_jfif(im, fp, filename):  # the encoder's output with its APP0 JFIF segment taken out
        buf = BytesIO()
        save(im, buf, filename)
        data = buf.getvalue()
        fp.write(data[:2] + data[4 + int.from_bytes(data[4:6], "big"):])

    save = JpegImagePlugin._save
    monkeypatch.setitem(Image.SAVE, "JPEG", no_jfif)
    out = tmp_path / "made.jpg"
    notes = write(out, gradient(16, 24, 3, np.uint8), None, "JPEG", Metadata(aspect=(2, 1)),
                  provenance_xmp=lambda found: _build(None, kept_notes=found))
    assert notes == ["pixel aspect ratio 2:1 not written to JFIF: the encoder wrote no JFIF header (EXIF keeps it)"]
    assert read_provenance(out).notes == tuple(notes)
    assert read(out, 10**6).meta.aspect == (2, 1)  # from the EXIF
