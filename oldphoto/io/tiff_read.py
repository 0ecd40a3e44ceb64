"""TIFF input (tifffile): choose the page, check the layout from the header, decode into gray/RGB + alpha.

Handles 1/2/4/8/16-bit gray (MinIsBlack/MinIsWhite), RGB, palette, CMYK, JPEG-compressed YCbCr, alpha
(associated alpha is un-premultiplied; a transparency mask page becomes alpha too), planar or interleaved,
strips or tiles, classic or BigTIFF, any compression tifffile + imagecodecs decode (LZW, Deflate, JPEG,
PackBits, CCITT ...).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import tifffile

from . import tiff_ifd as T
from .buffers import allocate, bands, unpremultiply
from .cmyk import CmykConverter
from .iptc import iptc_of, readable_block, without_padding
from .metadata import (DESCRIPTIVE_TAGS, LAYOUT_TAGS, ORIENTATION, RESOLUTION_TAGS, WINDOWS_TAGS, YCBCR_TAGS, Metadata,
                       aspect_from_tags, dpi_from_tags, orientation_of, resolution_note, tags_from_ifd)

_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _TRANSPARENCY_MASK, _SEPARATED, _YCBCR = 0, 1, 2, 3, 4, 5, 6
_REDUCED, _MASK = 1, 4  # NewSubfileType bits: a reduced-resolution version, a transparency mask
_ASSOC_ALPHA, _UNASSOC_ALPHA = 1, 2
_ICC, _XMP, _IPTC, _PHOTOSHOP = 34675, 700, 33723, 34377
# How the file stored its pixels beyond LAYOUT_TAGS (bilevel and fax options, fill order, free space, page number,
# inks of a CMYK file converted on read): nothing a derivative carries or a reader needs to be told about
_STORAGE_TAGS = frozenset({263, 264, 265, 266, 288, 289, 292, 293, 297, 321, 332, 333, 334, 336})
_PHOTOMETRIC_NAMES = {4: "transparency mask", 8: "CIELab", 9: "ICCLab", 10: "ITULab", 32803: "CFA",
                      32844: "LogL", 32845: "LogLuv", 34892: "LinearRaw"}
# TiffPage fields used as single numbers; a damaged tag (count > 1) makes tifffile give a tuple instead
_NUMBER_FIELDS = ("imagewidth", "imagelength", "imagedepth", "samplesperpixel", "subfiletype", "photometric",
                  "sampleformat", "planarconfig", "compression")
_READ_BYTES = 1 << 20  # compressed bytes tifffile reads (and decodes) per pass: bounds its scratch memory


class UnsupportedTiff(ValueError):
    """The file is a valid TIFF that oldphoto does not handle; the message says why."""


class _LogNotes(logging.Filter):
    """Filter on the "tifffile" and "imagecodecs" loggers: what they log while a thread is inside log_notes()
    goes to that thread's notes, not to logging's handlers (Python's last-resort handler would print it to
    stderr, and the library never prints). Records from other threads pass unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.active: dict[int, list[str]] = {}  # thread id -> notes of the file it reads

    def filter(self, record: logging.LogRecord) -> bool:
        notes = self.active.get(threading.get_ident())
        if notes is None:
            return True
        message = f"{record.name}: {record.getMessage()}"
        if message not in notes:
            notes.append(message)
        return False


_LOG_NOTES = _LogNotes()
for _name in ("tifffile", "imagecodecs"):  # imagecodecs logs libpng's warnings (e.g. extra data after the pixels)
    logging.getLogger(_name).addFilter(_LOG_NOTES)


@contextmanager
def log_notes() -> Iterator[list[str]]:
    """Collect what tifffile and imagecodecs log in this thread meanwhile (e.g. an invalid ResolutionUnit
    tifffile ignored, data libpng found after the pixels)."""
    me = threading.get_ident()
    outer = _LOG_NOTES.active.get(me)
    notes: list[str] = []
    _LOG_NOTES.active[me] = notes
    try:
        yield notes
    finally:
        if outer is None:
            del _LOG_NOTES.active[me]
        else:
            _LOG_NOTES.active[me] = outer


@contextmanager
def _damaged() -> Iterator[None]:
    """Around tifffile calls: tifffile trips over some damaged directories with a TypeError (e.g. a tuple
    where it expects a number) or a ZeroDivisionError (a tile width of 0); report it as the damaged file it is, not
    as a programming error."""
    try:
        yield
    except (TypeError, ZeroDivisionError) as e:
        raise tifffile.TiffFileError(f"damaged image directory ({e})") from e


