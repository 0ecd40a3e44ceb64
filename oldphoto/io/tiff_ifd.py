"""Raw TIFF directories (IFDs): read them from a file or an EXIF block, edit them, serialise them.

Values stay raw bytes tagged with their TIFF type, so tags oldphoto knows nothing about (maker-specific,
newer EXIF versions) survive byte for byte; piexif drops tags missing from its table, hence this module.
Entry data is held little-endian; big-endian sources are swapped on read and swapped back on write.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 1, 2, 3, 4, 5, 7
LONG8, IFD8 = 16, 18
TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_SWAP_UNIT = {3: 2, 4: 4, 5: 4, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}  # rationals: 2 x 4

EXIF_IFD, GPS_IFD, INTEROP_IFD = 34665, 34853, 40965
SUB_IFD_TAGS = (EXIF_IFD, GPS_IFD, INTEROP_IFD)
_POINTERS = (LONG, 13, LONG8, IFD8)  # the types a pointer to a sub-directory is followed with (13: IFD)

_MAX_ENTRIES = 4096  # real directories hold a few hundred at most; more means garbage offsets
_MAX_VALUE_BYTES = 256 << 20  # one tag value (ICC, XMP, maker notes are far smaller)
_MAX_DEPTH = 3  # IFD0 -> Exif -> Interop
_MAX_BAD = 10  # entries with unreadable values a lenient read drops before it calls the directory garbage (ExifTool's)
DIRECTORY_NAMES = {EXIF_IFD: "Exif", GPS_IFD: "GPS", INTEROP_IFD: "Interop"}  # how notes name them


class IfdError(ValueError):
    """The bytes do not hold a readable TIFF directory."""


class _LoopError(IfdError):
    """Sub-directories nested past _MAX_DEPTH: garbage, even to a lenient read."""


def swap_order(typ: int, data: bytes) -> bytes:
    """Values of TIFF type `typ` with every item byte-swapped (BYTE, ASCII, UNDEFINED unchanged)."""
    unit = _SWAP_UNIT.get(typ)
    if unit is None or not data:
        return data
    return np.frombuffer(data, dtype=f"<u{unit}").byteswap().tobytes()


@dataclass(frozen=True)
class Entry:
    """One tag: `data` is count * TYPE_SIZE[type] bytes, little-endian."""

    tag: int
    type: int
    count: int
    data: bytes

    def ints(self) -> tuple[int, ...]:
        fmt = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q", 17: "q", 18: "Q"}.get(self.type)
        if fmt is None:
            raise IfdError(f"tag {self.tag} has type {self.type}, not an integer type")
        return struct.unpack(f"<{self.count}{fmt}", self.data)

    def rationals(self) -> tuple[tuple[int, int], ...]:
        if self.type not in (RATIONAL, 10):
            raise IfdError(f"tag {self.tag} has type {self.type}, not a rational")
        v = struct.unpack(f"<{2 * self.count}{'I' if self.type == RATIONAL else 'i'}", self.data)
        return tuple(zip(v[0::2], v[1::2]))

    def text(self) -> str:
        """ASCII value without trailing NULs; undecodable bytes survive a round trip via surrogateescape."""
        return self.data.rstrip(b"\0").decode("utf-8", "surrogateescape")


def ascii_entry(tag: int, text: str) -> Entry:
    data = text.encode("utf-8", "surrogateescape") + b"\0"
    return Entry(tag, ASCII, len(data), data)


def short_entry(tag: int, value: int) -> Entry:
    return Entry(tag, SHORT, 1, struct.pack("<H", value))


def long_entry(tag: int, value: int) -> Entry:
    return Entry(tag, LONG, 1, struct.pack("<I", value))


def int_entry(tag: int, value: int) -> Entry:
    """SHORT when it fits, else LONG (TIFF readers accept either for size-like tags)."""
    return short_entry(tag, value) if 0 <= value < 65536 else long_entry(tag, value)


def rational_entry(tag: int, num: int, den: int) -> Entry:
    return Entry(tag, RATIONAL, 1, struct.pack("<II", num, den))


def bytes_entry(tag: int, typ: int, data: bytes) -> Entry:
    """BYTE or UNDEFINED blob (ICC, XMP, IPTC)."""
    return Entry(tag, typ, len(data), bytes(data))


@dataclass
class Ifd:
    """A directory: plain entries plus sub-directories keyed by their pointer tag (Exif, GPS, Interop)."""

    entries: dict[int, Entry] = field(default_factory=dict)
    children: dict[int, Ifd] = field(default_factory=dict)

    def copy(self) -> Ifd:
        return Ifd(dict(self.entries), {t: c.copy() for t, c in self.children.items()})

    def __bool__(self) -> bool:
        return bool(self.entries) or any(self.children.values())


ReadAt = Callable[[int, int], bytes]


def bytes_reader(blob: bytes) -> ReadAt:
    def read_at(offset: int, size: int) -> bytes:
        if offset < 0 or offset + size > len(blob):
            raise IfdError(f"offset {offset}+{size} is outside the {len(blob)}-byte block")
        return blob[offset : offset + size]

    return read_at


def file_reader(fh) -> ReadAt:
    """`fh`: binary file opened for reading; short reads mean a truncated file."""
    end = fh.seek(0, 2)

    def read_at(offset: int, size: int) -> bytes:
        if offset + size > end:  # also an offset no seek or read can take (a BigTIFF's have 64 bits): not OSError
            raise IfdError(f"file ends before byte {offset + size} (truncated)")
        fh.seek(offset)
        data = fh.read(size)
        if len(data) != size:
            raise IfdError(f"file ends before byte {offset + size} (truncated)")
        return data

    return read_at


@dataclass(frozen=True)
class _Layout:
    """How a directory is laid out: a classic TIFF's or a BigTIFF's."""

    count: str  # struct code of the entry count
    offset: str  # struct code of an offset (a value's, the next directory's)
    head: int  # bytes of the entry count
    entry: int  # bytes of one entry: tag, type, count, value field
    field: int  # bytes of an entry's value field (values this size or smaller are held in it)
    next: int  # bytes of the next-directory offset


_CLASSIC = _Layout("H", "I", 2, 12, 4, 4)
_BIGTIFF = _Layout("Q", "Q", 8, 20, 8, 8)


def read_ifd(read_at: ReadAt, offset: int, order: str, bigtiff: bool, *, wanted: set[int] | None = None,
             follow: tuple[int, ...] = SUB_IFD_TAGS, notes: list[str] | None = None, name: str = "IFD0",
             _depth: int = 0) -> tuple[Ifd, int]:
    """Read the directory at `offset`; returns it and the next directory's offset (0 = none).

    `wanted`: load only these tags' values (pointer tags in `follow` are always loaded and followed);
    None loads every tag. Entries of unknown types are skipped, as the TIFF spec tells readers to.
    A directory whose entries are whole but whose next-directory offset the end of the data cuts off is the last
    (offset 0), as ExifTool and exiv2 read it: piexif ends an EXIF block so when its last directory is an Exif, GPS
    or Interop one with no values after its entries.
    `notes` given, the directory is read leniently, as ExifTool reads it: an entry whose value lies outside the data
    and a sub-directory (Exif, GPS, Interop) that cannot be read are dropped, each with a note there, and the rest
    is kept; more than _MAX_BAD such entries, or more than half of a directory's, mean garbage and raise, as does a
    pointer loop. `name` names the directory in those notes.
    """
    if _depth > _MAX_DEPTH:
        raise _LoopError("sub-directories nested too deep (pointer loop?)")
    layout = _BIGTIFF if bigtiff else _CLASSIC
    fields, next_offset = _read_entry_fields(read_at, offset, order, layout)
    ifd = Ifd()
    known, bad, said = 0, 0, []
    # a pointer tag repeated: only the copy kept (the last, as for any tag) is followed; following every copy made
    # a few KB of repeated pointers cost n**4 entry reads (IFD0 -> Exif -> Interop -> Interop) and a note per copy
    last = {tag: i for i, (tag, typ, count, _) in enumerate(fields) if _is_pointer(tag, typ, count, follow)}
    for i, (tag, typ, count, value_field) in enumerate(fields):
        if typ not in TYPE_SIZE:
            continue
        known += 1
        if wanted is not None and tag not in wanted and tag not in follow:
            continue
        if last.get(tag, i) != i:
            continue
        try:
            data = _entry_value(read_at, order, layout, tag, typ, count, value_field)
        except IfdError as e:
            if notes is None:
                raise
            bad += 1
            said.append(f"EXIF {name} tag {tag:#06x} dropped: its value is unreadable ({e})")
            continue
        entry = Entry(tag, typ, count, swap_order(typ, data) if order == ">" else data)
        if _is_pointer(tag, typ, count, follow):
            child = _read_sub_directory(read_at, entry, order, bigtiff, follow, notes is not None, said, _depth)
            if child is not None:
                ifd.children[tag] = child
        else:
            ifd.entries[tag] = entry
    if bad > _MAX_BAD or 2 * bad > known:
        raise IfdError(f"{bad} of the {known} entries of the directory at byte {offset} have values outside the data")
    if notes is not None:
        notes += said
    return ifd, next_offset


def _read_entry_fields(read_at: ReadAt, offset: int, order: str,
                       layout: _Layout) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The directory at `offset` as its entries' (tag, type, count, raw value field), and the next directory's offset
    (0 when the end of the data cuts it off). Raises IfdError when the entries are not whole or implausibly many."""
    head = read_at(offset, layout.head)
    (n,) = struct.unpack(order + layout.count, head)
    if n > _MAX_ENTRIES:
        raise IfdError(f"directory at byte {offset} claims {n} entries")
    size = n * layout.entry
    try:
        body = read_at(offset + len(head), size + layout.next)
        (next_offset,) = struct.unpack(order + layout.offset, body[size:])
    except IfdError:  # no room for the next-directory offset: the last directory, when its entries are whole
        body, next_offset = read_at(offset + len(head), size), 0
    fields = []
    for i in range(n):
        raw = body[i * layout.entry : (i + 1) * layout.entry]
        tag, typ, count = struct.unpack(order + "HH" + layout.offset, raw[: layout.entry - layout.field])
        fields.append((tag, typ, count, raw[layout.entry - layout.field :]))
    return fields, next_offset


