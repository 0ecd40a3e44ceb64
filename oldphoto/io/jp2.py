"""JPEG 2000 input (ISO/IEC 15444-1): a JP2 file (Annex I box tree, read here) or a bare codestream (.j2k).

The header (ihdr box, the codestream's SIZ marker) is read first: the size is checked against max_pixels and what
oldphoto cannot give faithfully (subsampled or signed components, more than 4 components, depth > 16, a palette) is
refused before the codestream is read. Pixels are decoded by OpenJPEG (imagecodecs.jpeg2k_decode) straight into
the output buffer. Only the codestream is given to it (but for an sYCC file, given whole so that it converts to RGB):
given the whole JP2, it changes the pixels when the colr box holds an ICC profile (a 16-bit RGB with an sRGB profile
came back off by up to 4: a colour conversion the carried profile would no longer describe); the cdef box (which
component is which colour, which the alpha) is applied here instead. Metadata: colr (ICC profile), res (resc /
resd resolution), uuid boxes (XMP, EXIF, IPTC); other uuid and xml boxes are noted as not carried.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import imagecodecs
import numpy as np

from .buffers import allocate, bands, in_ram, unpremultiply
from .metadata import Metadata, dpi_from_tags
from .raster_read import exif_fields, note_resolution

JP2_SIGNATURE = b"\0\0\0\x0cjP  \r\n\x87\n"
J2K_SIGNATURE = b"\xff\x4f\xff\x51"  # SOC then SIZ
_EOC = b"\xff\xd9"
UUID_XMP = bytes.fromhex("BE7ACFCB97A942E89C71999491E3AFAC")
UUID_EXIF = b"JpgTiffExif->JP2"
UUID_IPTC = bytes.fromhex("33C7A4D2B81D4723A0BAF1A3E097AD38")
_ENUM_CS = {16: ("sRGB", 3), 17: ("greyscale", 1), 18: ("sYCC", 3)}  # EnumCS -> (name, colour channels)
_MAX_BOXES = 10_000  # boxes looked through at one level before giving up (a valid file has a handful)
_METRES_PER_INCH = 0.0254


class Unsupported(ValueError):
    """A JPEG 2000 oldphoto does not read (its message is the one-line reason)."""


class BoxError(ValueError):
    """A box whose length does not fit where it lies (damaged or cut short)."""


@dataclass(frozen=True)
class Box:
    type: bytes  # TBox, e.g. b"jp2h"
    start: int  # offset of the contents in the file
    end: int  # offset just past the contents


def boxes(fh, start: int, end: int) -> Iterator[Box]:
    """The boxes lying in bytes [start, end) of `fh`: LBox (4 bytes; 1: an 8-byte XLBox follows; 0: up to `end`),
    TBox (4 bytes), contents. BoxError for a length past `end` or shorter than its header."""
    pos = start
    for _ in range(_MAX_BOXES):
        if pos >= end:
            return
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            raise BoxError(f"box header at byte {pos} cut short")
        length, kind = struct.unpack(">I4s", head)
        header = 8
        if length == 1:
            ext = fh.read(8)
            if len(ext) < 8:
                raise BoxError(f"box {_name(kind)} at byte {pos}: extended length cut short")
            (length,), header = struct.unpack(">Q", ext), 16
        elif length == 0:
            length = end - pos
        if length < header or pos + length > end:
            raise BoxError(f"box {_name(kind)} at byte {pos} gives {length} bytes, but only {end - pos} remain: "
                           "cut short or damaged")
        yield Box(kind, pos + header, pos + length)
        pos += length
    raise BoxError(f"more than {_MAX_BOXES} boxes")


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def _contents(fh, box: Box) -> bytes:
    fh.seek(box.start)
    return fh.read(box.end - box.start)


@dataclass(frozen=True)
class Component:
    depth: int  # bits per sample, 1-38
    signed: bool
    dx: int  # horizontal subsampling (XRsiz)
    dy: int  # vertical subsampling (YRsiz)


@dataclass(frozen=True)
class Siz:
    """What the codestream's SIZ marker says of the image (ISO 15444-1, A.5.1)."""

    width: int  # Xsiz - XOsiz
    height: int  # Ysiz - YOsiz
    components: tuple[Component, ...]