def _check_numbers(p: tifffile.TiffPage) -> None:
    """Refuse a page whose layout fields are not single numbers (oldphoto does arithmetic on them)."""
    for name in _NUMBER_FIELDS:
        if not isinstance(getattr(p, name), int):
            raise tifffile.TiffFileError(f"damaged image directory ({name} is not a single number)")


def _is_preview(p: tifffile.TiffPage, main: tifffile.TiffPage) -> bool:
    # flagged reduced-resolution, or an unflagged thumbnail: at most half the size, same aspect ratio
    if p.subfiletype & _REDUCED:
        return True
    if not main.imagewidth:  # no pixels in any page (the largest is read): refused as an empty image, not divided by
        return True
    small = p.imagewidth * 2 <= main.imagewidth and p.imagelength * 2 <= main.imagelength
    expected_height = p.imagewidth * main.imagelength / main.imagewidth
    return small and abs(p.imagelength - expected_height) <= max(1.0, 0.05 * expected_height)


def _is_mask(p: tifffile.TiffPage) -> bool:
    """A transparency mask of a full-resolution image (a reduced-resolution one belongs to a preview)."""
    return not p.subfiletype & _REDUCED and bool(p.subfiletype & _MASK or p.photometric == _TRANSPARENCY_MASK)


def choose_page(tif: tifffile.TiffFile) -> tuple[int, list[int], int]:
    """(index of the page to read, indices of transparency mask pages, number of pages); refuses files with
    more than one real image."""
    with _damaged():
        pages = list(tif.pages)
    if not pages:
        raise UnsupportedTiff("TIFF has no image directory")
    for p in pages:
        _check_numbers(p)
    masks = [i for i, p in enumerate(pages) if _is_mask(p)]
    full = [i for i, p in enumerate(pages) if not p.subfiletype & _REDUCED and i not in masks] or [0]
    main = max(full, key=lambda i: pages[i].imagewidth * pages[i].imagelength)
    masks = [i for i in masks if i != main]
    if any(i != main and i not in masks and not _is_preview(p, pages[main]) for i, p in enumerate(pages)):
        raise UnsupportedTiff(f"multi-page TIFF with {len(pages)} pages is not supported; split it first")
    return main, masks, len(pages)


def _mask_page(tif: tifffile.TiffFile, main: int, masks: list[int], has_alpha: bool,
               notes: list[str]) -> int | None:
    """The mask page to carry as alpha, if one fits the main page; a note for each mask page."""
    p, chosen = tif.pages[main], None
    for i in masks:
        m = tif.pages[i]
        if chosen is not None:
            why = f"page {chosen + 1} is carried already"
        elif has_alpha:
            why = "the image has an alpha channel of its own"
        elif (m.imagewidth, m.imagelength) != (p.imagewidth, p.imagelength):
            why = f"it is {m.imagewidth} x {m.imagelength} pixels, the image {p.imagewidth} x {p.imagelength}"
        elif m.photometric != _TRANSPARENCY_MASK or m.bitspersample != 1 or m.samplesperpixel != 1 \
                or m.imagedepth != 1:
            why = (f"photometric {m.photometric}, {m.samplesperpixel} sample(s) of {m.bitspersample} bit(s) "
                   "is not a 1-bit mask")
        elif m.compression not in tifffile.TIFF.DECOMPRESSORS:
            why = f"its compression {m.compression} cannot be decoded"
        else:
            chosen = i
            notes.append(f"page {i + 1} (transparency mask) carried as alpha")
            continue
        notes.append(f"page {i + 1} (transparency mask) not carried: {why}")
    return chosen


