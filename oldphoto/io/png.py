"""PNG at chunk level: metadata reading, 16-bit decoding, and a streaming encoder.

Pillow turns 16-bit RGB(A) PNGs into 8 bits, so 16-bit files are decoded with libpng (imagecodecs) and
written by `write_png`, which filters and deflates a band of rows at a time (no copy of the whole image).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import imagecodecs
import numpy as np

from .buffers import allocate

SIGNATURE = b"\x89PNG\r\n\x1a\n"
XMP_KEY = "XML:com.adobe.xmp"
RAW_PROFILE = "Raw profile type "  # ImageMagick's hex-coded profiles: one of a kind, never joined
COLOR_CHUNKS = ("gAMA", "cHRM", "sRGB", "cICP")  # colour information that only PNG readers understand
# chunks oldphoto reads (or that only describe how this file stored its pixels); others are named in a note
_KNOWN = frozenset({"IHDR", "PLTE", "IDAT", "IEND", "tRNS", "iCCP", "eXIf", "tEXt", "zTXt", "iTXt", "pHYs", "acTL",
                    "fcTL", "fdAT", *COLOR_CHUNKS})
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type (PNG 11.2.2)
_MAX_INFLATE = 64 << 20  # compressed text/ICC chunks larger than this once inflated are refused
# Pillow refuses a whole PNG over one zTXt or compressed iTXt that inflates to 1 MiB or more (MAX_TEXT_CHUNK; plain
# tEXt has no such limit, only 64 MiB of text in all): a text written compressed stays under it, unless the source's
# own compressed chunk of that keyword already went past it (text_chunk, compressed_ok)
PILLOW_MAX_TEXT_CHUNK = 1 << 20
_IDAT_SIZE = 256 << 10  # bytes per IDAT chunk
_BAND_BYTES = 128 << 10  # raw bytes per encoded band of rows (the filters need ~30x that as scratch)
_METERS_PER_INCH = 0.0254
# a 16-bit PNG's compressed stream larger than this is read into our own temp file, not RAM: libpng wants it whole,
# and in RAM it would add up to the decoded size again (noisy scans barely compress)
_STREAM_RAM = 4 << 20


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int  # 1, 2, 4, 8, 16
    color_type: int  # 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
    interlace: int


@dataclass
class PngChunks:
    """Everything oldphoto reads from a PNG besides the pixel data."""

    header: PngHeader
    head: bytes  # signature and IHDR, CRC included, as stored: the start of what the pixels' decoders are shown
    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)  # other tEXt/zTXt/iTXt; a repeated keyword's texts joined
    # keyword -> the largest inflated size (bytes) of its compressed chunks (zTXt, iTXt with the compression flag), for
    # the keywords of `text` stored compressed: a derivative keeps them compressed
    compressed: dict[str, int] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)  # keyword -> text chunks with it, where more than one
    # notes on ancillary chunks dropped for a bad CRC, and on ICC, text and pHYs chunks that could not be taken
    damaged: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # names of the chunks not read (sBIT, bKGD, tIME, sCAL ...)
    phys: tuple[int, int, int] | None = None  # (x per unit, y per unit, unit 1 = metre, 0 = none: aspect only)
    trns: bytes | None = None
    plte: bytes | None = None  # the first PLTE chunk's data, for PixelChunks
    color: dict[str, bytes] = field(default_factory=dict)
    frames: int = 1  # from acTL: an animated PNG has more than one
    idat: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) of runs of whole IDAT chunks


def read_header(head: bytes) -> PngHeader:
    """The IHDR fields from the first 33 bytes of the file; its CRC checked first, so that damage to a field is said
    to be damage, not a size over the limit or an invalid depth."""
    if len(head) < 33 or not head.startswith(SIGNATURE):
        raise ValueError("file ends inside the PNG header")
    length, ctype = struct.unpack(">I4s", head[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ValueError(f"first chunk is {ctype!r}, not IHDR")
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        raise _corrupt(b"IHDR", 8)
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if w == 0 or h == 0:
        raise ValueError(f"header gives an empty image ({w} x {h})")
    if depth not in _DEPTHS.get(color, ()):
        raise ValueError(f"invalid header: bit depth {depth} with colour type {color}")
    return PngHeader(w, h, depth, color, interlace)


def _inflate(data: bytes, what: str) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, _MAX_INFLATE)
    if d.unconsumed_tail:
        raise ValueError(f"{what} inflates to more than {_MAX_INFLATE >> 20} MiB")
    return out


def parse_text(ctype: bytes, data: bytes) -> tuple[str, bytes, bool]:
    """(keyword, text as bytes: latin-1 for tEXt/zTXt, UTF-8 for iTXt, whether the chunk stored it compressed)."""
    key, _, rest = data.partition(b"\0")
    if ctype == b"tEXt":
        return key.decode("latin-1"), rest, False
    if ctype == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:], "zTXt chunk"), True
    compressed = bool(rest[0])
    _lang, _, rest = rest[2:].partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return key.decode("latin-1"), _inflate(text, "iTXt chunk") if compressed else text, compressed


class Truncated(ValueError):
    """The file ends inside a chunk's header, before IEND."""