def _is_pointer(tag: int, typ: int, count: int, follow: tuple[int, ...]) -> bool:
    """Is the entry a pointer to a sub-directory that is followed?"""
    return tag in follow and count == 1 and typ in _POINTERS


def _entry_value(read_at: ReadAt, order: str, layout: _Layout, tag: int, typ: int, count: int,
                 value_field: bytes) -> bytes:
    """An entry's value bytes as stored (in `order`): in its value field when they fit, else at the offset it holds.
    Raises IfdError for a value implausibly large or outside the data."""
    size = count * TYPE_SIZE[typ]
    if size > _MAX_VALUE_BYTES:
        raise IfdError(f"tag {tag} claims {size} bytes")
    if size <= layout.field:
        return value_field[:size]
    (where,) = struct.unpack(order + layout.offset, value_field)
    return read_at(where, size)


def _read_sub_directory(read_at: ReadAt, pointer: Entry, order: str, bigtiff: bool, follow: tuple[int, ...],
                        lenient: bool, said: list[str], depth: int) -> Ifd | None:
    """The sub-directory `pointer` points to, its notes added to `said`; read leniently, one that cannot be read is
    None with a note there (a pointer loop raises all the same)."""
    sub = DIRECTORY_NAMES.get(pointer.tag, f"{pointer.tag:#06x}")
    sub_notes = [] if lenient else None
    try:
        child, _ = read_ifd(read_at, pointer.ints()[0], order, bigtiff, follow=follow, notes=sub_notes, name=sub,
                            _depth=depth + 1)
    except _LoopError:
        raise
    except IfdError as e:
        if not lenient:
            raise
        said.append(f"EXIF {sub} directory dropped: it is unreadable ({e})")
        return None
    said += sub_notes or []
    return child