@dataclass
class TiffPlan:
    """What reading will produce, known from the header alone."""

    tif: tifffile.TiffFile
    fh: io.BufferedReader
    index: int
    pages: int
    width: int  # as stored (before orientation)
    height: int
    channels: int  # 1 or 3 after conversion
    dtype: np.dtype
    alpha: bool  # read() returns alpha: an extra sample, or the transparency mask page
    source_mode: str
    orientation: int
    ifd0: T.Ifd = field(repr=False)
    notes: list[str] = field(default_factory=list)
    mask: int | None = None  # index of the transparency mask page carried as alpha

    @property
    def extra_alpha(self) -> bool:
        """Is alpha stored as an extra sample of the page (not as a mask page)?"""
        return self.alpha and self.mask is None

    @property
    def page(self) -> tifffile.TiffPage:
        return self.tif.pages[self.index]

    def decoder_memory(self) -> None:
        """None: a TIFF is decoded into allocate()'s buffers (on disk when large), strips and tiles a few at a time,
        so it needs no more RAM than any other file (reader.read's check)."""
        return None

    def decode(self, tmp_dir) -> tuple[np.ndarray, np.ndarray | None, Metadata, list[str]]:
        meta, notes = self._metadata()
        pixels, alpha, icc_after = _decode_pixels(self, tmp_dir, meta.icc, notes)
        meta.icc = icc_after
        return pixels, alpha, meta, self.notes + notes

    def metadata(self) -> Metadata:
        """The metadata decode() returns, without decoding (reader.read_metadata)."""
        return self._metadata()[0]

    def _metadata(self) -> tuple[Metadata, list[str]]:
        notes: list[str] = []
        order, big = self.tif.byteorder, self.tif.is_bigtiff
        e = self.ifd0.entries
        meta = Metadata(icc=_raw(e.get(_ICC), order), xmp=_raw(e.get(_XMP), order),
                        iptc=_raw(e.get(_IPTC), order), tiff_tags=tags_from_ifd(self.ifd0))
        meta.iptc = meta.iptc and without_padding(meta.iptc)  # the records, not the NULs making whole LONGs
        predictor = self.page.predictor  # a damaged tag (count > 1) gives a tuple: as if there were none
        meta.tiff_compression = (int(self.page.compression), predictor if isinstance(predictor, int) else 1)
        meta.dpi = dpi_from_tags(meta.tiff_tags)
        meta.aspect = aspect_from_tags(meta.tiff_tags)  # ResolutionUnit 1: never with dpi
        if (note := resolution_note(meta.tiff_tags, "TIFF")) is not None:
            notes.append(note)
        meta.photoshop, resources = readable_block(_raw(e.get(_PHOTOSHOP), order), "tag 34377", notes)
        meta.iptc = meta.iptc or iptc_of(resources)  # Photoshop keeps IPTC there too, some writers only there
        children = {}
        for tag, name in ((T.EXIF_IFD, "EXIF"), (T.GPS_IFD, "GPS")):
            if tag in e:
                try:  # leniently, as an EXIF block (T.parse_exif): a value past the file's end drops its entry
                    offsets = e[tag].ints()
                    if len(offsets) != 1:  # as parse_exif, which follows a pointer of count 1 only
                        raise T.IfdError(f"tag {tag} holds {len(offsets)} offsets, not 1")
                    children[tag], _ = T.read_ifd(T.file_reader(self.fh), offsets[0], order, big, notes=notes,
                                                  name=T.DIRECTORY_NAMES[tag])
                except T.IfdError as err:
                    notes.append(f"{name} directory is unreadable and was not kept ({err})")
        if children or any(t in WINDOWS_TAGS for t in e):
            keep = set(DESCRIPTIVE_TAGS) | set(RESOLUTION_TAGS) | set(WINDOWS_TAGS) | {ORIENTATION}
            ifd0 = T.Ifd({t: v for t, v in e.items() if t in keep}, children)
            meta.exif = T.build_exif(ifd0, order)
        return meta, notes


def _raw(entry: T.Entry | None, order: str) -> bytes | None:
    """A blob tag's bytes as in the file (some writers store IPTC as LONG, which byte order would scramble)."""
    if entry is None:
        return None
    return entry.data if order == "<" else T.swap_order(entry.type, entry.data)


def _check_first_directory(fh) -> None:
    """A truncated file often loses its directory (many writers put it last): say so plainly."""
    size = fh.seek(0, 2)
    fh.seek(0)
    head = fh.read(16)
    order = "<" if head[:2] == b"II" else ">"
    if head[2:4] in (b"+\0", b"\0+"):
        offset = struct.unpack(order + "Q", head[8:16])[0] if len(head) >= 16 else size
    else:
        offset = struct.unpack(order + "I", head[4:8])[0] if len(head) >= 8 else size
    if offset + 2 > size:
        raise ValueError(f"truncated: the image directory at byte {offset} is past the end of the file "
                         f"({size} bytes)")