def read_siz(fh, start: int) -> Siz:
    """The SIZ marker of the codestream that starts at byte `start` (SOC, then SIZ)."""
    fh.seek(start)
    head = fh.read(42)
    if len(head) < 42 or head[:4] != J2K_SIGNATURE:
        raise BoxError("the codestream does not start with SOC and SIZ markers")
    lsiz, _, xsiz, ysiz, xo, yo = struct.unpack(">HHIIII", head[4:24])
    (csiz,) = struct.unpack(">H", head[40:42])
    comps = fh.read(3 * csiz)
    if lsiz != 38 + 3 * csiz or len(comps) < 3 * csiz or csiz == 0 or xsiz <= xo or ysiz <= yo:
        raise BoxError("the codestream's SIZ marker is damaged or cut short")
    parts = tuple(Component((s & 0x7F) + 1, bool(s & 0x80), dx, dy) for s, dx, dy in zip(*[iter(comps)] * 3))
    return Siz(xsiz - xo, ysiz - yo, parts)


@dataclass
class Jp2Plan:
    """What reading will produce, known from the header alone (the fields reader.read uses, as RasterPlan's)."""

    fh: object
    codestream: Box  # the codestream's place (the jp2c box's contents; a bare codestream: the file)
    sycc: bool  # a JP2 in sYCC: the whole file is decoded, so that OpenJPEG converts it to RGB
    width: int
    height: int
    channels: int  # 1 or 3
    dtype: np.dtype
    alpha: bool
    source_mode: str  # e.g. "RGB", "LA;12", "RGBA;16"
    meta: Metadata
    depth: int  # bits per sample in the file
    order: tuple[int, ...]  # the decoded component of each colour channel, then of the alpha
    premultiplied: bool
    orientation: int = 1
    pages: int = 1
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> Metadata:
        """The metadata decode() returns, without decoding (reader.read_metadata)."""
        return self.meta

    def decoder_memory(self) -> tuple[int, str]:
        """(bytes of RAM decode() holds at its peak, why): OpenJPEG's int32 planes, the codestream read whole, and
        the output buffer where allocate() keeps it in RAM. Known from the header alone (reader.read checks it
        against the memory available before decoding)."""
        samples = self.width * self.height * len(self.order)
        need = 4 * samples + (self.codestream.end - self._start()) + in_ram(samples * self.dtype.itemsize)
        return need, "JPEG 2000 decoding holds 32-bit planes in RAM"

    def decode(self, tmp_dir) -> tuple[np.ndarray, np.ndarray | None, Metadata, list[str]]:
        """(pixels (H, W, C) uint8|uint16, alpha (H, W) or None, meta, notes). Peak memory: the file's bytes up to
        the codestream's end, OpenJPEG's own int32 planes (4 bytes a sample) and the output buffer (which may be
        memory-mapped: buffers.allocate)."""
        notes = list(self.notes)
        n, start = len(self.order), self._start()
        self.fh.seek(start)
        data = self.fh.read(self.codestream.end - start)
        buf = allocate((self.height, self.width, n), self.dtype, tmp_dir)
        decoded = imagecodecs.jpeg2k_decode(data, out=buf[:, :, 0] if n == 1 else buf)
        del data
        if decoded.shape[:2] != (self.height, self.width) or decoded.size != buf.size:
            raise ValueError(f"the decoder gave {decoded.shape} samples, the header says "
                             f"{self.height} x {self.width} x {n}")
        if decoded is not buf and decoded.base is not buf:
            buf[...] = decoded.reshape(buf.shape)  # a decoder that ignored out=
        _full_range(buf, self.depth)
        pixels, alpha = _split(buf, self.order, self.channels, tmp_dir)
        if alpha is not None and self.premultiplied:
            unpremultiply(pixels, alpha)
            notes.append("premultiplied alpha converted to straight alpha")
        return pixels, alpha, self.meta, notes

    def _start(self) -> int:
        """Where the bytes given to OpenJPEG start (they end with the codestream): the codestream's, or for sYCC the
        file's."""
        return 0 if self.sycc else self.codestream.start


