"""Provenance of a derivative, recorded in XMP as archives expect: the source's packet is kept and gets
an xmpMM:History event (action, softwareAgent, when, parameters), xmpMM:DerivedFrom (source file name and
its XMP ids: parent_ids), new Document/Instance ids, the source's SHA-256 (oldphoto:SourceSHA256), the SHA-256 of
the source's XMP sidecar when one was carried beside the derivative (oldphoto:SidecarSHA256), when a defect mask was
made, the percent of pixels it marked (oldphoto:MaskCoverage), when a curator's mask was used instead of the
detector's (--masks), its name in the mask folder and its SHA-256 (oldphoto:MaskFile, oldphoto:MaskSHA256), and the
run's lasting notes on the file (oldphoto:Notes, an rdf:Seq: what the derivative lacks, how the scan was read; at
most NOTES_LIMIT bytes of them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ImageError, XmpError
from . import xmp_tree
from .reader import open_source
from .xmp_slot import SlotError, read_jpeg_extension, read_xmp_slot

OLDPHOTO_NS = "urn:oldphoto:xmp:1.0/"
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "stRef": "http://ns.adobe.com/xap/1.0/sType/ResourceRef#",
    "oldphoto": OLDPHOTO_NS,
}
# Properties that restate how the source file stored its pixels (Photoshop, Lightroom and Bridge copy them from the
# file's own tags): wrong for a derivative of another size, orientation, resolution, bit depth or colour mode, and
# given by the derivative's own tags. A reader that takes the packet's value would turn an upright restoration
# again by the source's tiff:Orientation, or size it by its old dimensions.
_TIFF_NS, _EXIF_NS = "http://ns.adobe.com/tiff/1.0/", "http://ns.adobe.com/exif/1.0/"
_PHOTOSHOP_NS = "http://ns.adobe.com/photoshop/1.0/"
_FILE_LAYOUT = tuple(f"{{{ns}}}{local}" for ns, names in (
    (_TIFF_NS, ("ImageWidth", "ImageLength", "BitsPerSample", "Compression", "PhotometricInterpretation",
                "SamplesPerPixel", "PlanarConfiguration", "YCbCrSubSampling", "YCbCrPositioning", "Orientation",
                "XResolution", "YResolution", "ResolutionUnit", "NativeDigest")),
    (_EXIF_NS, ("PixelXDimension", "PixelYDimension", "ComponentsConfiguration", "CompressedBitsPerPixel",
               "NativeDigest")),
    (_PHOTOSHOP_NS, ("ColorMode", "ICCProfile")),
    (xmp_tree.XMP_NOTE_NS, ("HasExtendedXMP",)),  # the source JPEG's extension segments are not this file's
) for local in names)
# a preview of the source's pixels that Photoshop and Bridge (CS to CS4) kept in the packet, base64 JPEG
_XMP_THUMBNAILS = f"{{{NS['xmp']}}}Thumbnails"
# prefixes for the namespaces a packet does not declare itself
PREFERRED = {uri: p for p, uri in NS.items()} | {xmp_tree.XMP_NOTE_NS: "xmpNote"}
# the most bytes (UTF-8) of notes an oldphoto:Notes holds: a JPEG's main XMP packet (64 KB, with the history of
# earlier tools) stays in one segment for them; those past it are left out, a last entry saying how many
NOTES_LIMIT = 4096
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _q(prefix: str, local: str) -> str:
    return f"{{{NS[prefix]}}}{local}"


def read_source_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (constant memory). Raises ImageError if it cannot be read."""
    h = hashlib.sha256()
    with open_source(path) as f:
        try:
            while block := f.read(chunk_size):
                h.update(block)
        except OSError as e:
            raise ImageError(path, f"cannot read for checksum: {e.strerror or e}") from e
    return h.hexdigest()


@dataclass(frozen=True)
class SourceStamp:
    """What a stat says of a source file: its device and inode (a file renamed over it is another one), size, and
    mtime and ctime in ns (a write in place moves both; a copy that keeps the mtime, `cp -p` or rsync, renamed over it
    still has another inode and ctime). Taken before the file's sha256 is read and again before its outputs go in
    place (pipeline): the same stamp then says that the bytes hashed are the bytes decoded."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> "SourceStamp":
        """The stamp of `path` now (links followed); OSError when it cannot be stat'ed."""
        return cls.from_stat(os.stat(path))

    @classmethod
    def from_stat(cls, st: os.stat_result) -> "SourceStamp":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _simple_values(d: ET.Element, prop: str) -> list[str]:
    """The values of a simple property of one rdf:Description, attribute form first, then element form."""
    values = [d.attrib[prop]] if prop in d.attrib else []
    return values + [(c.text or "").strip() for c in d.findall(prop)]