def plan(fh, check_size: Callable[[int, int], None]) -> TiffPlan:
    _check_first_directory(fh)
    fh.seek(0)  # tifffile takes the current position as the start of the file
    with _damaged():
        tif = tifffile.TiffFile(fh)
    index, masks, pages = choose_page(tif)
    p = tif.pages[index]
    if not (p.imagewidth and p.imagelength):  # as PNG's header says it; found only by the pipeline before
        raise ValueError(f"header gives an empty image ({p.imagewidth} x {p.imagelength})")
    check_size(p.imagewidth, p.imagelength)
    wanted = set(DESCRIPTIVE_TAGS) | set(RESOLUTION_TAGS) | set(WINDOWS_TAGS) | {ORIENTATION, _ICC, _XMP, _IPTC}
    wanted |= {_PHOTOSHOP, T.EXIF_IFD, T.GPS_IFD}
    ifd0, _ = T.read_ifd(T.file_reader(fh), p.offset, tif.byteorder, tif.is_bigtiff, wanted=wanted, follow=())
    notes: list[str] = []
    left = sorted({t.code for t in p.tags} - wanted - LAYOUT_TAGS - YCBCR_TAGS - _STORAGE_TAGS)
    if left:  # private and other tags (Photoshop layers, PrintIM, GeoTIFF, a scanner's own): values unread
        named = [f"{code} ({tifffile.TIFF.TAGS.get(code)})" if tifffile.TIFF.TAGS.get(code) else str(code)
                 for code in left]
        notes.append(f"TIFF tag(s) {', '.join(named)} not carried: oldphoto does not know what they mean for a "
                     "restored derivative")
    orientation = orientation_of(ifd0, notes)
    previews = pages - 1 - len(masks)
    if previews:
        others = f"{previews} other" if masks else f"the other {previews}"  # a mask page is no preview
        notes.append(f"read page {index + 1}; {others} page(s) are previews")
    channels, dtype, alpha, mode = _layout(p, notes)
    mask = _mask_page(tif, index, masks, alpha, notes)
    return TiffPlan(tif, fh, index, pages, p.imagewidth, p.imagelength, channels, dtype, alpha or mask is not None,
                    mode, orientation, ifd0, notes, mask)


def _layout(p: tifffile.TiffPage, notes: list[str]) -> tuple[int, np.dtype, bool, str]:
    """(channels, dtype, has alpha, source mode) read() will produce; UnsupportedTiff otherwise."""
    photometric, bits, spp = int(p.photometric), p.bitspersample, p.samplesperpixel
    extras = tuple(int(x) for x in p.extrasamples)
    colour = spp - len(extras)
    if p.imagedepth > 1:
        raise UnsupportedTiff(f"volumetric TIFF (depth {p.imagedepth}) is not supported")
    if int(p.sampleformat) != 1:
        kind = {2: "signed integer", 3: "floating point"}.get(int(p.sampleformat), f"format {int(p.sampleformat)}")
        raise UnsupportedTiff(f"unsupported sample format: {bits}-bit {kind}")
    if len(extras) > 1:
        raise UnsupportedTiff(f"{spp} samples per pixel ({len(extras)} extra samples) is not supported")
    alpha = len(extras) == 1
    if alpha and extras[0] not in (_ASSOC_ALPHA, _UNASSOC_ALPHA):
        notes.append("extra sample of unspecified meaning kept as alpha")
    a = "A" if alpha else ""
    if photometric in (_MINISBLACK, _MINISWHITE) and colour == 1:
        if bits not in (1, 2, 4, 8, 16):
            raise UnsupportedTiff(f"unsupported bit depth: {bits}-bit gray")
        if photometric == _MINISWHITE:
            notes.append("MinIsWhite gray inverted to MinIsBlack")
        if bits < 8:
            notes.append(f"{bits}-bit gray converted to 8-bit")
        if bits == 16:
            return 1, np.dtype(np.uint16), alpha, f"L{a};16" if alpha else "I;16"
        return 1, np.dtype(np.uint8), alpha, "1" if bits == 1 and not alpha else f"L{a}"
    if photometric == _PALETTE and colour == 1:
        if bits > 16 or alpha:
            raise UnsupportedTiff(f"unsupported palette layout ({bits}-bit, {spp} samples)")
        if p.colormap is None:
            raise tifffile.TiffFileError("damaged image directory (a palette image without its ColorMap)")
        notes.append("palette converted to RGB")
        eight = _colormap8(p.colormap) is not None
        return 3, np.dtype(np.uint8 if eight else np.uint16), False, "P"
    if bits not in (8, 16):
        raise UnsupportedTiff(f"unsupported bit depth: {bits} bits per sample")
    dtype = np.dtype(np.uint8 if bits == 8 else np.uint16)
    suffix = ";16" if bits == 16 else ""
    if photometric == _RGB and colour == 3:
        return 3, dtype, alpha, f"RGB{a}{suffix}"
    if photometric == _YCBCR and colour == 3:
        if int(p.compression) not in (7, 34892):
            raise UnsupportedTiff("YCbCr TIFF without JPEG compression is not supported")
        return 3, dtype, alpha, "YCbCr"
    if photometric == _SEPARATED and colour == 4:
        inkset = p.tags.valueof(332, 1)
        if inkset != 1:
            raise UnsupportedTiff(f"separated TIFF with ink set {inkset} (not CMYK) is not supported")
        return 3, dtype, alpha, f"CMYK{suffix}"
    name = _PHOTOMETRIC_NAMES.get(photometric, f"photometric {photometric}")
    raise UnsupportedTiff(f"unsupported colour layout: {name} with {colour} colour sample(s)")


