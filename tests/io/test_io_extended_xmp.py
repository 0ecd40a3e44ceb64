"""JPEG's Extended XMP (XMP specification part 3): read from files Photoshop and Lightroom wrote (a packet over 64 KB
split into a standard packet and extension segments), and written for a packet too large for one APP1 segment."""

from __future__ import annotations

import hashlib
import io
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from io_samples import gradient
from oldphoto.errors import XmpError
from oldphoto.io import Metadata, provenance_xmp, read, read_provenance, write
from oldphoto.io.xmp_slot import read_xmp_slot

HEADER = b"http://ns.adobe.com/xmp/extension/\0"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
PS = "http://ns.adobe.com/photoshop/1.0/"


def _ancestors(n: int) -> bytes:
    # photoshop:DocumentAncestors: the property that grows past 64 KB in files placed into one another for years
    items = b"".join(b"<rdf:li>xmp.did:%032x</rdf:li>" % i for i in range(n))
    return b"<photoshop:DocumentAncestors><rdf:Bag>" + items + b"</rdf:Bag></photoshop:DocumentAncestors>"


def _xmpmeta(description_attrs: bytes, body: bytes) -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF.encode() + b'">'
            b'<rdf:Description rdf:about="" xmlns:dc="' + DC.encode() + b'" xmlns:photoshop="' + PS.encode() + b'" '
            b'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" ' + description_attrs + b">" + body
            + b"</rdf:Description></rdf:RDF></x:xmpmeta>")


def _segment(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _photoshop_xmp(cut: int = 0) -> tuple[bytes, bytes, list[bytes]]:
    """The XMP of a JPEG as Photoshop writes one whose XMP does not fit: (standard packet with the title, GUID, the
    payloads after their header of the extension segments holding the ancestors, the last `cut` bytes missing)."""
    extension = _xmpmeta(b"", _ancestors(3000))
    guid = hashlib.md5(extension).hexdigest().upper().encode()
    standard = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                + _xmpmeta(b'photoshop:City="Lyon" xmpNote:HasExtendedXMP="' + guid + b'"',
                           b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Picnic</rdf:li></rdf:Alt></dc:title>')
                + b'<?xpacket end="w"?>')
    kept = extension[: len(extension) - cut]
    parts = [guid + struct.pack(">II", len(extension), offset) + kept[offset : offset + 65000]
             for offset in range(0, len(kept), 65000)]
    return standard, guid, parts


def _jpeg_with_xmp(path, standard: bytes, parts: list[bytes]) -> None:
    segments = _segment(b"http://ns.adobe.com/xap/1.0/\0" + standard)
    segments += b"".join(_segment(HEADER + part) for part in parts)
    plain = io.BytesIO()
    Image.fromarray(gradient(16, 24, 3, np.uint8)).save(plain, "JPEG")
    data = plain.getvalue()
    path.write_bytes(data[:2] + segments + data[2:])


def _photoshop_jpeg(path, cut: int = 0) -> None:
    _jpeg_with_xmp(path, *_photoshop_xmp(cut)[::2])


def _properties(packet: bytes) -> tuple[str | None, str | None, int, bool]:
    root = ET.fromstring(packet.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])
    city = next((d.get(f"{{{PS}}}City") for d in root.iter(f"{{{RDF}}}Description") if d.get(f"{{{PS}}}City")), None)
    title = root.find(f".//{{{DC}}}title//{{{RDF}}}li")
    ancestors = root.findall(f".//{{{PS}}}DocumentAncestors//{{{RDF}}}li")
    return city, title.text if title is not None else None, len(ancestors), b"HasExtendedXMP" in packet


def _extension_segments(data: bytes) -> list[bytes]:
    """The payloads (after their header) of the Extended XMP segments before the first scan."""
    parts, pos = [], 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        payload = data[pos + 4 : pos + 2 + length]
        if data[pos + 1] == 0xE1 and payload.startswith(HEADER):
            parts.append(payload[len(HEADER) :])
        pos += 2 + length
    return parts