def _first_simple(descriptions: list[ET.Element], prop: str) -> str | None:
    """The first non-empty value of a simple property in `descriptions` (None when none has one)."""
    return next((v for d in descriptions for v in _simple_values(d, prop) if v), None)


def _pop_simple(descriptions: list[ET.Element], prop: str) -> str | None:
    """Remove a simple property (attribute or element form) from every rdf:Description; return its first
    non-empty value."""
    found = _first_simple(descriptions, prop)
    for d in descriptions:
        d.attrib.pop(prop, None)
        for child in d.findall(prop):
            d.remove(child)
    return found


def _xml_text(text: str) -> str:
    """`text` with what XML 1.0 cannot hold replaced by U+FFFD: control characters, and surrogates, which is
    how Python holds the bytes of a file name that is not UTF-8 (e.g. Latin-1 b"caf\\xe9.png")."""
    return _NOT_XML.sub("\ufffd", text)


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    el.text = None if text is None else _xml_text(text)
    el.tail = "\n"
    return el


@dataclass(frozen=True)
class ParentIds:
    """The identity of the file a derivative is made from, as its xmpMM:DerivedFrom (stRef:documentID, instanceID)
    and xmpMM:OriginalDocumentID state it: the parent's xmpMM:DocumentID, InstanceID and OriginalDocumentID (None
    where it gives none). The derivative's OriginalDocumentID is the parent's own, else the parent's DocumentID."""

    document_id: str | None = None
    instance_id: str | None = None
    original_document_id: str | None = None

    @property
    def original(self) -> str | None:
        """The derivative's xmpMM:OriginalDocumentID."""
        return self.original_document_id or self.document_id


def xmp_ids(packet: bytes | None, source_name: str = "XMP") -> ParentIds | None:
    """The xmpMM ids a packet gives its file (DocumentID, InstanceID, OriginalDocumentID: the first non-empty value of
    each in its top-level rdf:Description elements, as provenance_xmp replaces them); None when it gives none of them,
    or there is no packet, it cannot be parsed or provenance_xmp refuses its root (a sidecar not carried)."""
    if not packet:
        return None
    try:
        root, _ = xmp_tree.parse(packet, source_name)
    except XmpError:
        return None
    descriptions = _top_descriptions(root)
    ids = ParentIds(*(_first_simple(descriptions, _q("xmpMM", local))
                      for local in ("DocumentID", "InstanceID", "OriginalDocumentID")))
    return ids if ids != ParentIds() else None


def _top_descriptions(root: ET.Element) -> list[ET.Element]:
    """The rdf:Description elements describing a packet's file: those of its rdf:RDF, not those nested in a property
    (a Photoshop xmpMM:Pantry item's ids are another document's); none for a packet whose root provenance_xmp refuses
    (not x:xmpmeta or rdf:RDF: an x:xapmeta, say): a sidecar with such a root is not carried, and its ids are not the
    parent's either."""
    if root.tag == _q("rdf", "RDF"):
        rdf = root
    elif root.tag == _q("x", "xmpmeta"):
        rdf = root.find(_q("rdf", "RDF"))
    else:
        rdf = None
    return [] if rdf is None else rdf.findall(_q("rdf", "Description"))


def parent_ids(embedded: bytes | None, sidecar: bytes | None = None) -> ParentIds:
    """The identity of a scan, as every derivative of it (and the derivative's XMP sidecar) names its parent: the ids
    of the scan's embedded packet, which are the file's own; where it gives none (no packet, none in it, or one that
    cannot be parsed), those of its XMP sidecar, as Adobe's tools take a raw file's sidecar DocumentID for the file's
    (its XMP lives there); else none (ParentIds()). Taken whole from one packet, never mixed from both."""
    return xmp_ids(embedded, "XMP") or xmp_ids(sidecar, "XMP sidecar") or ParentIds()


