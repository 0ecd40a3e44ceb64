"""Text in XMP packets the writer re-serializes (io.xmp_tree): what a reader parses back must be what was read."""

from __future__ import annotations

from oldphoto.io import xmp_tree

DC = "http://purl.org/dc/elements/1.1/"
PACKET = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          b'<rdf:Description rdf:about="" xmlns:dc="' + DC.encode() + b'"><dc:description><rdf:Alt>'
          b'<rdf:li xml:lang="x-default">line one&#13;\nline two&#13;&lt;&amp;</rdf:li></rdf:Alt></dc:description>'
          b'</rdf:Description></rdf:RDF></x:xmpmeta>')


def _description(packet: bytes) -> str:
    root, _ = xmp_tree.parse(packet, "scan.jpg")
    return next(el.text for el in root.iter(f"{{{xmp_tree.RDF_NS}}}li"))


def test_carriage_returns_in_text_survive_serializing():
    root, prefixes = xmp_tree.parse(PACKET, "scan.jpg")
    again = xmp_tree.serialize(root, prefixes).encode()
    assert _description(PACKET) == "line one\r\nline two\r<&" == _description(again)


def test_one_nul_before_an_embedded_packet_is_padding_not_utf16():
    """A single NUL before the markup (after the xpacket header, say) is padding stripped as before UTF-16 sidecars
    were read: b"\\0<" alone is not UTF-16, whose second character has its own NUL byte."""
    header = b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    for packet in (b"\0" + PACKET, b" \0" + PACKET + b"\0", header + b"\0" + PACKET + b"\0" * 9):
        assert _description(packet) == "line one\r\nline two\r<&", packet[:8]
    for encoding in ("utf-16-le", "utf-16-be"):  # with and without the byte order mark, NULs and all
        assert _description(("\ufeff" + PACKET.decode()).encode(encoding)) == "line one\r\nline two\r<&"
    assert _description(PACKET.decode().encode("utf-16-be")) == "line one\r\nline two\r<&"