def test_extended_xmp_of_a_jpeg_is_read_with_its_standard_packet(tmp_path):
    src = tmp_path / "scan.jpg"
    _photoshop_jpeg(src)
    pic = read(src, 10_000)
    assert pic.notes == []
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 3000, False)


def test_an_incomplete_extension_is_noted_and_the_standard_packet_kept(tmp_path):
    src = tmp_path / "scan.jpg"
    _photoshop_jpeg(src, cut=100)
    pic = read(src, 10_000)
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 0, False)  # no pointer to an extension it lacks
    (note,) = pic.notes
    assert note.startswith("Extended XMP not kept: its segments for GUID") and "bytes" in note


def test_an_extension_whose_md5_is_not_its_guid_is_left_out_with_its_pointer(tmp_path):
    """The GUID is the MD5 of the extension: one changed since (here an ancestor's id, still well-formed XML) was
    merged into the photo's XMP as if it were the one the packet names."""
    standard, guid, parts = _photoshop_xmp()
    at = parts[0].index(b"xmp.did:") + len(b"xmp.did:")
    parts[0] = parts[0][:at] + (b"f" if parts[0][at : at + 1] != b"f" else b"e") + parts[0][at + 1 :]
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, parts)
    pic = read(src, 10_000)
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 0, False)
    (note,) = pic.notes
    assert note.startswith("Extended XMP not kept: its MD5 is ") and note.endswith(f"not the GUID {guid.decode()} "
                                                                                  "the packet names")


def test_a_named_extension_that_is_missing_is_noted_and_its_pointer_dropped(tmp_path):
    """A packet naming an extension that no segment holds (a tool kept the packet and dropped the segments) was
    carried with its pointer, silently: a reader of the derivative looks for an extension that is not there."""
    standard, guid, _ = _photoshop_xmp()
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, [])
    pic = read(src, 10_000)
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 0, False)
    assert pic.notes == [f"Extended XMP not kept: the packet names GUID {guid.decode()}, which no extension segment "
                         "holds"]


def test_a_pointer_in_a_packet_that_cannot_be_parsed_stays_and_the_note_says_so(tmp_path):
    guid = b"0123456789ABCDEF" * 2
    standard = _xmpmeta(b'xmpNote:HasExtendedXMP="' + guid + b'"', b"<dc:title>")  # never closed
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, [])
    pic = read(src, 10_000)
    assert pic.meta.xmp == standard  # carried as it is: what cannot be parsed is not edited
    (note,) = pic.notes
    assert note.startswith(f"Extended XMP not kept: the packet names GUID {guid.decode()}, which no extension segment "
                           "holds; the XMP packet that names it cannot be parsed (XMP packet is not well-formed XML")
    assert note.endswith(") and keeps its pointer")


def test_extension_segments_of_another_guid_are_passed_over_with_a_note(tmp_path):
    standard, guid, parts = _photoshop_xmp()
    stale = b"0123456789ABCDEF" * 2 + struct.pack(">II", 5, 0) + b"<x/>\n"  # left from an earlier save
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, [parts[0], stale, *parts[1:]])
    pic = read(src, 10_000)
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 3000, False)
    assert pic.notes == [f"1 Extended XMP segment(s) not kept: not of the GUID {guid.decode()} the XMP packet names"]


def test_extension_segments_that_disagree_on_its_full_length_are_not_joined(tmp_path):
    """Every segment of an extension gives its full length; one that gives another was overlooked (the last
    segment's length was taken)."""
    standard, _, parts = _photoshop_xmp()
    total = struct.unpack(">I", parts[0][32:36])[0]
    parts[0] = parts[0][:32] + struct.pack(">I", total + 1) + parts[0][36:]
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, parts)
    pic = read(src, 10_000)
    assert _properties(pic.meta.xmp) == ("Lyon", "Picnic", 0, False)
    (note,) = pic.notes
    assert note.startswith("Extended XMP not kept: its segments for GUID ") and note.endswith(
        f"give different full lengths ({total}, {total + 1})")