def walk_chunks(fh, start: int = len(SIGNATURE)) -> Iterator[tuple[int, bytes, int]]:
    """(offset, type, data length) of each chunk of an open PNG from byte `start` (a chunk's header) up to IEND, with
    `fh` at the chunk's data: the caller reads of it (data, CRC) what it needs and checks what it reads; the next
    chunk is found from the length whatever was read. Truncated when the file ends inside a chunk's header."""
    size = fh.seek(0, 2)
    pos = start
    while True:
        fh.seek(pos)
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise Truncated(f"truncated: file ends at byte {size} before the IEND chunk")
        length, ctype = struct.unpack(">I4s", hdr)
        yield pos, ctype, length
        if ctype == b"IEND":
            return
        pos += 8 + length + 4


def read_chunks(fh, header_only: bool = False, pixels: bool = True) -> PngChunks:
    """Walk the chunks of an open PNG up to IEND; ValueError when it is truncated or a critical chunk's CRC does not
    hold (IHDR, PLTE of a palette image, IDAT, IEND ...); an ancillary chunk with a bad CRC is dropped with a note in
    `damaged`, as is the optional suggested palette (PLTE) of a truecolour image (PNG 11.2.3; libpng takes it as
    ancillary).

    header_only: stop at the first IDAT (what probe() needs; chunks after the pixel data are not seen).
    pixels: check the CRC of the IDAT chunks (read whole for it); False where no pixel is decoded (read_metadata).
    """
    size = fh.seek(0, 2)
    fh.seek(0)
    head = fh.read(33)
    info = PngChunks(read_header(head), head)  # its CRC checked there
    for pos, ctype, length in walk_chunks(fh, 33):
        if ctype == b"IDAT" and header_only:
            info.idat.append((pos, 8 + length + 4))  # the first IDAT chunk alone: enough to open, not to decode
            return info
        end = pos + 8 + length + 4
        if end > size:
            raise ValueError(f"truncated: {ctype.decode('latin-1')} chunk at byte {pos} ends past the file's "
                             f"{size} bytes")
        if ctype == b"IDAT":  # pixel data, only checked here: Pillow, which decodes 8-bit PNGs, skips its CRC
            if pixels and not _streamed_crc_ok(fh, ctype, length):
                raise _corrupt(ctype, pos)
            if info.idat and sum(info.idat[-1]) == pos:
                info.idat[-1] = (info.idat[-1][0], end - info.idat[-1][0])
            else:
                info.idat.append((pos, end - pos))
        elif ctype != b"fdAT":  # an animation's frame data, not read (animations are refused)
            data = fh.read(length)
            (crc,) = struct.unpack(">I", fh.read(4))
            if zlib.crc32(data, zlib.crc32(ctype)) == crc:
                _take(info, ctype, data)
            elif _ancillary(ctype) or (ctype == b"PLTE" and info.header.color_type in (2, 6)):
                _drop(info, ctype, pos)
            else:
                raise _corrupt(ctype, pos)
    return info


def _ancillary(ctype: bytes) -> bool:
    """Is the chunk ancillary (first letter lowercase, PNG 5.4), one a reader may do without? Others are critical."""
    return bool(ctype[0] & 0x20)


def _corrupt(ctype: bytes, pos: int) -> ValueError:
    return ValueError(f"corrupt {ctype.decode('latin-1')} chunk at byte {pos} (CRC mismatch)")


