"""Containers for IPTC-IIM records and other Photoshop image resources: the resource block itself (TIFF tag 34377,
JPEG APP13) and the hex "Raw profile type iptc" / "Raw profile type 8bim" PNG text chunks that ImageMagick and
ExifTool use (PNG has no standard chunk for them).
"""

from __future__ import annotations

import hashlib
import struct

IPTC_RESOURCE = 0x0404  # Photoshop image resource id holding IPTC-IIM records
PNG_IPTC_KEY = "Raw profile type iptc"
PNG_8BIM_KEY = "Raw profile type 8bim"
PHOTOSHOP_HEADER = b"Photoshop 3.0\0"
_MAX_SEGMENT = 65533  # JPEG marker payload limit
_MAX_APP13_SEGMENTS = 16  # 1 MB of resources: a caption, IPTC and a URL never need more
_RESOLUTION_INFO, _IPTC_DIGEST = 0x03ED, 0x0425
# Resources that say something about the photo rather than about the file that held it (its pixels, thumbnail,
# layers, paths, print and Photoshop settings), so they hold for a restored derivative as well. The resolution is
# rewritten to the derivative's, the IPTC records follow the IPTC written beside them and the IPTC digest follows
# them (_iptc_digest).
_CARRIED = {0x03F0: "caption", IPTC_RESOURCE: "IPTC", 0x040A: "copyright flag", 0x040B: "URL",
            _IPTC_DIGEST: "IPTC digest", _RESOLUTION_INFO: "resolution info"}
_NAMES = {0x03EE: "alpha channel names", 0x03F3: "print flags", 0x0400: "layer state", 0x0402: "layer groups",
          0x0408: "grid and guides", 0x0409: "thumbnail", 0x040C: "thumbnail", 0x040D: "global angle",
          0x040F: "ICC profile", 0x0411: "ICC untagged flag", 0x0414: "document IDs seed", 0x0415: "alpha names",
          0x0419: "global altitude", 0x041A: "slices", 0x041E: "URL list", 0x0421: "version info", 0x0422: "EXIF",
          0x0423: "EXIF", 0x0424: "XMP", 0x0426: "print scale", 0x0428: "pixel aspect ratio",
          0x0BB7: "clipping path", 0x2710: "print flags"}
THUMBNAILS = frozenset({0x0409, 0x040C})


def read_resources(payload: bytes) -> tuple[list[tuple[int, bytes, bytes]], str | None]:
    """The 8BIM resources of `payload` (no "Photoshop 3.0" header) as [(id, Pascal name as stored, data)], in file
    order, up to the first that is damaged; and what is wrong there (None when nothing is). Trailing NULs (padding)
    end the block."""
    out = []
    pos = 0
    while pos < len(payload):
        if not payload[pos:].strip(b"\0"):
            break  # padding after the last resource
        if payload[pos : pos + 4] != b"8BIM" or pos + 7 > len(payload):
            return out, f"no 8BIM record at byte {pos}"
        (rid,) = struct.unpack(">H", payload[pos + 4 : pos + 6])
        name_end = pos + 6 + (payload[pos + 6] + 2) // 2 * 2  # Pascal name, padded to an even length
        name = payload[pos + 6 : name_end]
        if name_end + 4 > len(payload):
            return out, f"resource {rid:#06x} at byte {pos} is truncated"
        (size,) = struct.unpack(">I", payload[name_end : name_end + 4])
        if name_end + 4 + size > len(payload):
            return out, f"resource {rid:#06x} claims {size} bytes past the end of the block"
        out.append((rid, name, payload[name_end + 4 : name_end + 4 + size]))
        pos = name_end + 4 + size + size % 2
    return out, None


def resource_list(payload: bytes) -> list[tuple[int, bytes, bytes]]:
    """read_resources, raising ValueError when the block is damaged."""
    out, error = read_resources(payload)
    if error:
        raise ValueError(f"Photoshop resource block is damaged: {error}")
    return out


def photoshop_resources(payload: bytes) -> dict[int, bytes]:
    """Parse a sequence of 8BIM resources (no "Photoshop 3.0" header) into {id: data}."""
    return {rid: data for rid, _, data in resource_list(payload)}