def _split(buf: np.ndarray, order: tuple[int, ...], channels: int, tmp_dir) -> tuple[np.ndarray, np.ndarray | None]:
    """The colour channels (H, W, channels) and the alpha (H, W) or None of `buf` (H, W, n) as decoded, where
    order[i] is the decoded component of output channel i (the alpha last): views where the colour channels come
    first and in order, else the colour channels copied into a buffer of their own."""
    colour = list(order[:channels])
    alpha = buf[:, :, order[channels]] if len(order) > channels else None
    if colour == list(range(channels)):
        return buf[:, :, :channels], alpha
    pixels = allocate(buf.shape[:2] + (channels,), buf.dtype, tmp_dir)
    for i, c in enumerate(colour):
        pixels[:, :, i] = buf[:, :, c]
    return pixels, alpha


def _full_range(buf: np.ndarray, depth: int) -> None:
    """Scale samples of `depth` bits (not 8 or 16) in place to the full range of buf's dtype, v * top //
    (2**depth - 1), as a 2- or 4-bit TIFF or PNG gray is: 0 stays 0, the largest value becomes 255 or 65535."""
    if depth in (8, 16):
        return
    top, largest = np.iinfo(buf.dtype).max, (1 << depth) - 1
    for rows in bands(buf.shape[0], buf[0].nbytes * 4):  # uint32 scratch
        buf[rows] = np.minimum(buf[rows].astype(np.uint32), largest) * top // largest


@dataclass
class _Header:
    """What the jp2h box holds (the parts oldphoto reads)."""

    ihdr: tuple[int, int, int] | None = None  # (width, height, components)
    colour_space: str | None = None  # "sRGB", "greyscale", "sYCC", "ICC"
    icc: bytes | None = None
    colour_channels: int | None = None  # as the colour space says
    cdef: list[tuple[int, int, int]] | None = None  # (channel, type, association)
    palette: bool = False
    dpi: tuple[float, float] | None = None


def plan(fh, check_size: Callable[[int, int], None]) -> Jp2Plan:
    """What read() will produce. Raises Unsupported, BoxError, ValueError."""
    notes: list[str] = []
    size = fh.seek(0, 2)
    fh.seek(0)
    if fh.read(4) == J2K_SIGNATURE:  # a bare codestream: the whole file, no header boxes, no metadata
        header, codestream, meta = _Header(), Box(b"jp2c", 0, size), Metadata()
        siz = read_siz(fh, 0)
    else:
        header, codestream, meta = _walk(fh, size, check_size, notes)
        siz = read_siz(fh, codestream.start)
        if header.ihdr is not None and header.ihdr[:2] != (siz.width, siz.height):
            raise BoxError(f"the ihdr box says {header.ihdr[0]} x {header.ihdr[1]} pixels, the codestream "
                           f"{siz.width} x {siz.height}")
    check_size(siz.width, siz.height)
    _check_ends(fh, codestream)
    channels, order, premultiplied = _layout(siz, header, notes)
    meta.icc, meta.dpi = header.icc, header.dpi if header.dpi is not None else meta.dpi
    sycc = header.colour_space == "sYCC"
    if sycc:
        if header.cdef is not None:
            raise Unsupported("sYCC JPEG 2000 with a channel definition (cdef box) is not supported")
        notes.append("sYCC converted to RGB")
    return _made(fh, codestream, sycc, siz, channels, order, premultiplied, meta, notes)