def _drop(info: PngChunks, ctype: bytes, pos: int) -> None:
    """An ancillary chunk whose CRC does not hold is left out, as libpng does: its bytes are not what was written, so
    nothing of it is trusted (text, profile, resolution, colour, transparency) and the photo is read without it."""
    # a tRNS gives transparency only before the pixel data of a gray, RGB or palette image (not beside an alpha channel)
    used = ctype == b"tRNS" and not info.idat and info.header.color_type in (0, 2, 3)
    what = "; the photo is read without its transparency" if used else ""
    info.damaged.append(f"PNG {ctype.decode('latin-1')} chunk at byte {pos} dropped: CRC mismatch (damaged){what}")


def _streamed_crc_ok(fh, ctype: bytes, length: int, block: int = 1 << 20) -> bool:
    """Does the CRC after the next `length` bytes of `fh` hold? Read a block at a time: an IDAT chunk may be large."""
    crc = zlib.crc32(ctype)
    while length > 0:
        data = fh.read(min(length, block))
        if not data:
            raise ValueError(f"truncated: the file ends inside a {ctype.decode('latin-1')} chunk (changed while it "
                             "was read)")
        crc = zlib.crc32(data, crc)
        length -= len(data)
    return fh.read(4) == struct.pack(">I", crc)


def _take(info: PngChunks, ctype: bytes, data: bytes) -> None:
    name = ctype.decode("latin-1")
    try:
        _take_metadata(info, ctype, data)
    except (zlib.error, ValueError, IndexError) as e:
        # its CRC holds, so the writer stored it so: the photo is still read (as libpng does, which skips it), and the
        # chunk is left out, as a malformed EXIF block is
        info.damaged.append(f"PNG {name} chunk is damaged ({e or 'too short'}) and was not kept")
        return
    if ctype == b"pHYs":
        if len(data) != 9 or data[8] > 1:
            why = f"{len(data)} bytes, not 9" if len(data) != 9 else f"unknown unit {data[8]}"
            info.damaged.append(f"PNG pHYs chunk is damaged ({why}) and was not kept")
        elif 0 in (phys := struct.unpack(">IIB", data))[:2]:
            unit = "per metre" if phys[2] == 1 else "(aspect ratio, no unit)"
            info.damaged.append(f"PNG pHYs resolution {phys[0]} x {phys[1]} {unit} dropped: a resolution of 0 means "
                                "nothing")
        else:
            info.phys = phys
    elif ctype == b"PLTE" and info.plte is None:
        info.plte = data
    elif ctype == b"tRNS" and not info.idat:  # after the pixel data it is out of place; libpng ignores it
        info.trns = data
    elif ctype == b"acTL" and len(data) == 8:
        info.frames = struct.unpack(">II", data)[0]
    elif name in COLOR_CHUNKS:
        info.color[name] = data
    elif name not in _KNOWN and name not in info.others:
        info.others.append(name)


def _take_metadata(info: PngChunks, ctype: bytes, data: bytes) -> None:
    """ICC, EXIF and text chunks into `info`; zlib.error or ValueError when one cannot be unpacked."""
    if ctype == b"iCCP" and info.icc is None:
        _, _, rest = data.partition(b"\0")
        info.icc = _inflate(rest[1:], "iCCP chunk")
    elif ctype == b"eXIf" and info.exif is None:
        info.exif = data
    elif ctype in (b"tEXt", b"zTXt", b"iTXt"):
        key, value, compressed = parse_text(ctype, data)
        if key in info.text or (key == XMP_KEY and info.xmp is not None):
            info.repeated[key] = info.repeated.get(key, 1) + 1
        if key == XMP_KEY:
            info.xmp = info.xmp or value
            return
        text = value.decode("utf-8" if ctype == b"iTXt" else "latin-1", "replace")
        if key not in info.text:
            info.text[key] = text
        elif not key.startswith(RAW_PROFILE):  # PNG allows a keyword more than once (several comments, say)
            info.text[key] += "\n" + text
        else:
            return  # not kept: nor is how it was stored
        if compressed:
            info.compressed[key] = max(info.compressed.get(key, 0), len(value))