def readable_block(block: bytes | None, where: str,
                   notes: list[str]) -> tuple[bytes | None, list[tuple[int, bytes, bytes]]]:
    """A source's resource block as a reader keeps it: whole when it parses, else the resources before the damage
    (each is delimited by its own length, so those still say what they said), with a note; and those resources
    (read_resources), parsed once for iptc_of."""
    if not block:
        return None, []
    resources, error = read_resources(block)
    if error:
        notes.append(f"Photoshop image resources ({where}) damaged ({error}): {len(resources)} resource(s) before "
                     "the damage kept, the rest dropped")
        block = pack_resources(resources)
    return block or None, resources


def merged_resources(kept: list[tuple[int, bytes, bytes]], added: list[tuple[int, bytes, bytes]], kept_where: str,
                     added_where: str, notes: list[str]) -> list[tuple[int, bytes, bytes]]:
    """The resources of two blocks a file holds (a PNG's `Raw profile type 8bim` text, `kept`, and ExifTool's whole
    block in its `Raw profile type iptc` text, `added`): `kept`'s, then those of `added` whose id `kept` lacks. Where
    both give an id, `kept`'s stay and a differing one of `added` is named in a note; except the IPTC records and
    their digest, which the IPTC text holds in its own right: `added`'s, when it has records, replace `kept`'s (a
    differing one of `kept` is named in a note; a digest only where `added` has one)."""
    if not added:
        return list(kept)
    taken = set()  # ids whose resource `added` gives, whatever `kept` holds
    if iptc_of(added) is not None:
        taken = {rid for rid, _, _ in added if rid in (IPTC_RESOURCE, _IPTC_DIGEST)}
    ids = {rid for rid, _, _ in kept}
    lost_kept, lost_added = set(), set()
    out = []
    for rid, name, data in kept:
        if rid not in taken:
            out.append((rid, name, data))
        elif all(d != data for r, _, d in added if r == rid):
            lost_kept.add(rid)
    for rid, name, data in added:
        if rid not in ids or rid in taken:
            out.append((rid, name, data))
        elif all(d != data for r, _, d in kept if r == rid):
            lost_added.add(rid)
    for lost, where, why in ((lost_added, added_where, f"they differ from those of {kept_where}, which are kept"),
                             (lost_kept, kept_where, f"those of {added_where}, whose IPTC records are read, are kept")):
        if lost:
            names = ", ".join(resource_name(r) for r in sorted(lost))
            notes.append(f"Photoshop resource(s) {names} of {where} not kept: {why}")
    return out


def iptc_of(resources: list[tuple[int, bytes, bytes]]) -> bytes | None:
    """The IPTC records (resource 0x0404) among a readable block's resources, or None."""
    return next((data for rid, _, data in resources if rid == IPTC_RESOURCE and data), None)


# the NULs after a TIFF's IPTC records that pad them to whole LONGs: up to 3 (Photoshop, ExifTool, exiv2), or 4 where
# the records filled whole LONGs already (ImageMagick pads to the next one regardless)
_LONG_PADDING = 4


def without_padding(iptc: bytes) -> bytes:
    """IPTC-IIM records without the NULs after the last one (TIFF tag 33723 is written as LONG by Photoshop, ExifTool
    and oldphoto, NUL-padded to whole values): the records themselves, as a JPEG or PNG holds them. Records that do
    not parse up to there (an extended dataset, a damaged one), or followed by more NULs than such padding, are kept as
    they are (an IPTC digest over them then matches as stored)."""
    pos = 0
    while pos + 5 <= len(iptc) and iptc[pos] == 0x1C:
        (size,) = struct.unpack(">H", iptc[pos + 3 : pos + 5])
        if size & 0x8000:
            return iptc  # an extended dataset's length follows in further bytes: not looked into
        pos += 5 + size
    if pos == 0 or pos >= len(iptc) or len(iptc) - pos > _LONG_PADDING or iptc[pos:].strip(b"\0"):
        return iptc
    return iptc[:pos]


def pack_resources(resources: list[tuple[int, bytes, bytes]]) -> bytes:
    """Inverse of resource_list."""
    out = bytearray()
    for rid, name, data in resources:
        out += b"8BIM" + struct.pack(">H", rid) + (name or b"\0\0") + struct.pack(">I", len(data)) + data
        if len(data) % 2:
            out += b"\0"
    return bytes(out)