def _made(fh, codestream: Box, sycc: bool, siz: Siz, channels: int, order: tuple[int, ...], premultiplied: bool,
          meta: Metadata, notes: list[str]) -> Jp2Plan:
    depth = siz.components[0].depth
    dtype = np.dtype(np.uint8 if depth <= 8 else np.uint16)
    if depth not in (8, 16):
        notes.append(f"{depth}-bit samples scaled to {dtype.itemsize * 8}-bit")
    alpha = len(order) > channels
    mode = ("L" if channels == 1 else "RGB") + ("A" if alpha else "")
    mode = mode if depth == 8 else f"{'I' if mode == 'L' else mode};{depth}"
    return Jp2Plan(fh, codestream, sycc, siz.width, siz.height, channels, dtype, alpha, mode, meta, depth, order,
                   premultiplied, notes=notes)


def _check_ends(fh, codestream: Box) -> None:
    """A codestream cut short (no EOC marker at its end) is refused: OpenJPEG may decode what it has, silently."""
    fh.seek(codestream.end - 2)
    if codestream.end - codestream.start < 4 or fh.read(2) != _EOC:
        raise BoxError("cut short: the codestream does not end with its EOC marker")


def _layout(siz: Siz, header: _Header, notes: list[str]) -> tuple[int, tuple[int, ...], bool]:
    """(colour channels, the decoded component of each output channel (colour, then any alpha), premultiplied
    alpha); Unsupported for what oldphoto does not read."""
    comps = siz.components
    if header.palette:
        raise Unsupported("JPEG 2000 with a palette (pclr box) is not supported")
    if len(comps) > 4:
        raise Unsupported(f"JPEG 2000 with {len(comps)} components is not supported (at most 4: gray or RGB, and "
                          "alpha)")
    if any(c.signed for c in comps):
        raise Unsupported("JPEG 2000 with signed samples is not supported")
    if any((c.dx, c.dy) != (1, 1) for c in comps):
        raise Unsupported("JPEG 2000 with subsampled components is not supported: "
                          + ", ".join(f"{c.dx}x{c.dy}" for c in comps))
    if len({c.depth for c in comps}) > 1:
        raise Unsupported("JPEG 2000 whose components differ in bit depth is not supported: "
                          + ", ".join(str(c.depth) for c in comps))
    if comps[0].depth > 16:
        raise Unsupported(f"{comps[0].depth}-bit JPEG 2000 is not supported (at most 16 bits)")
    n = len(comps)
    if header.cdef is not None:
        channels, order, premultiplied = _cdef_layout(header.cdef, n)
        if header.colour_channels not in (None, channels):
            raise Unsupported(f"JPEG 2000 with {channels} colour component(s) in a {header.colour_space} colour "
                              "space is not supported")
        return channels, order, premultiplied
    channels = header.colour_channels or (1 if n <= 2 else 3)
    if n not in (channels, channels + 1):
        raise Unsupported(f"JPEG 2000 with {n} components in a {channels}-channel colour space is not supported")
    if n == channels + 1:
        notes.append("extra component of unspecified meaning kept as alpha (no cdef box names it)")
    return channels, tuple(range(n)), False


