"""JPEG, PNG and WebP input: Pillow for 8-bit data, libpng (png.decode16) for 16-bit PNG.

Pillow's plugin classes are used directly: Image.open would apply Pillow's own global pixel limit, while
oldphoto checks its max_pixels itself before anything is decoded.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from ..errors import XmpError
from . import png
from . import tiff_ifd as T
from . import xmp_tree
from .buffers import allocate, band_rows, bands, in_ram
from .cmyk import CmykConverter
from .iptc import (PHOTOSHOP_HEADER, PNG_8BIM_KEY, PNG_IPTC_KEY, iptc_from_profile, iptc_of, merged_resources,
                   pack_resources, raw_profile, readable_block)
from .metadata import Metadata, aspect_from_tags, dpi_from_tags, orientation_of, resolution_note, tags_from_ifd

# Opening a JPEG, Pillow parses its EXIF for info["dpi"] (not used: _jpeg_dpi) and warns about a damaged block
# on stderr, which --quiet cannot silence. oldphoto parses EXIF itself and puts what is wrong in the file's notes.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def _app13(im: JpegImagePlugin.JpegImageFile, marker: int) -> None:
    """Pillow's handler of APP13 segments, but for the IndexError its parse of a Photoshop block raises on a segment
    that ends inside a resource's header (after its id, before its name), as the first of the segments Photoshop
    splits a large block over may: by then the segment is read and in `applist`, from which oldphoto reads the
    resources itself (readable_block); Pillow's own parse, info["photoshop"], is not used. Needed however oldphoto
    reads the resources: Pillow runs this handler while it opens the file."""
    try:
        JpegImagePlugin.APP(im, marker)
    except IndexError:
        if not (im.applist and im.applist[-1][0] == "APP13"):
            raise


# a handler for the whole process (Pillow looks its handlers up in this table), only ever more tolerant than its own;
# installed only where the table is laid out as in the Pillow versions this was written for (10-13), so that a later
# Pillow that changes it keeps its own handler rather than breaking every read
_APP13 = JpegImagePlugin.MARKER.get(0xFFED)
if isinstance(_APP13, tuple) and len(_APP13) == 3 and _APP13[2] is getattr(JpegImagePlugin, "APP", None):
    JpegImagePlugin.MARKER[0xFFED] = (*_APP13[:2], _app13)


def _app2(im: JpegImagePlugin.JpegImageFile, marker: int) -> None:
    """Pillow's handler of APP2 segments, less the ICC segments too short to hold their sequence number and count:
    Pillow's own assembly of the profile, as it reads the frame header, raised IndexError on one and refused the
    photo. oldphoto assembles the profile from `applist` itself (_jpeg_icc), where the segment stays."""
    JpegImagePlugin.APP(im, marker)
    icc = getattr(im, "icclist", None)
    if icc and len(icc[-1]) < len(_ICC_HEADER) + 2:
        icc.pop()


_APP2 = JpegImagePlugin.MARKER.get(0xFFE2)
if isinstance(_APP2, tuple) and len(_APP2) == 3 and _APP2[2] is getattr(JpegImagePlugin, "APP", None):
    JpegImagePlugin.MARKER[0xFFE2] = (*_APP2[:2], _app2)
_ICC_HEADER = b"ICC_PROFILE\0"
_OPENERS = {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile,
            "WEBP": WebPImagePlugin.WebPImageFile}
# Pillow mode -> (mode each band is converted to, colour channels, alpha, note)
_MODES = {
    "1": ("L", 1, False, "1-bit converted to 8-bit gray"),
    "L": (None, 1, False, None),
    "LA": (None, 1, True, None),
    "P": ("RGB", 3, False, "palette converted to RGB"),
    "PA": ("RGBA", 3, True, "palette converted to RGB"),
    "RGB": (None, 3, False, None),
    "RGBA": (None, 3, True, None),
    "CMYK": (None, 3, False, None),  # converted by CmykConverter
    "I;16": (None, 1, False, None),
}
_TRANSPARENT = {"L": "LA", "RGB": "RGBA", "P": "RGBA", "1": "LA"}  # modes whose tRNS colour key means alpha
_PNG16 = {0: (1, False, "I;16"), 2: (3, False, "RGB;16"), 4: (1, True, "LA;16"), 6: (3, True, "RGBA;16")}
_PILLOW_ONE_BYTE = ("1", "L", "P")  # Pillow modes it stores in a byte a pixel; "I;16" in 2, the others here in 4


@dataclass
class RasterPlan:
    """What reading will produce, known from the header alone (same fields as TiffPlan)."""

    fh: object
    format: str
    width: int
    height: int
    channels: int
    dtype: np.dtype
    alpha: bool
    source_mode: str
    orientation: int
    meta: Metadata
    image: Image.Image | None  # None for 16-bit PNG
    convert_to: str | None
    png_chunks: png.PngChunks | None = None  # 16-bit PNG: header, tRNS and IDAT places for the decoder
    pages: int = 1
    notes: list[str] = field(default_factory=list)

    def metadata(self) -> Metadata:
        """The metadata decode() returns, without decoding (reader.read_metadata)."""
        return self.meta

    def decoder_memory(self) -> tuple[int, str] | None:
        """(bytes of RAM decode() holds at its peak, why) for an image Pillow decodes: its whole decoded image
        (Pillow keeps RGB, RGBA, LA, PA and CMYK in 4 bytes a pixel), our copies of it where allocate() keeps them in
        RAM and the scratch of a band of rows (Pillow's crop and conversion, a CMYK one's float32 arithmetic); while
        it decodes, a progressive JPEG's DCT coefficients (2 bytes each, the whole image's: libjpeg frees them before
        our copies are made) and libwebp's RGBA canvas and Pillow's copy of its bytes (held until the end). None for
        a 16-bit PNG, decoded a band at a time into allocate()'s buffers."""
        if self.image is None:
            return None
        im = self.image
        pixel = 1 if im.mode in _PILLOW_ONE_BYTE else 2 if im.mode == "I;16" else 4
        area = self.width * self.height
        ours = in_ram(area * self.channels * self.dtype.itemsize)
        ours += in_ram(area * self.dtype.itemsize) if self.alpha else 0
        row = _band_row_bytes(self.width, self.dtype)
        band = min(self.height, band_rows(row)) * row
        ours += band * (16 if im.mode == "CMYK" else 3)
        if self.format == "WEBP":
            ours += 8 * area
        elif self.format == "JPEG" and im.info.get("progressive"):
            ours = max(ours, _coefficient_bytes(im))
        return area * pixel + ours, f"Pillow holds the whole decoded {self.format} in RAM"

    def decode(self, tmp_dir) -> tuple[np.ndarray, np.ndarray | None, Metadata, list[str]]:
        notes = list(self.notes)
        if self.image is None:
            header = self.png_chunks.header
            out = allocate((header.height, header.width, png.samples16(header, self.png_chunks.trns)), np.uint16,
                           tmp_dir)
            data = png.pixel_stream(self.fh, self.png_chunks, tmp_dir)
            pixels, alpha = png.decode16(data, header, self.png_chunks.trns, out)
            return pixels, alpha, self.meta, notes
        pixels, alpha = self._decode_pillow(tmp_dir, notes)
        return pixels, alpha, self.meta, notes

    def _decode_pillow(self, tmp_dir, notes: list[str]):
        im = self.image
        im.load()
        w, h = im.size
        pixels = allocate((h, w, self.channels), self.dtype, tmp_dir)
        alpha = allocate((h, w), self.dtype, tmp_dir) if self.alpha else None
        cmyk = CmykConverter(self.meta.icc, np.uint8) if im.mode == "CMYK" else None
        for rows in bands(h, _band_row_bytes(w, self.dtype)):
            part = im.crop((0, rows.start, w, rows.stop))
            if self.convert_to is not None:
                part = part.convert(self.convert_to)
            arr = np.asarray(part)
            if cmyk is not None:
                arr = cmyk(arr)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            pixels[rows] = arr[:, :, : self.channels]
            if alpha is not None:
                alpha[rows] = arr[:, :, self.channels]
        im.close()  # free Pillow's copy before the caller makes its own (e.g. for orientation)
        if cmyk is not None:
            notes.extend(cmyk.notes)
            self.meta.icc = cmyk.icc_out
        return pixels, alpha