def provenance_xmp(source_xmp: bytes | None, *, source_name: str, source_sha256: str, software: str,
                   action: str = "derived", parameters: Mapping[str, object] | None = None,
                   models: Mapping[str, object] | None = None, when: datetime | None = None,
                   mask_coverage: float | None = None, notes: list[str] | None = None,
                   sidecar_sha256: str | None = None, document_id: str | None = None,
                   instance_id: str | None = None, metadata_date: datetime | None = None,
                   kept_notes: Sequence[str] = (), parent: ParentIds | None = None,
                   mask_file: str | None = None, mask_sha256: str | None = None) -> bytes:
    """XMP packet (UTF-8 bytes) for a derivative of `source_name`.

    source_xmp: the source's packet (kept: every other property survives) or None.
    action: "derived" when pixels changed (restoration), "converted" for a format change only.
    parameters / models: settings and model names + weight SHA-256, stored as JSON in stEvt:parameters.
    mask_coverage: percent of the pixels the defect mask marked (a result, not a setting: it stays out of the
    parameters, whose fingerprint decides what is up to date); None writes none.
    notes: gets a line for what of the source's packet is dropped other than restated file layout (a thumbnail).
    kept_notes: the run's notes on the file that stay true of the derivative (report.lasting_notes), written as
    oldphoto:Notes (at most NOTES_LIMIT bytes: see capped_notes) so that a run that recognises it after a lost state
    file reports them as a record would; none writes none.
    sidecar_sha256: of the source's XMP sidecar carried beside the derivative (io.sidecar), None when none was.
    document_id / instance_id: the derivative's xmpMM ids (new ones when None): its embedded packet and its sidecar
    describe one file, so they share them (and `when`).
    metadata_date: xmp:MetadataDate, when the metadata changed later than `when` (a sidecar rewritten alone for an
    unchanged derivative: io.sidecar); `when` by default.
    parent: the source file's identity, which xmpMM:DerivedFrom and OriginalDocumentID state (parent_ids: the same in
    the derivative's embedded packet and its sidecar, each made from another source packet); None: the ids of
    `source_xmp` itself. Either way the source packet's own ids are replaced by the derivative's.
    mask_file / mask_sha256: the curated mask the derivative was restored with (--masks: its name in the mask folder,
    the sha256 of its bytes), None when the detector's mask was used.
    Raises XmpError(source_name, ...) (an ImageError) when the source packet cannot be parsed.
    """
    if not action or not action.isidentifier():
        raise ValueError(f"action must be a word such as 'derived' or 'converted', got {action!r}")
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is None:
        raise ValueError("when must carry a time zone")
    root, prefixes, descriptions = _source_descriptions(source_xmp, source_name)
    target = descriptions[0]
    own, history = _strip_source_claims(descriptions, notes)
    parent = own if parent is None else parent

    instance = instance_id or f"xmp.iid:{uuid.uuid4()}"
    _add_identity(target, document_id or f"xmp.did:{uuid.uuid4()}", instance, metadata_date or when, source_name,
                  parent)
    _add_source(target, source_name, source_sha256, sidecar_sha256, mask_coverage, kept_notes, mask_file, mask_sha256)
    settings = {"settings": dict(parameters or {}), "models": dict(models or {})}
    _add_event(target, history, action, instance, when.isoformat(timespec="seconds"), software, settings)
    return xmp_tree.wrap(xmp_tree.serialize(root, prefixes, PREFERRED))


def _source_descriptions(source_xmp: bytes | None,
                         source_name: str) -> tuple[ET.Element, dict[str, str], list[ET.Element]]:
    """(x:xmpmeta root, prefixes, rdf:Description elements, at least one) of the source's packet, a bare rdf:RDF
    wrapped and what is missing added; a fresh one for no packet. Raises XmpError when it cannot be parsed or has
    another root."""
    if source_xmp:
        root, prefixes = xmp_tree.parse(source_xmp, source_name)
    else:
        root, prefixes = ET.Element(_q("x", "xmpmeta")), {}
    if root.tag == _q("rdf", "RDF"):
        wrapper = ET.Element(_q("x", "xmpmeta"))
        wrapper.append(root)
        root = wrapper
    if root.tag != _q("x", "xmpmeta"):
        raise XmpError(source_name, f"XMP packet root is {root.tag}, not x:xmpmeta or rdf:RDF")
    rdf = root.find(_q("rdf", "RDF"))
    if rdf is None:
        rdf = ET.SubElement(root, _q("rdf", "RDF"))
    descriptions = rdf.findall(_q("rdf", "Description"))
    if not descriptions:
        descriptions = [ET.SubElement(rdf, _q("rdf", "Description"), {_q("rdf", "about"): ""})]
    return root, prefixes, descriptions