def _cdef_layout(cdef: list[tuple[int, int, int]], n: int) -> tuple[int, tuple[int, ...], bool]:
    """_layout's answer from the cdef box: each entry (component, type: 0 colour / 1 opacity / 2 premultiplied
    opacity, association: the colour it is, 1-based, or 0 for the whole image)."""
    if sorted(cn for cn, _, _ in cdef) != list(range(n)):
        raise BoxError(f"the cdef box does not name each of the {n} components once")
    colour = sorted((asoc, cn) for cn, typ, asoc in cdef if typ == 0)
    alphas = [(cn, typ) for cn, typ, asoc in cdef if typ in (1, 2) and asoc in (0, 0xFFFF)]
    others = n - len(colour) - len(alphas)
    numbered = [asoc for asoc, _ in colour] == list(range(1, len(colour) + 1))
    if len(colour) not in (1, 3) or len(alphas) > 1 or others or not numbered:
        raise Unsupported(f"JPEG 2000 channel definition (cdef) with {len(colour)} colour, {len(alphas)} opacity "
                          f"and {others} other component(s) is not supported")
    order = tuple(cn for _, cn in colour) + tuple(cn for cn, _ in alphas)
    return len(colour), order, any(typ == 2 for _, typ in alphas)


def _walk(fh, size: int, check_size, notes: list[str]) -> tuple[_Header, Box, Metadata]:
    """(jp2h's contents, the jp2c box, the metadata of the uuid boxes: EXIF handled as every format's, raster_read's)
    from the top-level boxes. A box that breaks the walk before the codestream is found refuses the file; after it,
    the rest is left with a note."""
    header, codestream = None, None
    found: dict[str, bytes | None] = {}
    others: list[str] = []
    try:
        for box in boxes(fh, 0, size):
            if box.type == b"jp2h" and header is None:
                header = _read_jp2h(fh, box, notes)
                if header.ihdr is not None:
                    check_size(*header.ihdr[:2])
            elif box.type == b"jp2c" and codestream is None:
                codestream = box
            elif box.type == b"uuid":
                _read_uuid(fh, box, found, others)
            elif box.type in (b"xml ", b"asoc", b"lbl ", b"uinf", b"jp2i") and _name(box.type) not in others:
                others.append(_name(box.type))
    except BoxError as e:
        if codestream is None:
            raise
        notes.append(f"JPEG 2000 boxes after the codestream not read: {e}")
    if header is None:
        raise BoxError("no JP2 header box (jp2h)")
    if codestream is None:
        raise BoxError("no codestream box (jp2c)")
    if others:
        notes.append(f"JPEG 2000 box(es) {', '.join(others)} not carried")
    if found.get("IPTC") is not None and not found["IPTC"].startswith(b"\x1c"):
        notes.append("IPTC uuid box dropped: it holds no IPTC-IIM records (they begin with 0x1C)")
        found["IPTC"] = None
    exif_block, tags, orientation = exif_fields(found.get("EXIF"), notes)
    note_resolution(tags, notes)
    if orientation != 1:  # JPEG 2000 readers show the pixels as stored: so does the derivative
        notes.append(f"EXIF orientation {orientation} not applied: JPEG 2000 has none, its readers show the pixels "
                     "as stored")
    meta = Metadata(exif=exif_block, xmp=found.get("XMP"), iptc=found.get("IPTC"), tiff_tags=tags,
                    dpi=dpi_from_tags(tags))
    return header, codestream, meta


_UUIDS = {UUID_XMP: "XMP", UUID_EXIF: "EXIF", UUID_IPTC: "IPTC"}


def _read_uuid(fh, box: Box, found: dict[str, bytes | None], others: list[str]) -> None:
    """This uuid box's contents into `found` ("XMP", "EXIF", "IPTC": the first of each kind is kept), or its name
    into `others`. Only the contents of those read are read: another may be large (GeoJP2 ...)."""
    fh.seek(box.start)
    uuid = fh.read(min(16, box.end - box.start))
    what = _UUIDS.get(uuid)
    if what is not None and found.get(what) is None:
        found[what] = fh.read(box.end - box.start - 16) or None
        return
    name = f"'uuid' ({what}, a second one)" if what else f"'uuid' ({uuid.hex().upper()})"
    if name not in others:
        others.append(name)