def resource_name(rid: int) -> str:
    if 0x07D0 <= rid <= 0x0BB6:
        return f"{rid:#06x} (path)"
    name = _NAMES.get(rid) or _CARRIED.get(rid)
    return f"{rid:#06x} ({name})" if name else f"{rid:#06x}"


def _resolution_info(data: bytes, dpi: tuple[float, float] | None) -> tuple[bytes | None, str]:
    """(Photoshop's ResolutionInfo with its pixels per inch set to `dpi`, its display units kept, ""); or (None, why
    it cannot be)."""
    if dpi is None:
        return None, "the output has no resolution in dots per inch to give it"
    # Fixed, a signed 16.16 number: 32768 dpi and more would read back negative in Photoshop
    fixed = [round(d * 65536) if 0 < d < 32768 else 0 for d in dpi]  # (a NaN or infinity compares false)
    if not all(0 < f < 1 << 31 for f in fixed):
        return None, f"{dpi[0]:g} x {dpi[1]:g} dpi is outside what its fixed-point numbers hold (up to 32767.99)"
    if len(data) < 16:
        return None, f"it is {len(data)} bytes long, not 16"
    h_unit, width_unit, v_unit, height_unit = struct.unpack(">HH", data[4:8]) + struct.unpack(">HH", data[12:16])
    return (struct.pack(">IHH", fixed[0], h_unit, width_unit) + struct.pack(">IHH", fixed[1], v_unit, height_unit)
            + data[16:]), ""


def _iptc_digest(digest: bytes, iptc: bytes | None) -> tuple[bytes | None, str]:
    """The IPTC digest (0x0425) to write beside the IPTC records `iptc`: (digest, "") or (None, why none).

    What it covers (ExifTool's CurrentIPTCDigest, Adobe's XMP Toolkit): the MD5 of the IPTC-IIM block as stored, the
    data of resource 0x0404 (its size, not the resource's padding byte) or of TIFF tag 33723; the Toolkit also takes
    it over that tag's data less the NULs padding it to whole LONGs, as older Photoshop computed it (the reader gives
    a TIFF's records without that padding: a digest over them with it matches too).
    What it says (the Metadata Working Group's convention): a writer that knows XMP sets it when IPTC and XMP agree;
    one that no longer matches tells readers that a tool unaware of XMP edited the IPTC since, so they prefer it.
    Hence one that matched `iptc` (the records of the file it was found in, as the reader took them, and those
    written) becomes the MD5 of the bytes written; one that did not stays as it was, still not matching; beside no
    IPTC it describes nothing."""
    if not iptc:
        return None, "no IPTC is written beside it"
    trailing = len(iptc) - len(iptc.rstrip(b"\0"))
    covered = [iptc[: len(iptc) - n] for n in range(min(trailing, _LONG_PADDING) + 1)]
    covered += [iptc + b"\0" * n for n in range(1, _LONG_PADDING + 1)]  # records read without their padding
    if any(hashlib.md5(records).digest() == digest for records in covered):
        return hashlib.md5(iptc).digest(), ""
    return digest, ""


def carried_resources(block: bytes | None, iptc: bytes | None, dpi: tuple[float, float] | None,
                      notes: list[str], iptc_in_block: bool = True) -> list[tuple[int, bytes, bytes]]:
    """The resources of the source's block `block` that a derivative carries (see _CARRIED), with the IPTC records
    `iptc` (added when the block has none) and the resolution `dpi`; a note names every resource left out.
    Without `iptc_in_block` given records `iptc` are not in the block (its digest still describes them): a TIFF or
    PNG output holds them once, in its own tag or text (ExifTool's -validate calls a TIFF's copy in the block
    non-standard); a block's own records, when `iptc` is None, stay in it."""
    try:
        resources = resource_list(block) if block else []
    except ValueError as e:  # the reader only keeps blocks that parse; a Metadata made by hand may not
        notes.append(f"Photoshop image resources not written: {e}")
        resources = []
    source_iptc = next((data for rid, _, data in resources if rid == IPTC_RESOURCE), None)
    separate = bool(iptc) and not iptc_in_block  # the records `iptc` are written beside the block, not in it
    iptc = iptc or source_iptc  # a reader gives the block's own records when it found no others
    kept, dropped = [], []
    for rid, name, data in resources:
        if rid == _RESOLUTION_INFO:
            data, why = _resolution_info(data, dpi)
            if data is None:
                notes.append(f"Photoshop resolution info (0x03ed) dropped: {why}")
                continue
        elif rid == _IPTC_DIGEST:
            data, why = _iptc_digest(data, iptc)
            if data is None:
                notes.append(f"Photoshop IPTC digest (0x0425) dropped: {why}")
                continue
        elif rid == IPTC_RESOURCE:
            if separate:
                continue
            data = iptc
        if rid not in _CARRIED:
            dropped.append(rid)
        elif all(r != rid for r, _, _ in kept):  # a repeated id: the first is the one readers take
            kept.append((rid, name, data))
    if iptc and source_iptc is None and iptc_in_block:
        kept.append((IPTC_RESOURCE, b"\0\0", iptc))
    if dropped:
        why = " (a thumbnail shows the unrestored image)" if THUMBNAILS & set(dropped) else ""
        notes.append(f"Photoshop image resource(s) {', '.join(resource_name(r) for r in dropped)} dropped: "
                     f"they belong to the source file, not to the photo{why}")
    return kept