def serialize(ifd: Ifd, order: str, bigtiff: bool, base: int) -> bytes:
    """Bytes of `ifd` (then its values, then its sub-directories) to be placed at file offset `base`.

    `base` must be even. The next-directory offset is 0 (oldphoto writes single-image files).
    """
    if base % 2:
        raise ValueError(f"directory offset must be even, got {base}")
    layout = _BIGTIFF if bigtiff else _CLASSIC
    children = {t: c for t, c in ifd.children.items() if c}
    # a pointer entry without its directory would dangle: pointers are always regenerated
    tags = sorted((set(ifd.entries) - set(SUB_IFD_TAGS)) | set(children))
    head_len = layout.head + len(tags) * layout.entry + layout.next
    values = bytearray()
    fields: dict[int, tuple[int, int, bytes]] = {}
    for tag in tags:
        if tag in children:
            continue
        e = ifd.entries[tag]
        data = swap_order(e.type, e.data) if order == ">" else e.data
        if len(data) <= layout.field:
            fields[tag] = (e.type, e.count, data.ljust(layout.field, b"\0"))
        else:
            fields[tag] = (e.type, e.count, struct.pack(order + layout.offset, base + head_len + len(values)))
            values += data
            if len(values) % 2:
                values += b"\0"  # TIFF values start on word boundaries
    tail = bytearray()
    for tag in sorted(children):
        where = base + head_len + len(values) + len(tail)
        fields[tag] = (IFD8 if bigtiff else LONG, 1, struct.pack(order + layout.offset, where))
        tail += serialize(children[tag], order, bigtiff, where)
    out = bytearray(struct.pack(order + layout.count, len(tags)))
    for tag in tags:
        typ, count, value = fields[tag]
        out += struct.pack(order + "HH" + layout.offset, tag, typ, count) + value
    out += struct.pack(order + layout.offset, 0)
    return bytes(out + values + tail)