def _read_jp2h(fh, jp2h: Box, notes: list[str]) -> _Header:
    header = _Header()
    for box in boxes(fh, jp2h.start, jp2h.end):
        if box.type == b"ihdr":
            data = _contents(fh, box)
            if len(data) < 14:
                raise BoxError("the ihdr box is cut short")
            height, width, nc = struct.unpack(">IIH", data[:10])
            header.ihdr = (width, height, nc)
        elif box.type == b"colr" and header.colour_space is None:
            _read_colr(_contents(fh, box), header, notes)
        elif box.type == b"cdef":
            header.cdef = _read_cdef(_contents(fh, box))
        elif box.type == b"pclr":
            header.palette = True
        elif box.type == b"res ":
            header.dpi = _read_res(fh, box, notes)
    return header


def _read_colr(data: bytes, header: _Header, notes: list[str]) -> None:
    """The first colr box (ISO 15444-1, I.5.3.3): METH 1 an enumerated colour space; METH 2 (restricted ICC) or 3
    (any ICC, as JPX allows in JP2 readers) an ICC profile. A damaged one is dropped with a note."""
    if len(data) < 3:
        notes.append("JPEG 2000 colour specification (colr) box cut short: not read")
        return
    meth = data[0]
    if meth == 1 and len(data) >= 7:
        (enum,) = struct.unpack(">I", data[3:7])
        if enum not in _ENUM_CS:
            raise Unsupported(f"JPEG 2000 colour space {enum} is not supported (sRGB, greyscale or sYCC)")
        header.colour_space, header.colour_channels = _ENUM_CS[enum]
    elif meth in (2, 3) and len(data) > 3 + 128:
        icc = data[3:]
        (declared,) = struct.unpack(">I", icc[:4])
        if declared != len(icc):
            notes.append(f"ICC profile dropped: the colr box holds {len(icc)} bytes, the profile says {declared}")
            return
        space = icc[16:20]
        channels = {b"GRAY": 1, b"RGB ": 3}.get(space)
        if channels is None:
            raise Unsupported(f"JPEG 2000 in an ICC colour space {space.decode('latin-1').strip()!r} is not supported")
        header.colour_space, header.colour_channels, header.icc = "ICC", channels, icc
    else:
        notes.append(f"JPEG 2000 colour specification (colr) box method {meth} not read")


def _read_cdef(data: bytes) -> list[tuple[int, int, int]]:
    if len(data) < 2:
        raise BoxError("the cdef box is cut short")
    (n,) = struct.unpack(">H", data[:2])
    if len(data) < 2 + 6 * n:
        raise BoxError("the cdef box is cut short")
    return [struct.unpack(">HHH", data[2 + 6 * i : 8 + 6 * i]) for i in range(n)]


def _read_res(fh, res: Box, notes: list[str]) -> tuple[float, float] | None:
    """Dots per inch from the capture resolution (resc), else the display one (resd), each given in grid points per
    metre as VR_N, VR_D, HR_N, HR_D (2 bytes each), VR_E, HR_E (signed exponents of 10). A damaged one is noted."""
    found = {}
    try:
        for box in boxes(fh, res.start, res.end):
            if box.type in (b"resc", b"resd"):
                found.setdefault(box.type, _contents(fh, box))
    except BoxError as e:
        notes.append(f"JPEG 2000 resolution (res) box damaged ({e}): not read")
        return None
    for kind in (b"resc", b"resd"):
        data = found.get(kind)
        if data is None:
            continue
        if len(data) != 10:
            notes.append(f"JPEG 2000 resolution box {_name(kind)} has {len(data)} bytes, not 10: not read")
            continue
        vn, vd, hn, hd, ve, he = struct.unpack(">HHHHbb", data)
        if not (vn and vd and hn and hd):
            notes.append(f"JPEG 2000 resolution box {_name(kind)} gives a resolution of 0: not read")
            continue
        return (hn / hd * 10.0 ** he * _METRES_PER_INCH, vn / vd * 10.0 ** ve * _METRES_PER_INCH)
    return None