def test_a_packet_over_one_segment_is_written_as_extended_xmp(tmp_path):
    src = tmp_path / "scan.jpg"
    _photoshop_jpeg(src)
    pic = read(src, 10_000)
    packet = provenance_xmp(pic.meta.xmp, source_name="scan.jpg", source_sha256="ab" * 32, software="oldphoto 0.1.0")
    assert len(packet) > 65504
    out = tmp_path / "out.jpg"
    notes = write(out, pic.pixels, None, "JPEG", pic.meta, provenance_xmp=packet)
    assert notes == []
    again = read(out, 10_000)
    assert again.notes == [] and _properties(again.meta.xmp) == ("Lyon", "Picnic", 3000, False)
    standard = read_xmp_slot(open(out, "rb"))
    assert len(standard) <= 65502 and _properties(standard)[:3] == ("Lyon", "Picnic", 0)
    # the extension is named by the MD5 of its bytes, as the specification asks
    parts = _extension_segments(out.read_bytes())
    extension = b"".join(p[40:] for p in sorted(parts, key=lambda p: struct.unpack(">I", p[36:40])[0]))
    assert len(parts) >= 2 and {p[:32] for p in parts} == {hashlib.md5(extension).hexdigest().upper().encode()}
    assert read_provenance(out) is not None  # oldphoto's own record stays in the standard packet


def test_a_packet_that_cannot_be_split_is_noted(tmp_path):
    # one simple property of 70 kB: nothing can be moved to an extension (attributes stay with their description)
    packet = _xmpmeta(b'dc:source="' + b"s" * 70_000 + b'"', b"")
    notes = write(tmp_path / "out.jpg", gradient(8, 8, 3, np.uint8), None, "JPEG", Metadata(xmp=packet))
    (note,) = notes
    assert note.startswith(f"XMP packet of {len(packet)} bytes not written: larger than one JPEG segment, and ")


def _history(n: int) -> bytes:
    # xmpMM:History: what grows past 64 KB in a photo saved a few hundred times in Photoshop
    events = b"".join(b'<rdf:li rdf:parseType="Resource"><stEvt:action>saved</stEvt:action><stEvt:instanceID>xmp.iid:'
                      b"%032x</stEvt:instanceID><stEvt:when>2015-01-01T00:00:00Z</stEvt:when><stEvt:softwareAgent>"
                      b"Adobe Photoshop CC</stEvt:softwareAgent><stEvt:changed>/</stEvt:changed></rdf:li>" % i
                      for i in range(n))
    return (b'<xmpMM:History xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
            b'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"><rdf:Seq>' + events
            + b"</rdf:Seq></xmpMM:History>")


def test_provenance_is_read_back_when_the_edit_history_had_to_go_to_the_extension(tmp_path):
    """oldphoto's record is the last event of xmpMM:History; a source whose history alone is over 64 KB has it moved
    to Extended XMP, where read_provenance (the standard packet alone) did not look: after a lost state file the run
    refused the very outputs it had made ("not made from this file")."""
    source = _xmpmeta(b'photoshop:City="Lyon"', _history(400))
    packet = provenance_xmp(source, source_name="scan.jpg", source_sha256="ab" * 32, software="oldphoto 0.1.0")
    out = tmp_path / "out.jpg"
    assert write(out, gradient(16, 24, 3, np.uint8), None, "JPEG", Metadata(), provenance_xmp=packet) == []
    assert b"History" not in read_xmp_slot(open(out, "rb"))  # the case at hand: the history is in the extension
    prov = read_provenance(out)
    assert prov is not None and prov.source_sha256 == "ab" * 32 and prov.software == "oldphoto 0.1.0"
    # an extension that is not the one the packet names (its MD5 differs) is not trusted
    data = out.read_bytes()
    digit = data.rindex(b"xmp.iid:") + len(b"xmp.iid:")  # still well-formed, no longer what the GUID names
    other = b"1" if data[digit : digit + 1] == b"0" else b"0"
    (tmp_path / "edited.jpg").write_bytes(data[:digit] + other + data[digit + 1 :])
    assert read_provenance(tmp_path / "edited.jpg") is None