def parse_exif(blob: bytes, notes: list[str] | None = None) -> tuple[Ifd, str, bool]:
    """EXIF block (TIFF structure, optional b"Exif\\0\\0" prefix) -> (IFD0 with children, byte order, has IFD1).

    Read leniently (read_ifd): what is dropped is said in `notes` (when given); an IFD0 that cannot be read, or
    garbage, raises IfdError. IFD1 (the embedded thumbnail) is not returned: it shows the unrestored, possibly
    unrotated image; one whose offset leads nowhere (past the end, as some writers leave it) counts as none.
    """
    if blob.startswith(b"Exif\0\0"):
        blob = blob[6:]
    if blob[:4] == b"II*\0":
        order = "<"
    elif blob[:4] == b"MM\0*":
        order = ">"
    else:
        raise IfdError(f"EXIF block does not start with a TIFF header (starts with {blob[:4]!r})")
    if len(blob) < 8:
        raise IfdError(f"EXIF block ends inside its TIFF header ({len(blob)} bytes)")
    (first,) = struct.unpack(order + "I", blob[4:8])
    read_at = bytes_reader(blob)
    ifd0, next_offset = read_ifd(read_at, first, order, False, notes=[] if notes is None else notes)
    has_ifd1 = False
    if next_offset:
        try:
            read_ifd(read_at, next_offset, order, False, wanted=set(), follow=())
            has_ifd1 = True
        except IfdError:
            pass
    return ifd0, order, has_ifd1


def build_exif(ifd0: Ifd, order: str = "<") -> bytes:
    """Standalone EXIF block (TIFF header + IFD0 + sub-IFDs), no b"Exif\\0\\0" prefix."""
    header = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    return header + serialize(ifd0, order, False, 8)