def dpi_from_phys(phys: tuple[int, int, int] | None) -> tuple[float, float] | None:
    """Dots per inch from pHYs; a whole number when one maps to the same pixels per metre (300 dpi is
    stored as 11811 px/m, which would read back as 299.9994)."""
    if phys is None or phys[2] != 1:
        return None  # unit 0 only gives the pixel aspect ratio

    def dpi(ppm: int) -> float:
        whole = round(ppm * _METERS_PER_INCH)
        return float(whole) if round(whole / _METERS_PER_INCH) == ppm else ppm * _METERS_PER_INCH

    return (dpi(phys[0]), dpi(phys[1]))


def aspect_from_phys(phys: tuple[int, int, int] | None) -> tuple[int, int] | None:
    """Pixel aspect ratio (x, y) from pHYs with unit 0 (no unit); None otherwise or with a zero."""
    if phys is None or phys[2] != 0 or not (phys[0] and phys[1]):
        return None
    return (phys[0], phys[1])


def colour_key(header: PngHeader, trns: bytes | None) -> bool:
    """Does a gray or RGB image have a valid tRNS colour key (one sample per channel), which libpng turns
    into an alpha channel?"""
    channels = {0: 1, 2: 3}.get(header.color_type)
    return channels is not None and trns is not None and len(trns) == 2 * channels


def samples16(header: PngHeader, trns: bytes | None) -> int:
    """Samples per pixel decode16 produces: the colour type's, plus alpha made from a tRNS colour key."""
    return {0: 1, 2: 3, 4: 2, 6: 4}[header.color_type] + colour_key(header, trns)


def pixel_stream(fh, info: PngChunks, tmp_dir=None) -> np.ndarray:
    """The PNG libpng needs to decode the pixels of the open file `fh` (read_chunks gave `info`): signature, IHDR,
    tRNS when it is a colour key (libpng makes alpha of it), the IDAT chunks and IEND; (bytes,) uint8.

    libpng checks every chunk it is given and complains about what it dislikes (a damaged or "known incorrect"
    sRGB ICC profile, an odd sBIT or text chunk ...); imagecodecs logs that, and Python's last-resort handler
    prints it on stderr, past --quiet. oldphoto reads the other chunks itself, so libpng is not shown them.
    One copy of the compressed data, read straight into an allocate() buffer: RAM up to _STREAM_RAM, else our own
    unlinked temp file in `tmp_dir`.
    Not a map of the source: a scan cut short in place while libpng reads it would raise SIGBUS, killing the whole
    run. ValueError when the file ends before its chunks do (changed while it was read).
    """
    if len(info.idat) != 1:
        raise ValueError("IDAT chunks are not consecutive (another chunk between them)" if info.idat
                         else "no IDAT chunk (no pixel data)")
    first, n = info.idat[0]
    prefix = info.head + (chunk(b"tRNS", info.trns) if colour_key(info.header, info.trns) else b"")
    size, end = os.fstat(fh.fileno()).st_size, first + n + 12
    if size < end:  # said before any buffer is made
        raise ValueError(f"truncated: the file has {size} bytes, its chunks end at byte {end} (changed while it was "
                         f"read)")
    buf = allocate((len(prefix) + n + 12,), np.uint8, tmp_dir, threshold=_STREAM_RAM)
    buf[: len(prefix)] = np.frombuffer(prefix, np.uint8)
    fh.seek(first)
    with memoryview(buf) as whole:
        pos, stop = len(prefix), len(prefix) + n
        while pos < stop:
            got = fh.readinto(whole[pos:stop])
            if not got:
                raise ValueError(f"truncated: the file ends at byte {first + pos - len(prefix)}, its chunks end at "
                                 f"byte {end} (changed while it was read)")
            pos += got
    buf[stop:] = np.frombuffer(chunk(b"IEND", b""), np.uint8)  # read_chunks saw at least IEND after the IDATs
    return buf