def jpeg_app13(payload: bytes) -> bytes:
    """Complete APP13 marker segment(s) carrying the resource block `payload` (see pack_resources). A block larger
    than one segment goes on in the next, each opening with the Photoshop header, as Photoshop splits it (readers
    join the segments' data in order, as raster_read does)."""
    step = _MAX_SEGMENT - len(PHOTOSHOP_HEADER)
    parts, start, ends = [], 0, _resource_ends(payload)
    for end in ends + [len(payload)]:  # cut between resources where they fit: readers that parse each segment
        while end - start > step:     # alone (Pillow) get them whole
            cut = max((e for e in ends if start < e <= start + step), default=start + step)
            parts.append(payload[start:cut])
            start = cut
    parts.append(payload[start:])
    if len(parts) > _MAX_APP13_SEGMENTS:
        raise ValueError(f"a Photoshop resource block of {len(payload)} bytes is larger than "
                         f"{_MAX_APP13_SEGMENTS} JPEG APP13 segments")
    return b"".join(b"\xff\xed" + struct.pack(">H", len(PHOTOSHOP_HEADER) + len(part) + 2) + PHOTOSHOP_HEADER + part
                    for part in parts)


def _resource_ends(payload: bytes) -> list[int]:
    """Where each well-formed 8BIM resource of `payload` ends, up to the first that is not (read_resources), its
    padding byte included: a last resource whose padding the block lacks has no end there."""
    ends, pos = [], 0
    for _, name, data in read_resources(payload)[0]:
        pos += 10 + len(name) + len(data) + len(data) % 2  # "8BIM", id, name, size, data, padding
        if pos <= len(payload):
            ends.append(pos)
    return ends


def jpeg_app13_iptc(iptc: bytes) -> bytes:
    """Complete APP13 marker segment carrying `iptc` as Photoshop resource 0x0404."""
    return jpeg_app13(pack_resources([(IPTC_RESOURCE, b"\0\0", iptc)]))


def png_text(data: bytes, kind: str = "iptc") -> str:
    """A profile as the hex text of a "Raw profile type <kind>" chunk."""
    hexed = data.hex()
    lines = [hexed[i : i + 72] for i in range(0, len(hexed), 72)]
    return f"\n{kind}\n" + f"{len(data):8d}\n" + "\n".join(lines) + "\n"


def raw_profile(text: str) -> bytes:
    """Inverse of png_text: the profile's bytes."""
    parts = text.strip("\n").split("\n", 2)
    if len(parts) < 3:
        raise ValueError("raw profile text has no length line")
    size = int(parts[1].strip())
    data = bytes.fromhex("".join(parts[2].split()))
    if len(data) != size:
        raise ValueError(f"raw profile says {size} bytes but holds {len(data)}")
    return data


def iptc_from_profile(data: bytes) -> bytes:
    """IPTC from the bytes of a "Raw profile type iptc" text; also accepts a Photoshop resource block (as some tools
    write) and extracts 0x0404."""
    if data.startswith(PHOTOSHOP_HEADER):
        data = data[len(PHOTOSHOP_HEADER) :]
    if data.startswith(b"8BIM"):
        return photoshop_resources(data).get(IPTC_RESOURCE, b"")
    return data
