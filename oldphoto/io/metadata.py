"""What a photo carries besides pixels (EXIF, ICC, XMP, IPTC, resolution, TIFF tags, PNG text), and the
EXIF/TIFF directory oldphoto writes for a derivative: the source's tags, edited for upright pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction

from . import tiff_ifd as T
from .pixel_tags import PixelFrame, map_exif

DESCRIPTIVE_TAGS: dict[int, str] = {
    269: "DocumentName", 270: "ImageDescription", 271: "Make", 272: "Model", 285: "PageName",
    305: "Software", 306: "DateTime", 315: "Artist", 316: "HostComputer", 33432: "Copyright",
}
X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT = 282, 283, 296
RESOLUTION_TAGS = (X_RESOLUTION, Y_RESOLUTION, RESOLUTION_UNIT)
ORIENTATION, SOFTWARE, IMAGE_DESCRIPTION = 274, 305, 270
PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 40962, 40963

# Tags describing how the file that held them stored its pixels; never carried into another file.
LAYOUT_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324,
    325, 330, 338, 339, 340, 341, 347, 513, 514, 530, 532,
})
YCBCR_TAGS = frozenset({529, 531})  # JPEG EXIF convention; meaningless in an RGB TIFF
# Exif ComponentsConfiguration and CompressedBitsPerPixel: how the scan's file stored its pixels (a camera JPEG's
# Y,Cb,Cr and 4 bits a pixel; a TIFF's 4,5,6,0), wrong in a re-encoded output, and "not allowed in TIFF" (ExifTool's
# -validate); dropped from every output's Exif directory, as their XMP counterparts are (provenance._FILE_LAYOUT)
SOURCE_COMPRESSION_TAGS = frozenset({37121, 37122})
# What Windows Explorer writes in IFD0 of a TIFF (and JPEG EXIF) when an archivist edits its title, comments,
# authors, tags, subject or rating: carried entry by entry, as stored (UCS-2 bytes), like the rest of EXIF.
WINDOWS_TAGS = {18246: "Rating", 18249: "RatingPercent", 40091: "XPTitle", 40092: "XPComment", 40093: "XPAuthor",
                40094: "XPKeywords", 40095: "XPSubject"}

# PNG text keys with a TIFF/EXIF equivalent, used when the output cannot hold PNG text.
PNG_TEXT_TO_TAG = {"Description": 270, "Author": 315, "Copyright": 33432}

_NO_UNIT, _INCH, _CM = 1, 2, 3


@dataclass
class Metadata:
    """Everything oldphoto keeps from a file besides pixels. All fields optional."""

    exif: bytes | None = None  # EXIF block: TIFF structure without the b"Exif\0\0" prefix
    icc: bytes | None = None  # ICC profile, byte for byte
    xmp: bytes | None = None  # XMP packet as stored (a JPEG's Extended XMP merged into it: xmp_tree)
    iptc: bytes | None = None  # IPTC-IIM records (JPEG APP13 resource 0x0404 / TIFF tag 33723)
    # Photoshop image resources as stored (TIFF tag 34377, JPEG APP13 after "Photoshop 3.0", PNG "Raw profile type
    # 8bim"): 8BIM records; a derivative carries those about the photo (iptc.carried_resources)
    photoshop: bytes | None = None
    dpi: tuple[float, float] | None = None  # dots per inch (x, y); None when the file gives no absolute unit
    # pixel aspect ratio without a unit (PNG pHYs unit 0, JPEG JFIF units 0, ResolutionUnit 1): the horizontal
    # and vertical density as the source gave them (their ratio when not whole); only where dpi is None
    aspect: tuple[int, int] | None = None
    # descriptive TIFF tags (DESCRIPTIVE_TAGS and X/YResolution, ResolutionUnit): str for ASCII,
    # (num, den) for rationals, int for shorts. From IFD0 of a TIFF, else from IFD0 of the EXIF block.
    tiff_tags: dict[int, object] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)  # PNG tEXt/zTXt/iTXt by keyword; JPEG COM as "Comment"
    png_chunks: dict[str, bytes] = field(default_factory=dict)  # gAMA, cHRM, sRGB, cICP: PNG-only colour info
    # keywords of `text` a PNG stored compressed (zTXt, compressed iTXt) -> the largest inflated size of those chunks:
    # a PNG derivative writes them compressed too (png.compressed_ok)
    compressed_text: dict[str, int] = field(default_factory=dict)
    # how the pixels these metadata go with relate to the pixels exif and xmp give values in (SubjectArea ...): turned
    # upright from the source's orientation (set on read), enlarged (the pipeline); the writer maps those values
    frame: PixelFrame = PixelFrame()
    # a TIFF's (Compression, Predictor) of the page read: a TIFF derivative stores its pixels the same way where every
    # TIFF reader knows how, else in LZW (tiff_write.output_compression); None for other formats
    tiff_compression: tuple[int, int] | None = None
    # a WebP's bitstream: True for lossless (VP8L, alone or in a VP8X container), False for lossy (VP8, its alpha
    # in ALPH); a WebP derivative of a lossless master is lossless too (writer._write_webp); None for other formats
    webp_lossless: bool | None = None


def _is_shape_note(text: str) -> bool:
    """tifffile's default ImageDescription, {"shape": [...]} and nothing else: how that file stored its pixels
    (a layout record, wrong for a derivative of another size or layout), not a description of the photo."""
    if not text.startswith('{"shape"'):
        return False  # tifffile writes it so; nothing else is parsed (a deeply nested text would exhaust the stack)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and list(value) == ["shape"]


# BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG: the integer types a resolution written with the wrong type is found in
_INT_TYPES = (T.BYTE, T.SHORT, T.LONG, 6, 8, 9)


def tags_from_ifd(ifd: T.Ifd) -> dict[int, object]:
    """Descriptive and resolution tags of a directory as Python values (see Metadata.tiff_tags)."""
    out: dict[int, object] = {}
    for tag, e in ifd.entries.items():
        if tag in DESCRIPTIVE_TAGS and e.type == T.ASCII:
            if tag == IMAGE_DESCRIPTION and _is_shape_note(e.text()):
                continue
            out[tag] = e.text()
        elif tag in (X_RESOLUTION, Y_RESOLUTION) and e.type == T.RATIONAL and e.count == 1:
            out[tag] = e.rationals()[0]
        elif tag in (X_RESOLUTION, Y_RESOLUTION) and e.type in _INT_TYPES and e.count == 1 and e.ints()[0] >= 0:
            out[tag] = (e.ints()[0], 1)  # a whole number in an integer type (gThumb writes SLONG), as ExifTool reads it
        elif tag == RESOLUTION_UNIT and e.type in _INT_TYPES and e.count == 1:
            out[tag] = e.ints()[0]
    return out


def orientation_of(ifd0: T.Ifd, notes: list[str]) -> int:
    """The Orientation (1-8) a directory gives; 1, with a note, when the tag holds no integer from 1 to 8."""
    e = ifd0.entries.get(ORIENTATION)
    if e is None:
        return 1
    try:
        value = e.ints()[0] if e.count else None
    except T.IfdError:  # not an integer type
        value = None
    if value is None or not 1 <= value <= 8:
        shown = value if value is not None else f"(type {e.type}, {e.count} value(s))"
        notes.append(f"invalid orientation {shown} ignored")
        return 1
    return value


def tag_entry(tag: int, value: object) -> T.Entry:
    """A Metadata.tiff_tags value as a TIFF entry."""
    if isinstance(value, str):
        return T.ascii_entry(tag, value)
    if isinstance(value, bool):
        raise TypeError(f"TIFF tag {tag}: bool is not a TIFF value")
    if isinstance(value, int):
        return T.short_entry(tag, value) if tag == RESOLUTION_UNIT else T.int_entry(tag, value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return T.rational_entry(tag, *value)
    if isinstance(value, bytes):
        return T.bytes_entry(tag, T.UNDEFINED, value)
    raise TypeError(f"TIFF tag {tag}: unsupported value {value!r} (use str, int, (num, den) or bytes)")


def dpi_from_tags(tags: dict[int, object]) -> tuple[float, float] | None:
    """Dots per inch from X/YResolution + ResolutionUnit (default inch); None without an absolute unit, or for one
    that means nothing (a zero, a zero denominator: see resolution_note)."""
    x, y = tags.get(X_RESOLUTION), tags.get(Y_RESOLUTION)
    unit = tags.get(RESOLUTION_UNIT, _INCH)
    if not (isinstance(x, tuple) and isinstance(y, tuple)) or unit not in (_INCH, _CM) or not all((*x, *y)):
        return None
    scale = 2.54 if unit == _CM else 1.0
    return (x[0] / x[1] * scale, y[0] / y[1] * scale)


def aspect_from_tags(tags: dict[int, object]) -> tuple[int, int] | None:
    """Pixel aspect ratio from X/YResolution with ResolutionUnit 1 (none): the values when whole numbers, else
    their ratio (see Metadata.aspect); None without that unit or with a zero."""
    if not _aspect_only(tags):
        return None
    (xn, xd), (yn, yd) = tags[X_RESOLUTION], tags[Y_RESOLUTION]
    if not (xn and xd and yn and yd):
        return None
    if xn % xd == 0 and yn % yd == 0:
        return (xn // xd, yn // yd)
    ratio = Fraction(xn, xd) / Fraction(yn, yd)
    return (ratio.numerator, ratio.denominator)


def resolution_note(tags: dict[int, object], where: str) -> str | None:
    """The note for X/YResolution and ResolutionUnit that mean nothing, and are dropped (dpi_from_tags and
    aspect_from_tags give None for them): a zero, a zero denominator, a unit TIFF does not define; None otherwise.
    `where`: whose tags they are ("TIFF", "EXIF")."""
    x, y = tags.get(X_RESOLUTION), tags.get(Y_RESOLUTION)
    unit = tags.get(RESOLUTION_UNIT, _INCH)
    if not (isinstance(x, tuple) and isinstance(y, tuple)):
        return None
    if unit not in (_NO_UNIT, _INCH, _CM):
        why = f"unknown ResolutionUnit {unit}"
    elif not (x[1] and y[1]):
        why = "a zero denominator"
    elif not (x[0] and y[0]):
        why = "a resolution of 0"
    else:
        return None
    return f"{where} resolution {x[0]}/{x[1]} x {y[0]}/{y[1]} dropped: {why} means nothing"


def aspect_within(aspect: tuple[int, int], top: int) -> tuple[int, int] | None:
    """`aspect` with both values at most `top` (a field's limit), divided by their common divisor when needed;
    None when even that does not fit."""
    if max(aspect) > top:
        g = math.gcd(*aspect)
        aspect = (aspect[0] // g, aspect[1] // g)
    return aspect if max(aspect) <= top else None


def _resolution_entries(dpi: tuple[float, float], source: dict[int, object]) -> list[T.Entry]:
    # keep the source's exact rationals and unit when they still say the same thing (not after upscaling)
    old = dpi_from_tags(source)
    if old is not None and all(abs(a - b) <= 1e-6 * max(1.0, b) for a, b in zip(old, dpi)):
        unit = source.get(RESOLUTION_UNIT, _INCH)
        return [T.rational_entry(X_RESOLUTION, *source[X_RESOLUTION]),
                T.rational_entry(Y_RESOLUTION, *source[Y_RESOLUTION]), T.short_entry(RESOLUTION_UNIT, unit)]
    out = []
    for tag, v in zip((X_RESOLUTION, Y_RESOLUTION), dpi):
        f = Fraction(v).limit_denominator(1000)
        out.append(T.rational_entry(tag, f.numerator, f.denominator))
    return out + [T.short_entry(RESOLUTION_UNIT, _INCH)]


def _aspect_only(tags: dict[int, object]) -> bool:
    """X/YResolution with ResolutionUnit 1 (none): they give the pixel aspect ratio, not a size in inches."""
    return tags.get(RESOLUTION_UNIT) == _NO_UNIT and all(isinstance(tags.get(t), tuple)
                                                          for t in (X_RESOLUTION, Y_RESOLUTION))


def output_ifd0(meta: Metadata, *, width: int, height: int, software: str,
                for_tiff: bool) -> tuple[T.Ifd, str, list[str]]:
    """IFD0 (with Exif/GPS sub-directories) to write with an upright `width` x `height` derivative.

    Starts from the source EXIF; Metadata.tiff_tags override it; Orientation becomes 1, Software becomes
    `software`, PixelX/YDimension follow the output size, resolution follows meta.dpi (the source's
    aspect-ratio-only resolution, unit 1, is kept as it is; else meta.aspect is written with unit 1), values given
    in the source's pixels follow meta.frame (pixel_tags.map_exif). Returns (ifd, byte order to write the EXIF
    block in, notes about what was left out).
    """
    notes: list[str] = []
    ifd, order = T.Ifd(), "<"
    if meta.exif:
        try:
            ifd, order, has_thumbnail = T.parse_exif(meta.exif)  # what it drops, the reader noted
        except T.IfdError as e:
            notes.append(f"EXIF block not written: it is malformed ({e})")
        else:
            if has_thumbnail:
                notes.append("EXIF thumbnail dropped: it shows the unrestored image")
    source_resolution = {t: meta.tiff_tags[t] for t in RESOLUTION_TAGS if t in meta.tiff_tags}
    if not source_resolution:
        source_resolution = {t: v for t, v in tags_from_ifd(ifd).items() if t in RESOLUTION_TAGS}
    drop = LAYOUT_TAGS | YCBCR_TAGS if for_tiff else LAYOUT_TAGS
    for tag in list(ifd.entries):
        if tag in drop or tag in RESOLUTION_TAGS:
            del ifd.entries[tag]
    for tag, value in meta.tiff_tags.items():
        if tag not in RESOLUTION_TAGS and tag not in LAYOUT_TAGS and tag not in T.SUB_IFD_TAGS:
            ifd.entries[tag] = tag_entry(tag, value)
    for key, tag in PNG_TEXT_TO_TAG.items():
        if key in meta.text and tag not in ifd.entries:
            ifd.entries[tag] = T.ascii_entry(tag, meta.text[key])
    if meta.dpi is not None:
        for e in _resolution_entries(meta.dpi, source_resolution):
            ifd.entries[e.tag] = e
    elif aspect_from_tags(source_resolution) is not None:  # unit 1, no zero
        for tag, value in source_resolution.items():
            ifd.entries[tag] = tag_entry(tag, value)
    elif meta.aspect is not None:  # e.g. from a PNG's pHYs with unit 0
        aspect = aspect_within(meta.aspect, 0xFFFFFFFF)
        if aspect is None:
            notes.append(f"pixel aspect ratio {meta.aspect[0]}:{meta.aspect[1]} not written to the resolution "
                         "tags: more than 32 bits")
        else:
            for tag, value in zip((X_RESOLUTION, Y_RESOLUTION), aspect):
                ifd.entries[tag] = T.rational_entry(tag, value, 1)
            ifd.entries[RESOLUTION_UNIT] = T.short_entry(RESOLUTION_UNIT, _NO_UNIT)
    ifd.entries[ORIENTATION] = T.short_entry(ORIENTATION, 1)  # pixels are stored upright
    ifd.entries[SOFTWARE] = T.ascii_entry(SOFTWARE, software)
    exif = ifd.children.get(T.EXIF_IFD)
    if exif is not None:
        for tag, value in ((PIXEL_X_DIMENSION, width), (PIXEL_Y_DIMENSION, height)):
            if tag in exif.entries and for_tiff:  # EXIF: not in a TIFF, whose ImageWidth/Length give it (ExifTool
                del exif.entries[tag]  # -validate: "ExifImageWidth is not allowed in TIFF")
            elif tag in exif.entries:
                exif.entries[tag] = T.int_entry(tag, value)
        for tag in SOURCE_COMPRESSION_TAGS:  # the scan's file, not this one (a JPEG's: add_jpeg_required)
            exif.entries.pop(tag, None)
    map_exif(ifd, meta.frame, width, height, notes)
    if for_tiff and order == ">":  # the TIFF writer is little-endian: Unicode texts go over to its byte order
        _unicode_texts_little_endian(ifd)
        order = "<"
    return ifd, order, notes


# what the Exif directory says of the file written (ExifTool writes the same three when it makes one): the EXIF version
# whose rules the block follows (2.32: every tag the block can carry is defined by 2.32 or earlier, and EXIF 3.0's
# UTF-8 type is not read, so none comes through), FlashpixVersion 1.0, and the components of the compressed data
_EXIF_VERSION, _FLASHPIX_VERSION, _COMPONENTS_CONFIGURATION = 36864, 40960, 37121
_WRITTEN_VERSIONS = {_EXIF_VERSION: b"0232", _FLASHPIX_VERSION: b"0100"}
_JPEG_COMPONENTS = {3: b"\x01\x02\x03\x00", 1: b"\x01\x00\x00\x00"}  # Y Cb Cr; Y alone (the others: 0, none)


def add_exif_versions(ifd: T.Ifd) -> None:
    """ExifVersion 0232 and FlashpixVersion 0100 in the Exif sub-directory of IFD0 `ifd`, where it exists and lacks
    them: they describe the EXIF block as written (every tag ExifTool knows is defined by 2.32 or before, and EXIF
    3.0's UTF-8 entries are not read), not the photo, and ExifTool's -validate requires them in a JPEG's and in a
    TIFF's ("Missing required ... ExifIFD tag"). A version the scan stated is kept. No Exif sub-directory is made for
    them (ExifTool requires them only of one that exists)."""
    exif = ifd.children.get(T.EXIF_IFD)
    if exif is not None and exif:
        for tag, version in _WRITTEN_VERSIONS.items():
            exif.entries.setdefault(tag, T.bytes_entry(tag, T.UNDEFINED, version))


def add_jpeg_required(ifd: T.Ifd, width: int, height: int, channels: int = 3) -> None:
    """The tags EXIF requires of a JPEG that a scan of another format may not have given (ExifTool's -validate:
    "Missing required JPEG ... tag"): YCbCrPositioning, 1 (centred, JFIF's chroma siting, which the encoder writes),
    and, in an EXIF sub-directory, PixelX/YDimension, the size of the compressed image (and the versions every
    output gets: add_exif_versions). Those present are kept. ComponentsConfiguration describes the `channels`-channel
    data the encoder writes (1,2,3,0: Y Cb Cr; 1,0,0,0 for gray: Y alone), so it is always set: a TIFF scan's
    (4,5,6,0, its uncompressed RGB) or a colour scan's in a gray output would be wrong for this file. No Exif
    sub-directory is made for them, and ColorSpace is not added (sRGB or uncalibrated: a fact about the photo's
    colours the scan did not state)."""
    ifd.entries.setdefault(531, T.short_entry(531, 1))
    exif = ifd.children.get(T.EXIF_IFD)
    if exif is not None and exif:
        for tag, value in ((PIXEL_X_DIMENSION, width), (PIXEL_Y_DIMENSION, height)):
            exif.entries.setdefault(tag, T.int_entry(tag, value))
        components = _JPEG_COMPONENTS[channels]
        exif.entries[_COMPONENTS_CONFIGURATION] = T.bytes_entry(_COMPONENTS_CONFIGURATION, T.UNDEFINED, components)


# EXIF texts with an 8-byte character code (EXIF 2.3, 4.6.5 UserComment; GPSProcessingMethod, GPSAreaInformation):
# "UNICODE\0" is UCS-2 in the byte order of the file holding it, as ExifTool and exiv2 read it (ExifTool also takes
# "UNICODE " with a space, as some cameras write it)
_CODED_TEXTS = {T.EXIF_IFD: (37510,), T.GPS_IFD: (27, 28)}
_UNICODE_CODES = (b"UNICODE\0", b"UNICODE ")


def _ucs2_big_endian(text: bytes) -> bool:
    """Whether UCS-2 `text` found in a big-endian EXIF is big-endian, as it should be: Microsoft Photo (Windows
    Explorer, Photo Gallery) wrote it little-endian whatever the EXIF's order. A byte order mark says; else ExifTool's
    guess: the byte of each character that takes the more different values is its low byte, or, as many, the one
    that is zero less often."""
    if text[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return text[:2] == b"\xfe\xff"
    even = len(text) - len(text) % 2
    high, low = text[0:even:2], text[1:even:2]  # of each character read big-endian
    if len(set(high)) != len(set(low)):
        return len(set(high)) < len(set(low))
    return low.count(0) <= high.count(0)


def _unicode_texts_little_endian(ifd: T.Ifd) -> None:
    """Swap the UCS-2 of the Unicode coded texts of a big-endian source's EXIF into the little-endian order the
    directory is written in (their UNDEFINED bytes are not swapped with the numbers: exiv2 read them garbled and
    ExifTool warned "Wrong byte order for EXIF UserComment UNICODE text"). A text already little-endian (Microsoft
    Photo's, see _ucs2_big_endian) is right in the output as it is, and stays so."""
    for sub, tags in _CODED_TEXTS.items():
        child = ifd.children.get(sub)
        for tag in tags if child is not None else ():
            e = child.entries.get(tag)
            if e is None or e.type != T.UNDEFINED or e.data[:8] not in _UNICODE_CODES:
                continue
            code, text = e.data[:8], e.data[8:]
            if not _ucs2_big_endian(text):
                continue
            even = len(text) - len(text) % 2
            swapped = T.swap_order(T.SHORT, text[:even]) + text[even:]
            child.entries[tag] = T.Entry(tag, e.type, e.count, code + swapped)