class PixelChunks(io.RawIOBase):
    """The open PNG `fh` as Pillow needs to see it to decode its pixels (read_chunks gave `info`): signature, IHDR,
    PLTE, tRNS, the IDAT chunks and IEND, read from `fh` as Pillow reads (nothing is copied up front).

    oldphoto reads the other chunks itself (read_chunks); Pillow, shown them, parses them too and refuses the whole
    file over one it cannot take: a text chunk that inflates to more than its 1 MB (an ImageMagick raw profile, a
    long XMP packet, which read_chunks takes up to 64 MiB and a 16-bit PNG is read with), a pHYs of the wrong
    length (which read_chunks leaves out, as libpng does)."""

    def __init__(self, fh, info: PngChunks):
        super().__init__()
        if not info.idat:
            raise ValueError("no IDAT chunk (no pixel data)")
        plte = chunk(b"PLTE", info.plte) if info.plte is not None else b""  # as stored: its CRC was checked
        trns = chunk(b"tRNS", info.trns) if info.trns is not None else b""
        # the first run of IDAT chunks: shown the whole file, Pillow too stopped at the chunk after it (IDAT chunks
        # that come after another chunk are not read; the pixels of a stream that ended before them are)
        first, n = info.idat[0]
        # (start in this stream, bytes, offset in fh or the bytes themselves)
        self._parts = [(0, len(info.head), info.head)]
        for part in (plte, trns, first, chunk(b"IEND", b"")):
            start = self._parts[-1][0] + self._parts[-1][1]
            if isinstance(part, int):
                self._parts.append((start, n, part))
            elif part:
                self._parts.append((start, len(part), part))
        self._size = self._parts[-1][0] + self._parts[-1][1]
        self._fh, self._pos = fh, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = max(0, offset + (0, self._pos, self._size)[whence])
        return self._pos

    def readinto(self, buf) -> int:
        with memoryview(buf) as out:
            done = 0
            for start, n, src in self._parts:
                if done == len(out):
                    break
                at = self._pos - start
                if not 0 <= at < n:
                    continue
                k = min(n - at, len(out) - done)
                if isinstance(src, int):
                    self._fh.seek(src + at)
                    got = self._fh.readinto(out[done : done + k])
                    if not got:
                        break
                    k = got
                else:
                    out[done : done + k] = src[at : at + k]
                done += k
                self._pos += k
                if k < n - at and done < len(out):
                    break  # a short read of the file: what it gave
            return done