def _data_end(p: tifffile.TiffPage) -> int:
    """The byte after the page's last strip or tile; ValueError when it has none."""
    ends = [o + n for o, n in zip(p.dataoffsets, p.databytecounts) if n]
    if not ends:
        raise ValueError("TIFF page has no image data")
    return max(ends)


def _check_data_in_file(p: tifffile.TiffPage, size: int) -> None:
    if (end := _data_end(p)) > size:
        raise ValueError(f"truncated: image data runs to byte {end} but the file has {size} bytes")


def _read_page(p: tifffile.TiffPage, out: np.ndarray, fh) -> None:
    """The page's pixels into `out` (its p.shape, p.dtype), decoded a slice at a time with plain reads of `fh`.

    Never a map of the source: a scan cut short in place while it is read (software saving over the same file) would
    raise SIGBUS on the first page touched past its new end, killing the whole run. ValueError when the file no longer
    holds the page's data, before or after tifffile read it, whatever tifffile made of the short read (an error, a
    decoding error, zeros)."""
    # a plain view of a disk buffer (np.memmap): tifffile would flush one it read a contiguous page into, an msync
    # writing the whole unlinked scratch file out to disk (seconds for a 100-MP scan) for nothing
    view = out.view(np.ndarray)
    try:
        with _damaged():
            p.asarray(out=view, maxworkers=1, buffersize=_READ_BYTES)
    except (ValueError, RuntimeError, tifffile.TiffFileError) as e:  # imagecodecs raises RuntimeErrors
        _check_still_there(p, fh, e)
        raise
    _check_still_there(p, fh, None)


def _check_still_there(p: tifffile.TiffPage, fh, cause: BaseException | None) -> None:
    """ValueError (from `cause`) when `fh` has become shorter than the page's data: it changed while it was read."""
    size, end = os.fstat(fh.fileno()).st_size, _data_end(p)
    if size < end:
        raise ValueError(f"truncated: the file ends at byte {size}, its pixel data at byte {end} (changed while it "
                         "was read)") from cause


def _decode_pixels(pl: TiffPlan, tmp_dir, icc: bytes | None, notes: list[str]):
    """-> (pixels (H, W, C), alpha (H, W) or None, ICC profile valid for the returned pixels)."""
    pixels, alpha, icc = _decode_page(pl, tmp_dir, icc, notes)
    if pl.mask is not None:
        alpha = _mask_alpha(pl, tmp_dir)
    return pixels, alpha, icc


def _mask_alpha(pl: TiffPlan, tmp_dir) -> np.ndarray:
    """The transparency mask page as alpha at the image's depth: 0 (outside) transparent, 1 (inside) opaque."""
    m = pl.tif.pages[pl.mask]
    _check_data_in_file(m, pl.tif.filehandle.size)
    inside = allocate(m.shape, m.dtype, tmp_dir)  # bool, a byte per pixel
    _read_page(m, inside, pl.fh)
    alpha = allocate(inside.shape, pl.dtype, tmp_dir)
    top = np.iinfo(pl.dtype).max
    for rows in bands(inside.shape[0], inside.shape[1] * pl.dtype.itemsize):
        np.multiply(inside[rows], top, out=alpha[rows], dtype=pl.dtype)
    return alpha