def _strip_source_claims(descriptions: list[ET.Element],
                         notes: list[str] | None) -> tuple[ParentIds, ET.Element | None]:
    """Remove from the source's descriptions what is not true of the derivative (noted in `notes` where not restated
    file layout); returns (the source packet's own ids, its xmpMM:History or None)."""
    own = ParentIds(*(_pop_simple(descriptions, _q("xmpMM", local))
                      for local in ("DocumentID", "InstanceID", "OriginalDocumentID")))
    # what oldphoto said of the source's own source, if it was a derivative too, is not true of this file
    for prop in (_q("xmp", "MetadataDate"), _q("oldphoto", "SourceFile"), _q("oldphoto", "SourceSHA256"),
                 _q("oldphoto", "SidecarSHA256"), _q("oldphoto", "MaskCoverage"), _q("oldphoto", "Notes"),
                 _q("oldphoto", "MaskFile"), _q("oldphoto", "MaskSHA256")):
        _pop_simple(descriptions, prop)
    for prop in _FILE_LAYOUT:  # the derivative's own tags say these
        _pop_simple(descriptions, prop)
    if any(d.findall(_XMP_THUMBNAILS) for d in descriptions):
        for d in descriptions:
            for old in d.findall(_XMP_THUMBNAILS):
                d.remove(old)
        if notes is not None:
            notes.append("XMP thumbnail (xmp:Thumbnails) dropped: it shows the unrestored image")
    # the source's own DerivedFrom describes its parent, not ours; darktable's sidecars give it as a simple property
    # (the raw file's name) in attribute form
    _pop_simple(descriptions, _q("xmpMM", "DerivedFrom"))
    history = next((h for d in descriptions for h in d.findall(_q("xmpMM", "History"))), None)
    return own, history


def _add_identity(target: ET.Element, document: str, instance: str, metadata_date: datetime, source_name: str,
                  parent: ParentIds) -> None:
    """The derivative's xmpMM ids and xmp:MetadataDate, and its xmpMM:DerivedFrom: `source_name` and `parent`'s ids."""
    _add(target, _q("xmpMM", "DocumentID"), document)
    _add(target, _q("xmpMM", "InstanceID"), instance)
    if parent.original:
        _add(target, _q("xmpMM", "OriginalDocumentID"), parent.original)
    _add(target, _q("xmp", "MetadataDate"), metadata_date.isoformat(timespec="seconds"))
    derived = _add(target, _q("xmpMM", "DerivedFrom"), **{_q("rdf", "parseType"): "Resource"})
    _add(derived, _q("stRef", "filePath"), source_name)
    if parent.document_id:
        _add(derived, _q("stRef", "documentID"), parent.document_id)
    if parent.instance_id:
        _add(derived, _q("stRef", "instanceID"), parent.instance_id)


def _add_source(target: ET.Element, source_name: str, source_sha256: str, sidecar_sha256: str | None,
                mask_coverage: float | None, kept_notes: Sequence[str], mask_file: str | None = None,
                mask_sha256: str | None = None) -> None:
    """oldphoto's own properties: the source file and its checksums, the mask's coverage (and the curated mask used),
    and the lasting notes."""
    _add(target, _q("oldphoto", "SourceFile"), source_name)
    _add(target, _q("oldphoto", "SourceSHA256"), source_sha256)
    if sidecar_sha256 is not None:
        _add(target, _q("oldphoto", "SidecarSHA256"), sidecar_sha256)
    if mask_coverage is not None:
        _add(target, _q("oldphoto", "MaskCoverage"), repr(float(mask_coverage)))  # repr: read back exactly
    if mask_sha256 is not None:
        _add(target, _q("oldphoto", "MaskFile"), mask_file or "")
        _add(target, _q("oldphoto", "MaskSHA256"), mask_sha256)
    if kept_notes:
        listed = _add(_add(target, _q("oldphoto", "Notes")), _q("rdf", "Seq"))
        for note in capped_notes(kept_notes):
            _add(listed, _q("rdf", "li"), note)