def decode16(data, header: PngHeader, trns: bytes | None, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a 16-bit gray/RGB(A) PNG into `out` -> (pixels (H, W, C) uint16, alpha (H, W) uint16 or None).

    data: the PNG's bytes (any buffer; pixel_stream keeps libpng quiet). out: (H, W, samples16(header, trns))
    uint16 buffer. Pixels and alpha are views into `out` (no extra copy). libpng turns a tRNS colour key into
    alpha (0 where the colour matches the key, 65535 elsewhere).
    """
    expected = (header.height, header.width, samples16(header, trns))
    if out.shape != expected or out.dtype != np.uint16:
        raise ValueError(f"output buffer must be {expected} uint16, got {out.shape} {out.dtype}")
    arr = imagecodecs.png_decode(data, out=out[:, :, 0] if expected[2] == 1 else out)
    arr = arr.reshape(expected)
    c = arr.shape[2]
    if c in (2, 4):
        return arr[:, :, : c - 1], arr[:, :, c - 1]
    return arr, None


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(ctype)))


def keyword_ok(key: str) -> bool:
    """Can `key` be a PNG text keyword (1-79 Latin-1 characters)? Readers accept others, writers must not."""
    return 1 <= len(key) <= 79 and all(ord(ch) < 256 for ch in key)


def text_chunk(key: str, value: str, compress: bool = False) -> bytes:
    """tEXt when the value is Latin-1, else iTXt (UTF-8); compressed (zTXt, or iTXt with the compression flag) when
    asked."""
    if not keyword_ok(key):
        raise ValueError(f"PNG text keyword must be 1-79 Latin-1 characters, got {key!r}")
    k = key.encode("latin-1")
    try:
        data = value.encode("latin-1")
        return chunk(b"zTXt", k + b"\0\0" + zlib.compress(data, 9)) if compress else chunk(b"tEXt", k + b"\0" + data)
    except UnicodeEncodeError:
        data = value.encode("utf-8")
        if compress:
            return chunk(b"iTXt", k + b"\0\1\0\0\0" + zlib.compress(data, 9))
        return chunk(b"iTXt", k + b"\0\0\0\0\0" + data)


def compressed_ok(value: str, source_size: int) -> bool:
    """May a text compressed in the source (its compressed chunk(s) of this keyword inflating to `source_size` bytes at
    most) be written compressed again? Yes, unless it became one text that Pillow would now refuse (several chunks of
    one keyword joined past PILLOW_MAX_TEXT_CHUNK) where no compressed chunk of the source went past it: it is then
    written uncompressed, as readable as the source was. A source whose own compressed chunk went past it was refused
    by Pillow already: its text stays compressed, however much was joined to it."""
    try:
        size = len(value.encode("latin-1"))  # as text_chunk stores it
    except UnicodeEncodeError:
        size = len(value.encode("utf-8"))
    return size < PILLOW_MAX_TEXT_CHUNK or source_size >= PILLOW_MAX_TEXT_CHUNK


def xmp_chunk(xmp: bytes) -> bytes:
    return chunk(b"iTXt", XMP_KEY.encode() + b"\0\0\0\0\0" + xmp)  # uncompressed, as the XMP spec asks


def iccp_chunk(icc: bytes) -> bytes:
    return chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc, 9))


def phys_fits(dpi: tuple[float, float]) -> bool:
    """Does pHYs (pixels per metre, 32 bits unsigned) hold this resolution?"""
    return all(0 <= round(d / _METERS_PER_INCH) <= 0xFFFFFFFF for d in dpi)


def phys_chunk(dpi: tuple[float, float]) -> bytes:
    if not phys_fits(dpi):
        raise ValueError(f"PNG pHYs cannot hold {dpi[0]:g} x {dpi[1]:g} dpi")
    x, y = (round(d / _METERS_PER_INCH) for d in dpi)
    return chunk(b"pHYs", struct.pack(">IIB", x, y, 1))


def aspect_chunk(aspect: tuple[int, int]) -> bytes:
    """pHYs with unit 0: the pixel aspect ratio only (values up to 2**32 - 1, see metadata.aspect_within)."""
    return chunk(b"pHYs", struct.pack(">IIB", aspect[0], aspect[1], 0))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(band: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """band (rows, N) uint8, prev (N,) the row above -> (rows, 1 + N): per row the filter (None, Sub, Up,
    Average, Paeth) with the smallest sum of absolute residuals, the heuristic libpng uses."""
    x = band.astype(np.int16)
    b = np.vstack([prev[None], band[:-1]]).astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    residuals = np.stack([x, x - a, x - b, x - ((a + b) >> 1), x - _paeth(a, b, c)]).astype(np.uint8)
    score = np.abs(residuals.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
    best = score.argmin(axis=0)
    out = np.empty((band.shape[0], band.shape[1] + 1), np.uint8)
    out[:, 0] = best
    out[:, 1:] = residuals[best, np.arange(band.shape[0])]
    return out


def write_png(out, pixels: np.ndarray, alpha: np.ndarray | None, chunks: list[bytes], level: int = 6) -> None:
    """Encode pixels (H, W, 1|3) uint8|uint16 and optional alpha (H, W) into the binary stream `out`.

    `chunks`: complete metadata chunks (see chunk()) placed between IHDR and the image data.
    """
    h, w, c = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    channels = c + (alpha is not None)
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    out.write(SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)))
    for ch in chunks:
        out.write(ch)
    bpp = channels * depth // 8
    rows = max(1, _BAND_BYTES // (w * bpp))
    comp = zlib.compressobj(level)
    pending = bytearray()
    prev = np.zeros(w * bpp, np.uint8)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        parts = [pixels[y0:y1]] + ([alpha[y0:y1, :, None]] if alpha is not None else [])
        band = np.concatenate(parts, axis=2) if len(parts) > 1 else np.ascontiguousarray(pixels[y0:y1])
        if depth == 16:
            band = band.astype(">u2")  # PNG samples are big-endian
        raw = band.reshape(y1 - y0, -1).view(np.uint8)
        pending += comp.compress(_filter_rows(raw, prev, bpp))
        prev = raw[-1].copy()
        while len(pending) >= _IDAT_SIZE:
            out.write(chunk(b"IDAT", bytes(pending[:_IDAT_SIZE])))
            del pending[:_IDAT_SIZE]
    pending += comp.flush()
    if pending:
        out.write(chunk(b"IDAT", bytes(pending)))
    out.write(chunk(b"IEND", b""))