def _band_row_bytes(width: int, dtype: np.dtype) -> int:
    """The scratch of a row as _decode_pillow converts it, in bands (buffers.bands): 4 samples a pixel."""
    return width * 4 * dtype.itemsize


def _coefficient_bytes(im: Image.Image) -> int:
    """The bytes of the DCT coefficients libjpeg holds for the whole of the progressive JPEG `im` (Pillow's opened
    image, nothing decoded): 2 bytes each, 64 a block of 8 x 8 samples, each component's blocks padded to whole
    MCUs; 6 bytes a pixel for 4:4:4 RGB, 3 for 4:2:0, 2 for gray."""
    layers = [(h, v) for _, h, v, _ in getattr(im, "layer", [])] or [(1, 1)] * len(im.getbands())
    hmax, vmax = max(h for h, _ in layers), max(v for _, v in layers)
    mcus_x, mcus_y = -(-im.size[0] // (8 * hmax)), -(-im.size[1] // (8 * vmax))
    return sum(mcus_x * h * mcus_y * v * 128 for h, v in layers)


def exif_fields(blob: bytes | None, notes: list[str]) -> tuple[bytes | None, dict[int, object], int]:
    """(EXIF block without prefix or None if unusable, descriptive tags, orientation)."""
    if not blob:
        return None, {}, 1
    blob = blob[6:] if blob.startswith(b"Exif\0\0") else blob
    try:
        ifd0, _, _ = T.parse_exif(blob, notes)  # what it drops (a value outside the block ...) is noted
    except T.IfdError as e:
        notes.append(f"EXIF block is malformed and was not kept ({e})")
        return None, {}, 1
    return blob, tags_from_ifd(ifd0), orientation_of(ifd0, notes)


def _check_riff_size(fh) -> None:
    size = fh.seek(0, 2)
    fh.seek(4)
    (declared,) = struct.unpack("<I", fh.read(4))
    if declared + 8 > size:
        raise ValueError(f"truncated: the RIFF header gives {declared + 8} bytes but the file has {size}")


_WEBP_CHUNKS = 1000  # chunks looked through for the image's before giving up (a valid file has it among its first few)


def webp_lossless(fh) -> bool | None:
    """Is the WebP open in `fh` lossless: True for a VP8L bitstream (alone, or in a VP8X container), False for a VP8
    one (lossy; any alpha in an ALPH chunk beside it), None where no image chunk is found within the RIFF size (an
    animation, whose frames are ANMF chunks, or a damaged or cut short file: reading it says what is wrong). Walks
    the chunk headers only; leaves the position anywhere."""
    fh.seek(4)
    head = fh.read(8)
    if len(head) < 8 or head[4:] != b"WEBP":
        return None
    end, pos = 8 + struct.unpack("<I", head[:4])[0], 12
    for _ in range(_WEBP_CHUNKS):
        if pos + 8 > end:
            break
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8:
            break
        fourcc, size = struct.unpack("<4sI", chunk)
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        pos += 8 + size + size % 2
    return None


def _png_dpi(phys, tags: dict[int, object]) -> tuple[float, float] | None:
    """pHYs, or the EXIF resolution when it agrees with pHYs (it is exact; pHYs is rounded to px/m)."""
    from_phys, from_exif = png.dpi_from_phys(phys), dpi_from_tags(tags)
    if from_exif is None:
        return from_phys
    if from_phys is None:
        return from_exif
    # an EXIF resolution pHYs cannot hold (damaged, or another tool's) differs from the one pHYs gives
    if png.phys_fits(from_exif) and png.phys_chunk(from_phys) == png.phys_chunk(from_exif):
        return from_exif
    return from_phys


def _jpeg_dpi(info: dict, tags: dict[int, object], notes: list[str]) -> tuple[float, float] | None:
    """JFIF density when its unit is absolute (not Pillow's info["dpi"], which makes up 72 dpi for EXIF without
    resolution and uses XResolution for both axes), or the EXIF resolution when it agrees with the JFIF
    density (it is exact; JFIF holds whole numbers) or the JFIF header gives no unit, as for PNG's pHYs. A JFIF
    density of 0 in an absolute unit, or in a unit JFIF does not define, is passed over with a note (0 without a
    unit, like 1:1, says nothing and is passed over silently)."""
    unit, density = info.get("jfif_unit"), info.get("jfif_density")
    from_exif = dpi_from_tags(tags)
    if unit is not None and density and (unit > 2 or (unit and not all(density))):
        why = f"unknown unit {unit}" if unit > 2 else "a resolution of 0"
        notes.append(f"JFIF density {density[0]} x {density[1]} ignored: {why} means nothing")
    if unit not in (1, 2) or not density or not all(density):
        return from_exif
    scale = 2.54 if unit == 2 else 1.0  # JFIF unit 2 is dots per cm
    if from_exif is not None and all(round(e / scale) == d for e, d in zip(from_exif, density)):
        return from_exif
    return (density[0] * scale, density[1] * scale)


def _with_extension(xmp: bytes | None, applist: list, notes: list[str]) -> bytes | None:
    """The JPEG's XMP with its Extended XMP merged in (Photoshop and Lightroom move what does not fit in one APP1
    segment there: long histories, Camera Raw settings, document ancestors). When the extension the packet names is
    missing, not whole, not what its GUID (an MD5) says, or not XML: the standard packet alone, without its pointer
    to the extension, and a note; segments of other GUIDs are passed over with a note."""
    parts = [data[len(xmp_tree.JPEG_EXTENSION_HEADER) :] for app, data in applist
             if app == "APP1" and data.startswith(xmp_tree.JPEG_EXTENSION_HEADER)]
    guid = xmp_tree.extension_guid(xmp) if xmp else None
    if guid is None:
        if parts:
            notes.append(f"Extended XMP ({len(parts)} segment(s)) not kept: no XMP packet names it")
        return xmp
    others = sum(not xmp_tree.is_part_of(part, guid) for part in parts)
    if others:
        notes.append(f"{others} Extended XMP segment(s) not kept: not of the GUID {guid.decode('ascii')} the XMP "
                     "packet names")
    data, why = xmp_tree.join_extension(parts, guid)
    if data is not None:
        try:
            return xmp_tree.merge_extension(xmp, data, "Extended XMP")
        except XmpError as e:
            why = e.reason
    notes.append(f"Extended XMP not kept: {why}")
    try:
        return xmp_tree.without_extension(xmp, "XMP packet")
    except XmpError as e:  # carried as it is, pointer included (the standard packet is what cannot be parsed)
        if e.reason != why:
            notes[-1] += f"; the XMP packet that names it cannot be parsed ({e.reason}) and keeps its pointer"
        return xmp


def _raw_profiles(text: dict[str, str], notes: list[str]) -> dict[str, bytes]:
    """The hex "Raw profile type ..." texts ImageMagick (and ExifTool) write into PNG for metadata PNG had no chunk
    for, taken out of `text`: {"iptc" | "8bim" | "exif" | "xmp": bytes}, and "iptc block": the Photoshop resource
    block an iptc profile may hold whole (its IPTC among its resources). Left as text they would be carried as such,
    an EXIF of the unrestored file among them; one that is damaged is dropped with a note (the photo is still
    read)."""
    found: dict[str, bytes] = {}
    for key in [k for k in text if k.startswith(png.RAW_PROFILE)]:
        kind = key[len(png.RAW_PROFILE) :].lower()
        if kind not in ("iptc", "8bim", "exif", "xmp", "app1"):
            continue  # not metadata oldphoto reads: carried as the text it is
        try:
            data = raw_profile(text.pop(key))
            if kind == "iptc" and data.removeprefix(PHOTOSHOP_HEADER).startswith(b"8BIM"):
                # ExifTool writes a whole Photoshop resource block there: its other resources (copyright flag,
                # URL, caption ...) are the file's resources, as in an 8bim profile, and read as one (a damaged
                # one keeps those before the damage, with a note); its IPTC records are among them
                found.setdefault("iptc block", data.removeprefix(PHOTOSHOP_HEADER))
                continue
            if kind == "iptc":
                data = iptc_from_profile(data)
        except ValueError as e:
            notes.append(f"PNG text {key!r} is damaged ({e}) and was not kept")
            continue
        if kind == "app1":  # a whole APP1 segment's payload: EXIF or XMP, told by its header
            kind = "xmp" if data.startswith(xmp_tree.JPEG_XMP_HEADER) else "exif"
            data = data[len(xmp_tree.JPEG_XMP_HEADER) :] if kind == "xmp" else data
        found.setdefault(kind, data)
    return found


def _png_resources(profiles: dict[str, bytes], notes: list[str]) -> tuple[bytes | None, list]:
    """(block, resources) of a PNG's Photoshop image resources (readable_block) from its raw profiles (_raw_profiles):
    the 8bim text's; ExifTool's whole block in the iptc text joins them (iptc.merged_resources), or stands alone."""
    block, resources = readable_block(profiles.get("8bim"), f"PNG text {PNG_8BIM_KEY!r}", notes)
    if "iptc block" not in profiles:
        return block, resources
    own, in_iptc = readable_block(profiles["iptc block"], f"PNG text {PNG_IPTC_KEY!r}", notes)
    if "8bim" not in profiles:
        return own, in_iptc
    resources = merged_resources(resources, in_iptc, f"PNG text {PNG_8BIM_KEY!r}", f"PNG text {PNG_IPTC_KEY!r}",
                                 notes)
    return pack_resources(resources) or None, resources


def _one_of(chunk: bytes | None, profile: bytes | None, what: str, notes: list[str]) -> bytes | None:
    """The PNG's own chunk for EXIF or XMP, else the raw profile text's copy; a differing copy is noted."""
    if chunk is None:
        return profile
    if profile is not None and profile.removeprefix(b"Exif\0\0") != chunk.removeprefix(b"Exif\0\0"):
        notes.append(f"{what} of a PNG raw profile text not kept: it differs from the {what} chunk, which is kept")
    return chunk


def _jpeg_icc(applist: list, notes: list[str]) -> bytes | None:
    """A JPEG's ICC profile from its APP2 segments (ICC.1, B.4: each numbered from 1 and giving their count), in
    their numbers' order; None with a note when they do not make one whole (Pillow drops such a profile without a
    word)."""
    parts = [payload for app, payload in applist if app == "APP2" and payload.startswith(_ICC_HEADER)]
    if not parts:
        return None
    n = len(_ICC_HEADER)
    if any(len(p) < n + 2 for p in parts):
        notes.append("ICC profile dropped: one of its JPEG APP2 segments is cut short")
        return None
    numbers = sorted(p[n] for p in parts)
    counts = sorted({p[n + 1] for p in parts})
    if counts != [len(parts)] or numbers != list(range(1, len(parts) + 1)):
        notes.append(f"ICC profile dropped: its JPEG APP2 segments do not make one whole (numbered "
                     f"{', '.join(map(str, numbers))}, of {' or '.join(map(str, counts))})")
        return None
    return b"".join(p[n + 2 :] for p in sorted(parts, key=lambda p: p[n])) or None


def _jpeg_comments(applist: list, notes: list[str]) -> dict[str, str]:
    """Every COM segment, not the last alone as Pillow's info["comment"]: one "Comment", a line break between
    two segments' texts (with a note, as it is no longer byte for byte)."""
    comments = [_comment(data) for app, data in applist if app == "COM" and data]
    if len(comments) > 1:
        notes.append(f"{len(comments)} JPEG comments joined into one, a line break between them")
    return {"Comment": "\n".join(comments)} if comments else {}


# APPn segments read (or only about how the file was encoded: Adobe's colour transform), by marker and identifier
_JPEG_READ = {("APP0", b"JFIF"), ("APP1", b"Exif"), ("APP1", b"http://ns.adobe.com/xap/1.0/"),
              ("APP1", b"http://ns.adobe.com/xmp/extension/"), ("APP2", b"ICC_PROFILE"), ("APP2", b"MPF"),
              ("APP13", b"Photoshop 3.0"), ("APP14", b"Adobe")}


def _note_other_segments(applist: list, notes: list[str]) -> None:
    """A note naming the APPn segments not carried: vendors' own (Ducky of Photoshop's Save for Web, FlashPix,
    JUMBF with C2PA content credentials of the unrestored file, a JFXX thumbnail ...)."""
    others = []
    for app, data in applist:
        if not app.startswith("APP"):
            continue
        ident = data[:64].split(b"\0", 1)[0]
        if (app, ident) in _JPEG_READ:
            continue
        shown = ident[:32].decode("ascii") if ident.isascii() and ident.decode("ascii").isprintable() else ""
        name = f"{app} ({shown})" if shown else app
        if name not in others:
            others.append(name)
    if others:
        notes.append(f"JPEG segment(s) {', '.join(others)} not carried")


def _note_more_pictures(mp: bytes | None, notes: list[str]) -> None:
    """A note for the images a Multi-Picture (MPF, APP2) JPEG holds after the first (previews, other views of a
    stereo or panorama set): only the first is read and written."""
    if not mp:
        return
    try:
        ifd, _, _ = T.parse_exif(mp)
        count = next(iter(ifd.entries[0xB001].ints()), None) if 0xB001 in ifd.entries else None  # NumberOfImages
    except T.IfdError as e:
        notes.append(f"MPF (multi-picture) index unreadable ({e}): any image after the first is not carried")
        return
    if count is not None and count > 1:
        notes.append(f"{count - 1} more image(s) of this multi-picture (MPF) JPEG not carried: only the first, "
                     "the photo, is read")


def note_resolution(tags: dict[int, object], notes: list[str]) -> None:
    """A note for an EXIF resolution that means nothing (metadata.resolution_note), which is dropped."""
    if (note := resolution_note(tags, "EXIF")) is not None:
        notes.append(note)


def _jpeg_aspect(info: dict, tags: dict[int, object]) -> tuple[int, int] | None:
    """Pixel aspect ratio from a JFIF density without unit, or from EXIF resolution with unit 1 (none). JFIF's
    1:1 without unit says nothing: every encoder writes it when it has no resolution to give."""
    unit, density = info.get("jfif_unit"), info.get("jfif_density")
    if unit == 0 and density and all(density) and tuple(density) != (1, 1):
        return (density[0], density[1])
    return aspect_from_tags(tags)


def _comment(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@contextmanager
def _identified(fmt: str) -> Iterator[None]:
    """Pillow's "not identified by this driver" (its header parse found no size or layout) said plainly."""
    try:
        yield
    except SyntaxError as e:
        if str(e) != "not identified by this driver":
            raise
        what = "frame header (SOF)" if fmt == "JPEG" else "header"
        raise ValueError(f"no valid {what} giving the image's size and layout: damaged or cut short") from e


def _png_metadata(chunks: png.PngChunks, notes: list[str]) -> tuple[Metadata, int]:
    """(metadata, orientation) of a PNG from its chunks, noting what is not carried."""
    text = dict(chunks.text)
    notes += chunks.damaged
    if chunks.others:
        notes.append(f"PNG chunk(s) {', '.join(chunks.others)} not carried")
    for key, count in chunks.repeated.items():
        if key == png.XMP_KEY or key.startswith(png.RAW_PROFILE):
            notes.append(f"{count} PNG text chunks {key!r}: only the first is kept")
        else:
            notes.append(f"{count} PNG text chunks {key!r} joined into one, a line break between them")
    profiles = _raw_profiles(text, notes)
    exif, tags, orientation = exif_fields(_one_of(chunks.exif, profiles.get("exif"), "EXIF", notes), notes)
    note_resolution(tags, notes)
    if chunks.exif is None and orientation != 1:  # viewers show such a PNG as stored: so does its derivative
        notes.append(f"orientation {orientation} of the EXIF in a PNG raw profile text not applied: PNG readers "
                     "do not see that text")
        orientation = 1
    xmp = _one_of(chunks.xmp, profiles.get("xmp"), "XMP", notes)
    block, resources = _png_resources(profiles, notes)
    iptc = profiles.get("iptc") or iptc_of(resources)
    meta = Metadata(exif=exif, icc=chunks.icc, xmp=xmp, iptc=iptc, photoshop=block, tiff_tags=tags, text=text,
                    dpi=_png_dpi(chunks.phys, tags), png_chunks=dict(chunks.color),
                    compressed_text={k: n for k, n in chunks.compressed.items() if k in text})
    if meta.dpi is None:
        meta.aspect = png.aspect_from_phys(chunks.phys) or aspect_from_tags(tags)
    return meta, orientation


def _png16_plan(fh, header: png.PngHeader, chunks: png.PngChunks, orientation: int, meta: Metadata,
                notes: list[str]) -> RasterPlan:
    """The plan of a 16-bit PNG, which png's own decoder reads (Pillow would narrow it)."""
    if header.color_type not in _PNG16:
        raise ValueError(f"invalid PNG: colour type {header.color_type} cannot have 16 bits")
    channels, alpha, mode = _PNG16[header.color_type]
    alpha = alpha or png.colour_key(header, chunks.trns)
    return RasterPlan(fh, "PNG", header.width, header.height, channels, np.dtype(np.uint16), alpha, mode,
                      orientation, meta, None, None, png_chunks=chunks, notes=notes)


def _opened(fh, fmt: str, check_size: Callable[[int, int], None]) -> Image.Image:
    """The JPEG or WebP in `fh` opened by Pillow (nothing decoded yet), its size checked; a still image only."""
    fh.seek(0)
    with _identified(fmt):
        im = _OPENERS[fmt](fh)
    check_size(*im.size)
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise ValueError(f"animated {fmt} with {frames} frames is not supported")
    return im


def _pillow_metadata(im: Image.Image, fmt: str, notes: list[str]) -> tuple[Metadata, int]:
    """(metadata, orientation) of a JPEG or WebP as Pillow opened it, noting what is not carried."""
    info = im.info
    exif, tags, orientation = exif_fields(info.get("exif"), notes)
    note_resolution(tags, notes)
    block, resources = None, []
    if fmt == "JPEG":
        # the APP13 segments themselves, not Pillow's parse of them: it keeps no resource names, turns the
        # resolution info into numbers and cuts a resource that goes on in the next segment (Photoshop splits
        # a block over segments of 64 KB)
        parts = [payload[len(PHOTOSHOP_HEADER) :] for app, payload in im.applist
                 if app == "APP13" and payload.startswith(PHOTOSHOP_HEADER)]
        block, resources = readable_block(b"".join(parts), "JPEG APP13", notes)
    iptc = iptc_of(resources)
    text = {}
    if fmt == "JPEG":
        text = _jpeg_comments(im.applist, notes)
        _note_more_pictures(info.get("mp"), notes)
        _note_other_segments(im.applist, notes)
    elif info.get("comment"):
        text = {"Comment": _comment(info["comment"])}
    xmp = info.get("xmp") or None
    if fmt == "JPEG":
        xmp = _with_extension(xmp, im.applist, notes)
    icc = _jpeg_icc(im.applist, notes) if fmt == "JPEG" else info.get("icc_profile") or None
    meta = Metadata(exif=exif, icc=icc, xmp=xmp, iptc=iptc,
                    photoshop=block, tiff_tags=tags, text=text,
                    dpi=_jpeg_dpi(info, tags, notes) if fmt == "JPEG" else dpi_from_tags(tags))
    if meta.dpi is None:
        meta.aspect = _jpeg_aspect(info, tags) if fmt == "JPEG" else aspect_from_tags(tags)
    return meta, orientation


def _pillow_plan(fh, fmt: str, im: Image.Image, orientation: int, meta: Metadata, notes: list[str],
                 gray_bits: int | None) -> RasterPlan:
    """The plan of an image Pillow decodes, by its mode; gray_bits: the depth of a 2- or 4-bit gray PNG (Pillow
    reads it as "L", so no mode says it was widened), else None."""
    mode = im.mode
    if mode not in _MODES:
        raise ValueError(f"unsupported pixel mode {mode!r}")
    convert_to, channels, alpha, note = _MODES[mode]
    if mode in _TRANSPARENT and im.info.get("transparency") is not None:
        convert_to, alpha = _TRANSPARENT[mode], True
        channels = 1 if convert_to == "LA" else 3
    if note:
        notes.append(note)
    elif gray_bits:
        notes.append(f"{gray_bits}-bit gray converted to 8-bit")
    dtype = np.dtype(np.uint16 if mode == "I;16" else np.uint8)
    return RasterPlan(fh, fmt, im.size[0], im.size[1], channels, dtype, alpha, mode, orientation, meta, im,
                      convert_to, notes=notes)


def plan(fh, fmt: str, check_size: Callable[[int, int], None], header_only: bool = False,
         pixels: bool = True) -> RasterPlan:
    """What read() will produce; header_only (for probe) skips what lies after a PNG's pixel data; pixels False (for
    read_metadata, which decodes none) leaves a PNG's pixel data unread (its CRC unchecked)."""
    notes: list[str] = []
    if fmt == "PNG":
        fh.seek(0)
        header = png.read_header(fh.read(33))
        check_size(header.width, header.height)
        chunks = png.read_chunks(fh, header_only, pixels)
        if chunks.frames > 1:
            raise ValueError(f"animated PNG with {chunks.frames} frames is not supported")
        meta, orientation = _png_metadata(chunks, notes)
        if header.bit_depth == 16:
            return _png16_plan(fh, header, chunks, orientation, meta, notes)
        with _identified("PNG"):
            im = PngImagePlugin.PngImageFile(png.PixelChunks(fh, chunks))  # the chunks it needs for the pixels only
        gray_bits = header.bit_depth if header.color_type in (0, 4) and header.bit_depth in (2, 4) else None
        return _pillow_plan(fh, fmt, im, orientation, meta, notes, gray_bits)
    lossless = None
    if fmt == "WEBP":
        _check_riff_size(fh)
        lossless = webp_lossless(fh)
    im = _opened(fh, fmt, check_size)
    meta, orientation = _pillow_metadata(im, fmt, notes)
    meta.webp_lossless = lossless
    return _pillow_plan(fh, fmt, im, orientation, meta, notes, None)