def _add_event(target: ET.Element, history: ET.Element | None, action: str, instance: str, stamp: str,
               software: str, settings: dict[str, dict]) -> None:
    """Append the derivative's stEvt entry to `history` (the source's xmpMM:History; a new one when None)."""
    if history is None:
        history = _add(target, _q("xmpMM", "History"))
    seq = history.find(_q("rdf", "Seq"))
    if seq is None:
        seq = _add(history, _q("rdf", "Seq"))
    event = _add(seq, _q("rdf", "li"), **{_q("rdf", "parseType"): "Resource"})
    _add(event, _q("stEvt", "action"), action)
    _add(event, _q("stEvt", "instanceID"), instance)
    _add(event, _q("stEvt", "when"), stamp)
    _add(event, _q("stEvt", "softwareAgent"), software)
    _add(event, _q("stEvt", "parameters"),
         json.dumps(settings, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":")))
    if action == "derived":
        _add(event, _q("stEvt", "changed"), "/")  # the whole image changed


def capped_notes(notes: Sequence[str]) -> list[str]:
    """`notes` as oldphoto:Notes holds them: in order while their UTF-8 bytes stay within NOTES_LIMIT, then, when some
    do not fit, one entry saying how many were left out."""
    kept: list[str] = []
    size = 0
    for i, note in enumerate(notes):
        size += len(note.encode("utf-8", "surrogatepass"))
        if size > NOTES_LIMIT:
            return kept + [f"{len(notes) - i} more note(s) not kept in the XMP"]
        kept.append(note)
    return kept


@dataclass(frozen=True)
class Provenance:
    """What oldphoto recorded in a derivative's XMP (provenance_xmp)."""

    source_sha256: str  # oldphoto:SourceSHA256
    software: str  # stEvt:softwareAgent of the last history event
    parameters: dict  # that event's stEvt:parameters: {"settings": {...}, "models": {...}}
    mask_coverage: float | None = None  # oldphoto:MaskCoverage, percent; None when absent or not a number
    sidecar_sha256: str | None = None  # oldphoto:SidecarSHA256: the source's XMP sidecar carried; None: none was
    # the derivative's xmpMM:DocumentID and InstanceID, and its history event's stEvt:when (as written): a sidecar
    # rewritten alone describes the derivative by them (pipeline.update_sidecar); None when absent
    document_id: str | None = None
    instance_id: str | None = None
    when: str | None = None
    # that event's stEvt:instanceID: the instance oldphoto made; another than instance_id when a tool saved the file
    # since without recording a step of its own
    event_instance_id: str | None = None
    notes: tuple[str, ...] = ()  # oldphoto:Notes: the run's lasting notes on the file; () when none (or before kept)
    # the parent as the derivative names it: its xmpMM:DerivedFrom's stRef:documentID and instanceID, and its
    # xmpMM:OriginalDocumentID (ParentIds.original gives it back); a sidecar rewritten alone names the same
    parent: ParentIds = ParentIds()
    # oldphoto:MaskFile and MaskSHA256: the curated mask it was restored with (--masks); None: the detector's
    mask_file: str | None = None
    mask_sha256: str | None = None


# an XMP sidecar larger than this is not one (a misnamed file): never read into memory whole
SIDECAR_LIMIT = 64 << 20


def read_sidecar_bytes(path: str | Path) -> bytes:
    """The content of an XMP sidecar file (io.sidecar), at most SIDECAR_LIMIT bytes. Raises ImageError when it cannot
    be read (a FIFO found in its place is refused, not waited on: reader.open_source) or is larger."""
    with open_source(path) as f:
        try:
            data = f.read(SIDECAR_LIMIT + 1)
        except OSError as e:
            raise ImageError(path, f"cannot read: {e.strerror or e}") from e
    if len(data) > SIDECAR_LIMIT:
        raise ImageError(path, f"larger than {SIDECAR_LIMIT >> 20} MiB: not an XMP sidecar")
    return data


