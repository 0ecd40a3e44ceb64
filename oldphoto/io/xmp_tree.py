"""XMP packets as element trees: parsed (never with a DTD) and serialized back with the packet's own prefixes; and
JPEG's Extended XMP (XMP specification, part 3, 1.1.3.1), for a packet larger than one APP1 segment: the part that
does not fit goes in extension segments, named by the MD5 digest (GUID) of its serialization, which the standard
packet gives as xmpNote:HasExtendedXMP.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from ..errors import XmpError

X_NS = "adobe:ns:meta/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP_NOTE_NS = "http://ns.adobe.com/xmp/note/"
XML_NS = "http://www.w3.org/XML/1998/namespace"
HAS_EXTENDED = f"{{{XMP_NOTE_NS}}}HasExtendedXMP"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"  # before the standard packet in its APP1 segment
JPEG_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\0"
_PACKET_ID = "W5M0MpCehiHzreSzNTczkc9d"  # fixed by the XMP specification
PADDING = (" " * 99 + "\n") * 20  # room for in-place edits by other tools, as the XMP spec recommends
_TRAILER = b'<?xpacket end="w"?>'
_KNOWN = {X_NS: "x", RDF_NS: "rdf", XMP_NOTE_NS: "xmpNote"}  # prefixes for these when a packet lacks them
_RDF, _DESCRIPTION, _ABOUT = f"{{{RDF_NS}}}RDF", f"{{{RDF_NS}}}Description", f"{{{RDF_NS}}}about"
_MAX_DEPTH = 256
_GUID = re.compile(rb"HasExtendedXMP\s*(?:=\s*[\"']|>)\s*([0-9A-Fa-f]{32})")
# What a standard packet keeps whatever it costs: its own ids, oldphoto's properties (the source's checksum) and the
# pointer to the extension. oldphoto's history event goes with xmpMM:History, last: read_provenance takes it from the
# extension when the history alone is too large to stay
_MM_NS = "http://ns.adobe.com/xap/1.0/mm/"
_STAYS = frozenset({HAS_EXTENDED} | {f"{{{_MM_NS}}}{n}" for n in ("DocumentID", "InstanceID", "OriginalDocumentID",
                                                                  "DerivedFrom")})
_STAYS_NS = ("urn:oldphoto:xmp:1.0/",)
# Adobe's order (XMP Toolkit, PackageForJPEG): Camera Raw settings first, then Photoshop's history, then the largest
# properties; the edit history (xmpMM:History), whose last event is oldphoto's provenance, goes last
_CAMERA_RAW_NS = "http://ns.adobe.com/camera-raw-settings/1.0/"
_PHOTOSHOP_HISTORY = "{http://ns.adobe.com/photoshop/1.0/}History"
_MM_HISTORY = f"{{{_MM_NS}}}History"


def names_any(packet: bytes, names: tuple[str, ...]) -> bool:
    """Could `packet` hold one of `names` (properties, namespaces)? A byte search in each encoding a packet may be
    written in, so that a packet holding none is passed over without being parsed."""
    return any(name.encode(codec) in packet for name in names for codec in ("utf-8", "utf-16-le", "utf-16-be"))


def parse(packet: bytes, source_name: str) -> tuple[ET.Element, dict[str, str]]:
    """(root element, {namespace uri: prefix as the packet wrote it}); XmpError when it cannot be parsed."""
    body = re.sub(rb"<\?xpacket[^>]*\?>", b"", packet)
    # NUL padding (an embedded packet's, for in-place edits) is stripped from UTF-8 only: in UTF-16 (a sidecar may be
    # written so) every other byte of the markup is NUL, and the ends' would go with it
    body = body if _utf16(body) else body.strip(b"\0 \t\r\n")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body or _declares_dtd(body):
        raise XmpError(source_name, "XMP packet declares a DTD or entities; refused")
    try:
        root = ET.fromstring(body)
        prefixes: dict[str, str] = {}
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(body), events=("start-ns",)):
            prefixes.setdefault(uri, prefix)
    except ET.ParseError as e:
        raise XmpError(source_name, f"XMP packet is not well-formed XML ({e})") from e
    except (LookupError, ValueError) as e:  # an encoding Python does not know, or a multi-byte one expat cannot read
        raise XmpError(source_name, f"XMP packet declares an encoding that cannot be read ({e})") from e
    _check_depth(root, source_name)
    return root, prefixes


def _utf16(data: bytes) -> bool:
    """Whether `data` is XML in UTF-16: a byte order mark, or its first two characters "<" and another, each with a
    NUL byte beside it (b"\0<" alone is an embedded packet's NUL padding before UTF-8 markup)."""
    head = data.lstrip(b" \t\r\n")[:4]
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    return len(head) == 4 and (head[:2] == b"<\0" and head[2] != 0 and head[3] == 0
                               or head[0] == 0 and head[1:3] == b"<\0" and head[3] != 0)


class _Doctype(Exception):
    pass


class _Element(Exception):
    pass


def _declares_dtd(body: bytes) -> bool:
    """Whether `body` has a document type declaration, in whatever encoding it is written: in UTF-16 (an XMP sidecar
    may be) the bytes b"<!DOCTYPE" are not there, and the entities it declares would be expanded. Read by expat only
    up to the DOCTYPE or the first element, after which none can come; what is not well-formed is left to the parse."""

    def doctype(*_) -> None:
        raise _Doctype

    def element(*_) -> None:
        raise _Element

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = doctype
    parser.StartElementHandler = element
    try:
        parser.Parse(body, True)
    except _Doctype:
        return True
    except _Element:
        return False  # the root element came first: no DTD can follow
    except (expat.ExpatError, LookupError, ValueError):
        return False  # not well-formed, or an encoding expat cannot read: the parse refuses it, saying why
    return False  # no element at all: the parse refuses it too


def _check_depth(root: ET.Element, source_name: str) -> None:
    """XmpError for a tree deeper than _MAX_DEPTH: serialize recurses once per level, and a packet nested about a
    thousand deep (expat reads it) would raise RecursionError there; XMP itself nests a few levels (a struct in an
    array in a property)."""
    todo = [(root, 1)]
    while todo:
        el, depth = todo.pop()
        if depth > _MAX_DEPTH:
            raise XmpError(source_name, f"XMP packet nests elements deeper than {_MAX_DEPTH} levels")
        todo.extend((child, depth + 1) for child in el)


# A literal carriage return in text is read back as a line feed (XML end-of-line handling): a source's &#13; stays
# a carriage return only written as one.
_TEXT_ENTITIES = {"\r": "&#13;"}


def serialize(root: ET.Element, source_prefixes: Mapping[str, str], preferred: Mapping[str, str] | None = None) -> str:
    """XML text with the packet's own prefixes kept (ElementTree would rename them ns0, ns1 ...); `preferred`
    ({uri: prefix}) names the namespaces the packet did not declare."""
    preferred = preferred or {}
    used: set[str] = set()
    for el in root.iter():
        for name in (el.tag, *el.attrib):
            if name.startswith("{"):
                used.add(name[1 : name.index("}")])
    used.discard(XML_NS)
    prefixes: dict[str, str] = {}
    taken: set[str] = set()
    for uri in sorted(used, key=lambda u: (u not in source_prefixes, u)):
        p = source_prefixes.get(uri) or preferred.get(uri) or _KNOWN.get(uri) or "ns"
        base, n = p, 1
        while p in taken or not p:
            p, n = f"{base or 'ns'}{n}", n + 1
        prefixes[uri] = p
        taken.add(p)

    def qname(name: str) -> str:
        if not name.startswith("{"):
            return name
        uri, local = name[1:].split("}", 1)
        return f"xml:{local}" if uri == XML_NS else f"{prefixes[uri]}:{local}"

    out: list[str] = []

    def emit(el: ET.Element, top: bool) -> None:
        attrs = [f"xmlns:{p}={quoteattr(u)}" for u, p in prefixes.items()] if top else []
        attrs += [f"{qname(k)}={quoteattr(v)}" for k, v in el.attrib.items()]
        out.append(f"<{qname(el.tag)}" + "".join(" " + a for a in attrs))
        if len(el) == 0 and not el.text:
            out.append("/>")
        else:
            out.append(">" + escape(el.text or "", _TEXT_ENTITIES))
            for child in el:
                emit(child, False)
            out.append(f"</{qname(el.tag)}>")
        out.append(escape(el.tail or "", _TEXT_ENTITIES))

    emit(root, True)
    return "".join(out).strip()


def wrap(body: str, padding: bool = True) -> bytes:
    """A serialized x:xmpmeta as an XMP packet (UTF-8), with room for in-place edits unless `padding` is False."""
    return f'<?xpacket begin="\ufeff" id="{_PACKET_ID}"?>\n{body}\n{PADDING if padding else ""}'.encode() + _TRAILER


def unpadded(packet: bytes) -> bytes:
    """A packet wrap() made, without the padding kept for in-place edits (of no use in a file of its own)."""
    padded = PADDING.encode() + _TRAILER
    return packet[: -len(padded)] + _TRAILER if packet.endswith(padded) else packet


def _rdf(root: ET.Element) -> ET.Element | None:
    return root if root.tag == _RDF else root.find(_RDF)


def extension_guid(packet: bytes) -> bytes | None:
    """The GUID a standard packet gives its Extended XMP (xmpNote:HasExtendedXMP), as 32 ASCII hex digits."""
    found = _GUID.search(packet)
    return found.group(1) if found else None


def is_part_of(part: bytes, guid: bytes) -> bool:
    """Is `part`, the payload of a JPEG extension segment after its header, one of the Extended XMP named `guid`?"""
    return len(part) >= 40 and part[:32].upper() == guid.upper()


def join_extension(parts: list[bytes], guid: bytes) -> tuple[bytes | None, str]:
    """The Extended XMP named `guid` from the payloads of a JPEG's extension segments (after their header: GUID,
    full length, offset of the part, the part; those of other GUIDs are passed over): (its bytes, "") when its
    segments agree on its full length, hold all of it without gaps or overlaps, and its MD5 is `guid`, as the
    specification makes the GUID; else (None, what is wrong)."""
    shown = guid.decode("ascii")
    chunks: dict[int, bytes] = {}
    totals: set[int] = set()
    for part in parts:
        if is_part_of(part, guid):
            total, offset = struct.unpack(">II", part[32:40])
            totals.add(total)
            if chunks.setdefault(offset, part[40:]) != part[40:]:
                return None, f"two of its segments for GUID {shown} give offset {offset} different bytes"
    if not chunks:
        return None, f"the packet names GUID {shown}, which no extension segment holds"
    if len(totals) > 1:
        lengths = ", ".join(map(str, sorted(totals)))
        return None, f"its segments for GUID {shown} give different full lengths ({lengths})"
    (total,) = totals
    offsets = sorted(chunks)
    ends = [offset + len(chunks[offset]) for offset in offsets]
    if offsets[0] != 0 or ends[-1] != total or ends[:-1] != offsets[1:]:  # a part missing, or parts overlapping
        held = sum(len(c) for c in chunks.values())
        return None, f"its segments for GUID {shown} hold {held} of {total} bytes, not each once in order"
    data = b"".join(chunks[offset] for offset in offsets)
    digest = hashlib.md5(data).hexdigest().upper()
    if digest != shown.upper():  # changed by a tool that did not rename it, or not the extension the packet names
        return None, f"its MD5 is {digest}, not the GUID {shown} the packet names"
    return data, ""


def _drop_pointer(rdf: ET.Element) -> None:
    """Remove xmpNote:HasExtendedXMP, in attribute or element form, from every rdf:Description of `rdf`."""
    for d in rdf.findall(_DESCRIPTION):
        d.attrib.pop(HAS_EXTENDED, None)
        for el in d.findall(HAS_EXTENDED):
            d.remove(el)


def without_extension(standard: bytes, source_name: str) -> bytes:
    """A JPEG's standard packet without its pointer to an Extended XMP that is not kept (a reader would look for it
    in the derivative); XmpError when it cannot be parsed."""
    root, prefixes = parse(standard, source_name)
    rdf = _rdf(root)
    if rdf is not None:
        _drop_pointer(rdf)
    return wrap(serialize(root, prefixes))


def merge_extension(standard: bytes, extension: bytes, source_name: str) -> bytes:
    """One packet with the properties of a JPEG's standard packet and of its Extended XMP (which holds other
    top-level properties of the same resource), without the pointer to the extension. XmpError when either cannot be
    parsed."""
    return wrap(serialize(*_merged(standard, extension, source_name)))


def parse_merged(standard: bytes, extension: bytes, source_name: str) -> ET.Element:
    """The tree parse() gives of merge_extension's packet (its root), without serializing and parsing it again:
    for a reader of its properties. XmpError where merge_extension or that parse would raise it."""
    root, _ = _merged(standard, extension, source_name)
    _check_depth(root, source_name)  # the extension's properties may sit a level deeper here than in their packet
    return root


def _merged(standard: bytes, extension: bytes, source_name: str) -> tuple[ET.Element, dict[str, str]]:
    """merge_extension's packet as (root, {namespace uri: prefix}), not serialized."""
    root, prefixes = parse(standard, source_name)
    ext_root, ext_prefixes = parse(extension, source_name)
    rdf, ext_rdf = _rdf(root), _rdf(ext_root)
    if rdf is None or ext_rdf is None:
        raise XmpError(source_name, "Extended XMP or its standard packet has no rdf:RDF")
    _drop_pointer(rdf)
    present: set[str] = set()
    for d in rdf.findall(_DESCRIPTION):
        present |= {el.tag for el in d} | {k for k in d.attrib if k != _ABOUT}
    for d in ext_rdf.findall(_DESCRIPTION):
        # a property is in one part only; should a writer have put one in both, the standard packet's stands
        for el in [el for el in d if el.tag in present]:
            d.remove(el)
        for k in [k for k in d.attrib if k in present]:
            del d.attrib[k]
        rdf.append(d)
    return root, {**ext_prefixes, **prefixes}


def split_for_jpeg(packet: bytes, limit: int) -> tuple[bytes, bytes | None, bytes]:
    """(standard packet of at most `limit` bytes, Extended XMP or None, its GUID) for a JPEG: a packet that does not
    fit loses its padding, then top-level properties move to the extension (see _STAYS for what never does).
    ValueError (XmpError for a packet that cannot be parsed) when even that does not make it fit."""
    if len(packet) <= limit:
        return packet, None, b""
    root, prefixes = parse(packet, "XMP packet")
    if root.tag == _RDF:
        wrapper = ET.Element(f"{{{X_NS}}}xmpmeta")
        wrapper.append(root)
        root = wrapper
    rdf = _rdf(root)
    descriptions = rdf.findall(_DESCRIPTION) if rdf is not None else []
    standard = wrap(serialize(root, prefixes), padding=False)
    if len(standard) <= limit or not descriptions:
        if len(standard) > limit:
            raise ValueError("it has no rdf:Description whose properties could go to Extended XMP")
        return standard, None, b""
    target = descriptions[0]
    _drop_pointer(rdf)  # a pointer the packet had (to its source's extension), in either form, is stale
    target.set(HAS_EXTENDED, "0" * 32)  # the GUID's length, to measure the standard part
    movable = [(d, el) for d in descriptions for el in list(d)
               if el.tag not in _STAYS and not el.tag.startswith(tuple(f"{{{ns}}}" for ns in _STAYS_NS))]

    def rank(item: tuple[ET.Element, ET.Element]) -> tuple[int, int]:
        tag = item[1].tag
        if tag.startswith(f"{{{_CAMERA_RAW_NS}}}"):
            return (0, 0)
        if tag == _PHOTOSHOP_HISTORY:
            return (1, 0)
        if tag == _MM_HISTORY:
            return (3, 0)
        return (2, -len(ET.tostring(item[1])))

    ext_root = ET.Element(f"{{{X_NS}}}xmpmeta")
    ext_desc = ET.SubElement(ET.SubElement(ext_root, _RDF), _DESCRIPTION, {_ABOUT: target.get(_ABOUT, "")})
    for d, el in sorted(movable, key=rank):
        d.remove(el)
        ext_desc.append(el)
        if len(wrap(serialize(root, prefixes), padding=False)) <= limit:
            break
    else:
        raise ValueError(f"its standard part stays over {limit} bytes with every movable property in Extended XMP")
    extension = serialize(ext_root, prefixes).encode()
    guid = hashlib.md5(extension).hexdigest().upper().encode()
    target.set(HAS_EXTENDED, guid.decode())
    return wrap(serialize(root, prefixes), padding=False), extension, guid