def test_a_standard_packet_stays_within_the_65502_bytes_the_specification_gives(tmp_path):
    """XMP part 3 (1.1.3.1) allows a JPEG's packet 65502 bytes; one of 65503 or 65504 bytes (what an APP1 segment
    holds after the header) was written as it was."""
    base = provenance_xmp(_xmpmeta(b'dc:source=""', b""), source_name="s.jpg", source_sha256="ab" * 32,
                          software="oldphoto 0.1.0")
    for size in (65502, 65503, 65504):
        packet = base.replace(b'dc:source=""', b'dc:source="' + b"s" * (size - len(base)) + b'"')
        assert len(packet) == size
        out = tmp_path / "out.jpg"
        assert write(out, gradient(8, 8, 3, np.uint8), None, "JPEG", Metadata(), provenance_xmp=packet) == []
        standard = read_xmp_slot(open(out, "rb"))
        assert len(standard) <= 65502 and (standard == packet) == (size == 65502)
        assert read_provenance(out) is not None and b"s" * 60000 in read(out, 10_000).meta.xmp


def _nested(depth: int) -> bytes:
    return _xmpmeta(b'xmlns:a="urn:a"', b"<a:b>" * depth + b"</a:b>" * depth)


def test_a_packet_nested_deeper_than_python_recurses_is_an_xmp_error_not_a_failed_file(tmp_path):
    """Serializing walks the elements recursively: a packet nested 1500 deep (expat parses it) raised RecursionError,
    which failed the file ("RecursionError: maximum recursion depth exceeded") instead of carrying the packet as it
    was with a note; read with it as Extended XMP, it failed the read of a photo whose pixels are fine."""
    with pytest.raises(XmpError, match="nests elements deeper than 256 levels"):
        provenance_xmp(_nested(1500), source_name="scan.jpg", source_sha256="ab" * 32, software="oldphoto 0.1.0")
    assert provenance_xmp(_nested(40), source_name="scan.jpg", source_sha256="ab" * 32, software="oldphoto 0.1.0")
    extension = _nested(1500)
    guid = hashlib.md5(extension).hexdigest().upper().encode()
    standard = _xmpmeta(b'xmpNote:HasExtendedXMP="' + guid + b'"', b"")
    src = tmp_path / "scan.jpg"
    _jpeg_with_xmp(src, standard, [guid + struct.pack(">II", len(extension), 0) + extension])
    pic = read(src, 10_000)
    assert pic.notes == ["Extended XMP not kept: XMP packet nests elements deeper than 256 levels"]
    assert b"HasExtendedXMP" not in pic.meta.xmp and b"xmpmeta" in pic.meta.xmp  # the packet, without its pointer


def test_a_stale_pointer_in_element_form_is_replaced_by_the_new_one(tmp_path):
    """A packet given to write() with xmpNote:HasExtendedXMP as an element (its source JPEG's GUID) kept it beside
    the new attribute: two pointers, one to an extension that is not in the file."""
    stale = b"<xmpNote:HasExtendedXMP>" + b"0123456789ABCDEF" * 2 + b"</xmpNote:HasExtendedXMP>"
    packet = _xmpmeta(b'photoshop:City="Lyon"', stale + _ancestors(3000))
    out = tmp_path / "out.jpg"
    assert write(out, gradient(16, 24, 3, np.uint8), None, "JPEG", Metadata(xmp=packet)) == []
    standard = read_xmp_slot(open(out, "rb"))
    assert standard.count(b"HasExtendedXMP") == 1 and b"0123456789ABCDEF" not in standard
    assert _properties(read(out, 10_000).meta.xmp) == ("Lyon", None, 3000, False)