def read_provenance(path: str | Path) -> Provenance | None:
    """The provenance in the XMP packet of a file oldphoto wrote, when oldphoto made the last change recorded in
    its history; None otherwise (no packet, no oldphoto properties, a later step by another tool, a packet that
    cannot be parsed, or a file whose structure cannot be walked). The packet is the one in the container's XMP
    slot (xmp_slot), found without decoding the image, with a JPEG's Extended XMP when its MD5 is the GUID the
    packet names: a packet elsewhere in the file (in EXIF carried from the scan, say) is not the file's own, even
    when it names oldphoto. An XMP sidecar (a name ending in .xmp, which oldphoto never gives an image) is its packet
    whole. Raises OSError when the file cannot be read."""
    if Path(path).suffix.lower() == ".xmp":
        with open(path, "rb") as f:
            packet, extension = f.read(SIDECAR_LIMIT + 1), None
        if len(packet) > SIDECAR_LIMIT:  # not one oldphoto wrote
            return None
    else:
        with open(path, "rb") as f:
            try:
                packet = read_xmp_slot(f)
                guid = xmp_tree.extension_guid(packet) if packet else None
                parts = read_jpeg_extension(f) if guid else []
            except SlotError:  # a damaged or ambiguous file is not recognised: the run refuses rather than trusts it
                return None
        if packet is None:
            return None
        # A JPEG packet over one segment has its edit history, oldphoto's event last, in Extended XMP when the history
        # is what made it large (xmp_tree.split_for_jpeg). Taken only when it is the very extension the packet names.
        extension = xmp_tree.join_extension(parts, guid)[0] if guid else None
    try:
        if extension is not None:
            root = xmp_tree.parse_merged(packet, extension, str(path))
        else:
            root, _ = xmp_tree.parse(packet, str(path))
    except XmpError:
        return None
    descriptions = list(root.iter(_q("rdf", "Description")))

    def value(local: str) -> str | None:
        return next((v for d in descriptions for v in _simple_values(d, _q("oldphoto", local))), None)

    sha = value("SourceSHA256")
    events = [li for seq in root.iter(_q("rdf", "Seq")) for li in seq.findall(_q("rdf", "li"))
              if li.find(_q("stEvt", "action")) is not None]
    if sha is None or not events:
        return None
    last = events[-1]
    software = (last.findtext(_q("stEvt", "softwareAgent")) or "").strip()
    try:
        parameters = json.loads(last.findtext(_q("stEvt", "parameters")) or "")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes (another tool's file)
        return None
    if not software.startswith("oldphoto ") or not isinstance(parameters, dict):
        return None
    mm = {local: _first_simple(descriptions, _q("xmpMM", local)) for local in ("DocumentID", "InstanceID")}
    when = (last.findtext(_q("stEvt", "when")) or "").strip() or None
    event_instance = (last.findtext(_q("stEvt", "instanceID")) or "").strip() or None
    notes = next((tuple(li.text or "" for li in seq.findall(_q("rdf", "li")))
                  for d in descriptions for listed in d.findall(_q("oldphoto", "Notes"))
                  for seq in listed.findall(_q("rdf", "Seq"))), ())
    return Provenance(sha, software, parameters, _percent(value("MaskCoverage")), value("SidecarSHA256"),
                      mm["DocumentID"], mm["InstanceID"], when, event_instance, notes, _named_parent(root),
                      value("MaskFile"), value("MaskSHA256"))


def _named_parent(root: ET.Element) -> ParentIds:
    """The parent a derivative's packet names: the stRef ids of its first xmpMM:DerivedFrom (as a resource, in
    attribute form or as a nested rdf:Description, as tools that rewrite a packet may give it) and its
    OriginalDocumentID, in its top-level descriptions."""
    descriptions = _top_descriptions(root)
    refs = [r for d in descriptions for r in d.findall(_q("xmpMM", "DerivedFrom"))][:1]

    def ref(local: str) -> str | None:
        return next((v for r in refs for e in r.iter() for v in _simple_values(e, _q("stRef", local)) if v), None)

    original = _first_simple(descriptions, _q("xmpMM", "OriginalDocumentID"))
    return ParentIds(ref("documentID"), ref("instanceID"), original)


def _percent(text: str | None) -> float | None:
    """A percent as written by provenance_xmp; None for anything else (another tool's value is not trusted)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0.0 <= value <= 100.0 else None