def _decode_page(pl: TiffPlan, tmp_dir, icc: bytes | None, notes: list[str]):
    p = pl.page
    _check_data_in_file(p, pl.tif.filehandle.size)
    photometric, h, w = int(p.photometric), p.imagelength, p.imagewidth
    raw = allocate(p.shape, p.dtype, tmp_dir)  # an uncompressed page too is read into it: see _read_page
    _read_page(p, raw, pl.fh)
    if int(p.planarconfig) == 2 and raw.ndim == 3:  # (S, H, W) -> (H, W, S)
        inter = allocate((h, w, raw.shape[0]), raw.dtype, tmp_dir)
        for rows in bands(h, w * raw.shape[0] * raw.itemsize):
            inter[rows] = np.moveaxis(raw[:, rows], 0, 2)
        raw = inter
    if raw.ndim == 2:
        raw = raw[:, :, None]
    if photometric == _PALETTE:
        return _palette(raw, p.colormap, pl.dtype, tmp_dir), None, icc
    if photometric in (_MINISBLACK, _MINISWHITE):
        pixels, alpha = _gray(raw, p.bitspersample, photometric == _MINISWHITE, pl, tmp_dir)
    else:
        pixels, alpha = _split(raw, pl.extra_alpha)
    if photometric == _SEPARATED:
        pixels, icc = _cmyk_to_rgb(pixels, icc, tmp_dir, notes)
    if alpha is not None and int(p.extrasamples[0]) == _ASSOC_ALPHA:
        unpremultiply(pixels, alpha)
        notes.append("associated (premultiplied) alpha converted to straight alpha")
    return pixels, alpha, icc


def _split(arr: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if has_alpha:
        return arr[:, :, :-1], arr[:, :, -1]
    return arr, None


def _gray(raw, bits: int, inverted: bool, pl: TiffPlan, tmp_dir):
    pixels, alpha = _split(raw, pl.extra_alpha)
    if bits in (8, 16):
        if inverted:
            top = np.iinfo(pixels.dtype).max
            for rows in bands(raw.shape[0], raw.shape[1] * raw.itemsize):
                np.subtract(top, pixels[rows], out=pixels[rows])
        return pixels, alpha
    out = allocate(pixels.shape, np.uint8, tmp_dir)
    levels = (np.arange(1 << bits) * 255 // ((1 << bits) - 1)).astype(np.uint8)  # 1-bit: bools -> 0/255
    lut = levels[::-1] if inverted else levels
    for rows in bands(raw.shape[0], raw.shape[1]):
        out[rows] = lut[pixels[rows].astype(np.intp)]
    if alpha is not None:
        alpha = levels[alpha.astype(np.intp)]  # alpha is never inverted
    return out, alpha


def _colormap8(colormap) -> np.ndarray | None:
    """The 8-bit palette a 16-bit TIFF colormap (3, entries) holds, or None when it uses all 16 bits.

    Writers scale 8-bit values either exactly (v * 257: libtiff, tifffile) or by a shift (v * 256: Pillow,
    white is 65280); no value but 0 is a multiple of both, so the two cannot be confused.
    """
    cmap = np.asarray(colormap)
    for scale in (257, 256):
        if not np.any(cmap % scale):
            return (cmap // scale).astype(np.uint8)
    return None


def _palette(raw, colormap, dtype: np.dtype, tmp_dir) -> np.ndarray:
    lut = (_colormap8(colormap) if dtype == np.uint8 else np.asarray(colormap).astype(np.uint16)).T  # (entries, 3)
    out = allocate((raw.shape[0], raw.shape[1], 3), dtype, tmp_dir)
    for rows in bands(raw.shape[0], raw.shape[1] * 3 * dtype.itemsize):
        idx = np.minimum(raw[rows, :, 0].astype(np.intp), len(lut) - 1)
        out[rows] = lut[idx]
    return out


def _cmyk_to_rgb(cmyk: np.ndarray, icc: bytes | None, tmp_dir, notes: list[str]):
    """-> (RGB pixels, ICC profile valid for them)."""
    convert = CmykConverter(icc, cmyk.dtype)
    out = allocate(cmyk.shape[:2] + (3,), cmyk.dtype, tmp_dir)
    for rows in bands(cmyk.shape[0], cmyk.shape[1] * 4 * cmyk.itemsize):
        out[rows] = convert(cmyk[rows])
    notes.extend(convert.notes)
    return out, convert.icc_out
