"""Write derivatives atomically with the source's metadata, in JPEG, PNG, TIFF or WebP.

What each format holds (anything else is reported in the returned notes, never dropped silently):
  JPEG  8-bit gray/RGB, no alpha. EXIF (APP1, <= 64 KiB), ICC (APP2, split), XMP (APP1, a packet over 65502
        bytes split into Extended XMP), IPTC and Photoshop resources (APP13), DPI (JFIF and EXIF), pixel aspect
        ratio (JFIF units 0 and EXIF), text "Comment" (COM), PNG text Description/Author/Copyright (EXIF).
  PNG   8/16-bit gray/RGB + alpha. EXIF (eXIf), ICC (iCCP), XMP (iTXt XML:com.adobe.xmp), IPTC (text chunk
        "Raw profile type iptc", as ExifTool/ImageMagick; Photoshop resources as "Raw profile type 8bim"), DPI or
        pixel aspect ratio (pHYs unit 1 or 0), all text, gAMA/cHRM/sRGB/cICP.
  TIFF  8/16-bit gray/RGB + alpha; a TIFF master's compression where it is none, LZW, PackBits or Deflate, else LZW
        with the horizontal predictor (tiff_write.output_compression). EXIF and GPS as sub-directories, descriptive
        tags in IFD0,
        ICC (34675), XMP (700), IPTC (33723, LONG), Photoshop resources (34377), resolution tags (ResolutionUnit 1
        for an aspect ratio only).
        PNG text only as Description/Author/Copyright.
  WEBP  8-bit RGB(A) (gray is stored as RGB), <= 16383 px a side. EXIF, ICC, XMP; DPI and pixel aspect
        ratio only inside EXIF.
        No IPTC or Photoshop resources. PNG text only as Description/Author/Copyright (EXIF). Lossless (VP8L)
        when the master was (meta.webp_lossless) or jpeg_quality is 100, else lossy (VP8) at jpeg_quality.
Everywhere: EXIF Orientation = 1 (pixels are upright), Software = `software`, PixelX/YDimension = the
output size, SubjectArea, SubjectLocation, FocalPlaneX/YResolution (EXIF and their XMP copies),
RelatedImageWidth/Length and the XMP face regions mapped through meta.frame (pixel_tags, xmp_regions), EXIF
thumbnail dropped (it shows the unrestored image), maker notes copied as bytes (their internal offsets may no
longer hold); of the Photoshop resources only those about the photo (IPTC, caption, copyright flag, URL,
resolution info rewritten), see iptc.carried_resources.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import __version__
from ..errors import ImageError, XmpError
from . import png
from . import tiff_ifd as T
from . import xmp_tree
from .atomic import Staging, atomic_output
from .iptc import (IPTC_RESOURCE, PNG_8BIM_KEY, PNG_IPTC_KEY, carried_resources, jpeg_app13, jpeg_app13_iptc,
                   pack_resources, png_text, resource_name)
from .metadata import PNG_TEXT_TO_TAG, Metadata, add_exif_versions, add_jpeg_required, aspect_within, output_ifd0
from .pixel_tags import map_xmp
from .tiff_write import output_compression, write_tiff

WRITE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP")
_MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}
_JPEG_SEGMENT = 65533
# XMP part 3 (1.1.3.1) gives a JPEG's standard packet at most 65502 bytes, two fewer than a segment holds after the
# header: the limit a reader written to the specification may hold the file to
_STANDARD_XMP_LIMIT = 65502
_BAND_BYTES = 1 << 20  # input bytes converted per step (uint32 scratch is twice that)
# libwebp's effort for a lossless WebP (method 0-6; quality 0-100, for lossless how hard it tries, nothing lost):
# what --jpeg-quality 100 wrote already (Pillow's method 4). On a 1 MP photo with a scan's grain (one core of an AMD
# EPYC) 49.6 % of the raw pixels in 0.42 s; method 6 is 5.5 % smaller but takes 6.2 s, method 0 7 % larger in
# 0.03 s; without grain method 6 gains nothing (29.1 % in 0.84 s here, 28.9 % in 6.5 s). README, Metadata
WEBP_LOSSLESS_EFFORT = {"method": 4, "quality": 100}


def _check_arrays(pixels: np.ndarray, alpha: np.ndarray | None) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"pixels must be (H, W, 1|3), got shape {getattr(pixels, 'shape', type(pixels))}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"pixels must not be empty, got shape {pixels.shape}")
    if alpha is not None and (alpha.shape != pixels.shape[:2] or alpha.dtype != pixels.dtype):
        raise ValueError(f"alpha must be {pixels.shape[:2]} {pixels.dtype}, got {alpha.shape} {alpha.dtype}")


def to_uint8(a: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as round(x / 257) (exact inverse of x * 257), a band at a time; uint8 unchanged."""
    if a.dtype == np.uint8:
        return a
    out = np.empty(a.shape, np.uint8)
    step = max(1, _BAND_BYTES // max(1, a[:1].nbytes))
    for y0 in range(0, a.shape[0], step):
        band = a[y0 : y0 + step].astype(np.uint32)
        band += 128
        band //= 257
        out[y0 : y0 + step] = band
    return out


def write(path: str | Path, pixels: np.ndarray, alpha: np.ndarray | None, fmt: str, meta: Metadata | None,
          *, jpeg_quality: int = 95, software: str = f"oldphoto {__version__}",
          provenance_xmp: bytes | Callable[[list[str]], bytes | None] | None = None, deflate_level: int = 6,
          staging: Staging | None = None) -> list[str]:
    """Write pixels (H, W, 1|3) uint8|uint16 and optional alpha (H, W) to `path` as `fmt`, atomically.

    meta: the source's metadata (None: none; meta.frame: how `pixels` relate to the pixels its EXIF and XMP values
    were given for, see pixel_tags). provenance_xmp: XMP packet replacing meta.xmp (see provenance.provenance_xmp),
    or a function that makes it from the notes known before the pixels are encoded (what the format cannot hold of
    the pixels and tags, JPEG segments too large among them; called again with those about the packet's own values
    when mapping it drops some), so the packet can say what the file lacks. The one note it cannot say is about
    itself: a packet too large for a JPEG even split into Extended XMP is not written at all (see _jpeg_xmp).
    jpeg_quality: JPEG, and WebP (100 = lossless WebP; a lossless WebP master, meta.webp_lossless, gives a lossless
    WebP whatever it is: webp_is_lossless). deflate_level: zlib level for PNG and a Deflate TIFF (1
    fastest, 9 smallest); a TIFF stores its pixels as meta.tiff_compression says (tiff_write.output_compression).
    Returns notes on anything the format could not hold (bit depth, alpha, metadata). Raises ImageError if the file
    cannot be written; then nothing is left behind and an existing file at `path` is unchanged.
    staging: the file stays under its temp name until staging.commit() (atomic.Staging: the outputs of one source
    replace their paths together).
    """
    path, fmt = _checked_request(path, pixels, alpha, fmt, jpeg_quality, deflate_level)
    meta = meta if meta is not None else Metadata()
    h, w = pixels.shape[:2]
    notes = _not_carried(meta, fmt)
    meta = _without_unfit_icc(meta, fmt, pixels.shape[2], notes)
    ifd0, order, ifd_notes = output_ifd0(meta, width=w, height=h, software=software, for_tiff=fmt == "TIFF")
    notes += ifd_notes
    add_exif_versions(ifd0)
    if fmt == "JPEG":
        add_jpeg_required(ifd0, w, h, pixels.shape[2])
    meta = _iptc_padded_for_tiff(meta, fmt)
    resources = _resources_for(meta, fmt, notes)
    notes += _format_losses(fmt, pixels, alpha, resources)
    storage = _tiff_storage(meta, notes) if fmt == "TIFF" else None  # known before the packet is made, which says it
    exif = None if fmt == "TIFF" else T.build_exif(ifd0, order)  # map_xmp reads ifd0, never changes it
    # what of the metadata a JPEG's segments cannot hold is settled here, before the packet that says so is made
    jpeg = _jpeg_settings(meta, exif, resources, jpeg_quality, pixels.shape[2], notes) if fmt == "JPEG" else None
    xmp = _xmp_packet(provenance_xmp, meta, ifd0, w, h, notes)
    try:
        with atomic_output(path, staging) as out:
            _encode(out, fmt, pixels, alpha, meta, xmp, ifd0, exif, resources, jpeg, storage, deflate_level,
                    jpeg_quality, notes)
    except OSError as e:
        raise ImageError(path, f"cannot write {fmt}: {e.strerror or e}") from e
    return notes


def _checked_request(path: str | Path, pixels: np.ndarray, alpha: np.ndarray | None, fmt: str, jpeg_quality: int,
                     deflate_level: int) -> tuple[Path, str]:
    """write()'s arguments checked, before anything is made: -> (path as a Path, fmt upper-case). Raises ValueError
    for an argument out of its range, ImageError for pixels larger than the format holds."""
    if not 0 <= deflate_level <= 9:
        raise ValueError(f"deflate_level must be in [0, 9], got {deflate_level}")
    path = Path(path)
    fmt = fmt.upper()
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"format must be one of {WRITE_FORMATS}, got {fmt!r}")
    _check_arrays(pixels, alpha)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    h, w = pixels.shape[:2]
    if fmt in _MAX_SIDE and max(h, w) > _MAX_SIDE[fmt]:
        raise ImageError(path, f"{fmt} cannot hold {w} x {h} pixels (at most {_MAX_SIDE[fmt]} a side)")
    return path, fmt


def _without_unfit_icc(meta: Metadata, fmt: str, channels: int, notes: list[str]) -> Metadata:
    """`meta` less an ICC profile that does not describe the pixels as stored (a WebP stores gray as RGB), with a
    note; and a note when a PNG's sRGB chunk gives way to the profile."""
    stored_channels = 3 if fmt == "WEBP" else channels
    if meta.icc and not _icc_fits(meta.icc, stored_channels):
        notes.append(f"ICC profile ({meta.icc[16:20].decode('latin-1').strip()}) dropped: it does not "
                     f"describe {'gray' if stored_channels == 1 else 'RGB'} pixels")
        meta = dataclasses.replace(meta, icc=None)
    if fmt == "PNG" and meta.icc and "sRGB" in meta.png_chunks:
        notes.append("PNG sRGB chunk not written: the scan's ICC profile is (iCCP), and a PNG holds one or the other")
    return meta


def _iptc_padded_for_tiff(meta: Metadata, fmt: str) -> Metadata:
    """`meta` with its IPTC NUL-padded to whole LONG values for a TIFF, else as it is."""
    if fmt == "TIFF" and meta.iptc and len(meta.iptc) % 4:
        # tag 33723 is written as LONG, as Photoshop writes it (Nikon Capture reads no other type, ExifTool's
        # -validate warns about any other): NUL-padded to whole values, which its IPTC digest then covers, as
        # ExifTool's CurrentIPTCDigest does (iptc._iptc_digest)
        meta = dataclasses.replace(meta, iptc=meta.iptc + b"\0" * (-len(meta.iptc) % 4))
    return meta


def _resources_for(meta: Metadata, fmt: str, notes: list[str]) -> list[tuple[int, bytes, bytes]] | None:
    """The Photoshop image resources the output carries (iptc.carried_resources), None when the source had none."""
    # they go where the source kept them (TIFF 34377, JPEG APP13, PNG raw profile); a file without them gets only
    # its IPTC, as before
    if not meta.photoshop:
        return None
    # a TIFF or PNG holds the IPTC once, in its own tag or text (see _write_tiff, _write_png)
    return carried_resources(meta.photoshop, meta.iptc, meta.dpi, notes, iptc_in_block=fmt not in ("TIFF", "PNG"))


def _format_losses(fmt: str, pixels: np.ndarray, alpha: np.ndarray | None,
                   resources: list[tuple[int, bytes, bytes]] | None) -> list[str]:
    """Notes on what of the pixels (H, W, 1|3) and alpha (H, W), and of the Photoshop resources, `fmt` cannot hold
    as they are."""
    notes = []
    if fmt in ("JPEG", "WEBP") and pixels.dtype == np.uint16:
        notes.append(f"16-bit reduced to 8-bit: {fmt} holds 8 bits per sample")
    if fmt == "JPEG" and alpha is not None:
        notes.append("alpha dropped: JPEG has no transparency")
    others = [r for r, _, _ in resources or [] if r != IPTC_RESOURCE and r != 0x0425]
    if fmt == "WEBP" and others:
        notes.append(f"Photoshop image resource(s) {', '.join(map(resource_name, others))} not written: WEBP cannot "
                     "hold them")
    if fmt == "WEBP" and pixels.shape[2] == 1:
        notes.append("gray stored as RGB: WEBP has no gray mode")
    return notes


def _tiff_storage(meta: Metadata, notes: list[str]) -> tuple[int, int]:
    """(Compression, Predictor) of a TIFF output (tiff_write.output_compression), with its note if any."""
    compression, predictor, note = output_compression(meta.tiff_compression)
    notes += [note] if note else []
    return compression, predictor


def _xmp_packet(provenance_xmp: bytes | Callable[[list[str]], bytes | None] | None, meta: Metadata, ifd0: T.Ifd,
                w: int, h: int, notes: list[str]) -> bytes | None:
    """The XMP packet to write (see write()'s provenance_xmp), its values in pixels mapped to the output's w x h
    (map_xmp), with notes on what mapping drops."""
    if callable(provenance_xmp):
        return _provenance_packet(provenance_xmp, meta, ifd0, w, h, notes)
    xmp = provenance_xmp if provenance_xmp is not None else meta.xmp
    # its copies of EXIF values in pixels agree with ifd0's
    return map_xmp(xmp, meta.frame, ifd0, w, h, notes) if xmp else xmp


def _provenance_packet(make: Callable[[list[str]], bytes | None], meta: Metadata, ifd0: T.Ifd, w: int, h: int,
                       notes: list[str]) -> bytes | None:
    """The packet `make` gives for the notes so far, mapped; made again when mapping drops some of its own values,
    so that it says that too. `notes` gets those of the mapping (in place: it is write()'s list)."""
    xmp = make(list(notes))
    mapped = list(notes)
    if xmp:
        mapped_xmp = map_xmp(xmp, meta.frame, ifd0, w, h, mapped)
        if mapped != notes:  # what of its own values it drops is said in it too: made again with those notes
            xmp = make(list(mapped))
            mapped = list(notes)
            mapped_xmp = map_xmp(xmp, meta.frame, ifd0, w, h, mapped) if xmp else xmp
        xmp = mapped_xmp
    notes[:] = mapped
    return xmp


def _encode(out, fmt: str, pixels: np.ndarray, alpha: np.ndarray | None, meta: Metadata, xmp: bytes | None,
            ifd0: T.Ifd, exif: bytes | None, resources, jpeg: _JpegSettings | None, storage: tuple[int, int] | None,
            deflate_level: int, jpeg_quality: int, notes: list[str]) -> None:
    """Encode pixels (H, W, 1|3) uint8|uint16 and alpha (H, W) as `fmt` into `out`, with what write() settled; JPEG
    and WebP get them reduced to 8 bits (to_uint8)."""
    if fmt == "TIFF":
        _write_tiff(out, pixels, alpha, meta, xmp, ifd0, resources, deflate_level, storage)
    elif fmt == "PNG":
        _write_png(out, pixels, alpha, meta, xmp, exif, resources, deflate_level)
    else:
        pixels8 = to_uint8(pixels)
        if fmt == "JPEG":
            _write_jpeg(out, pixels8, xmp, jpeg, notes)
        else:
            _write_webp(out, pixels8, None if alpha is None else to_uint8(alpha), meta, xmp, exif, jpeg_quality,
                        webp_is_lossless(meta, jpeg_quality))


def _icc_fits(icc: bytes, channels: int) -> bool:
    """Does the profile's colour space (header bytes 16-19) match gray (1) or RGB (3) pixels?"""
    space = icc[16:20]
    return space == (b"GRAY" if channels == 1 else b"RGB ")


def _not_carried(meta: Metadata, fmt: str) -> list[str]:
    notes = []
    text = dict(meta.text)
    if fmt == "PNG":
        bad = sorted(k for k in text if not png.keyword_ok(k))
        if bad:
            notes.append(f"text field(s) {', '.join(map(repr, bad))} not written: a PNG keyword is 1-79 Latin-1 "
                         "characters")
        if meta.dpi and not png.phys_fits(meta.dpi):
            notes.append(f"resolution {meta.dpi[0]:g} x {meta.dpi[1]:g} dpi not written to pHYs: more than "
                         "4294967295 pixels per metre (EXIF keeps it)")
        elif not meta.dpi and meta.aspect and aspect_within(meta.aspect, 0xFFFFFFFF) is None:
            notes.append(f"pixel aspect ratio {meta.aspect[0]}:{meta.aspect[1]} not written to pHYs: more than "
                         "4294967295")
        return notes
    if fmt == "JPEG":
        text.pop("Comment", None)  # COM marker
    text = {k: v for k, v in text.items() if k not in PNG_TEXT_TO_TAG}  # EXIF/TIFF tags (see output_ifd0)
    if text:
        notes.append(f"text field(s) {', '.join(sorted(text))} not written: {fmt} has no place for them")
    if meta.png_chunks:
        notes.append(f"PNG colour chunk(s) {', '.join(sorted(meta.png_chunks))} not written: PNG-only")
    if fmt == "WEBP" and meta.iptc:
        notes.append("IPTC-IIM not written: WEBP cannot hold it (XMP carries IPTC Core)")
    return notes


def _write_tiff(out, pixels, alpha, meta: Metadata, xmp: bytes | None, ifd0: T.Ifd, resources, level: int,
                storage: tuple[int, int]) -> None:
    block = pack_resources(resources) if resources else None
    for tag, typ, blob in ((34675, T.UNDEFINED, meta.icc), (700, T.BYTE, xmp), (34377, T.BYTE, block)):
        if blob:
            ifd0.entries[tag] = T.bytes_entry(tag, typ, blob)
    if meta.iptc:  # LONG, as Photoshop writes it (padded to whole values by write()): the bytes in file order
        ifd0.entries[33723] = T.Entry(33723, T.LONG, len(meta.iptc) // 4, bytes(meta.iptc))
    write_tiff(out, pixels, alpha, ifd0, level, *storage)


def _write_png(out, pixels, alpha, meta: Metadata, xmp: bytes | None, exif: bytes, resources, level: int) -> None:
    chunks = []
    if meta.icc:
        chunks.append(png.iccp_chunk(meta.icc))
    # gAMA and cHRM stay beside an iCCP, as the readers' fallback the PNG specification encourages (11.3.3.4);
    # only sRGB and iCCP must not both be present (write() notes an sRGB left out)
    chunks += [png.chunk(name.encode(), data) for name, data in meta.png_chunks.items()
               if not (meta.icc and name == "sRGB")]
    if meta.dpi:
        if png.phys_fits(meta.dpi):
            chunks.append(png.phys_chunk(meta.dpi))
    elif meta.aspect and (aspect := aspect_within(meta.aspect, 0xFFFFFFFF)) is not None:
        chunks.append(png.aspect_chunk(aspect))
    chunks.append(png.chunk(b"eXIf", exif))
    if xmp:
        chunks.append(png.xmp_chunk(xmp))
    if meta.iptc:
        chunks.append(png.text_chunk(PNG_IPTC_KEY, png_text(meta.iptc)))
    if resources:
        chunks.append(png.text_chunk(PNG_8BIM_KEY, png_text(pack_resources(resources), "8bim")))
    compressed = meta.compressed_text  # as the source PNG stored them (the XMP packet stays uncompressed: xmp_chunk)
    chunks += [png.text_chunk(k, v, k in compressed and png.compressed_ok(v, compressed[k]))
               for k, v in meta.text.items()
               if k not in (png.XMP_KEY, PNG_IPTC_KEY, PNG_8BIM_KEY) and png.keyword_ok(k)]
    png.write_png(out, pixels, alpha, chunks, level)


def _pil(pixels8: np.ndarray, alpha8: np.ndarray | None = None) -> Image.Image:
    if alpha8 is not None:
        rgb = np.repeat(pixels8, 3, axis=2) if pixels8.shape[2] == 1 else pixels8
        return Image.fromarray(np.concatenate([rgb, alpha8[:, :, None]], axis=2), "RGBA")
    if pixels8.shape[2] == 1:
        return Image.fromarray(pixels8[:, :, 0], "L")
    return Image.fromarray(np.ascontiguousarray(pixels8), "RGB")


@dataclass
class _JpegSettings:
    """How a JPEG is encoded, decided before its XMP packet is made (_jpeg_settings): Pillow's arguments, the
    segments written after its own (APP13) and the JFIF pixel aspect ratio patched in once it is encoded."""

    kwargs: dict
    extra: bytes = b""
    aspect: tuple[int, int] | None = None


def _jpeg_settings(meta: Metadata, exif: bytes, resources, quality: int, channels: int,
                   notes: list[str]) -> _JpegSettings:
    """The encoder's settings for the JPEG, with a note on each of its metadata that one segment cannot hold (EXIF,
    Photoshop resources or IPTC, comment) or JFIF cannot (an aspect ratio): all known from the metadata alone, so the
    XMP packet, made after this, can say them too."""
    kwargs: dict = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}  # 4:4:4 for archive quality
    if len(exif) + 6 <= _JPEG_SEGMENT:
        kwargs["exif"] = b"Exif\0\0" + exif
    else:
        notes.append(f"EXIF block of {len(exif)} bytes not written: larger than one JPEG segment")
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    extra = b""
    if resources:
        try:
            extra += jpeg_app13(pack_resources(resources))
        except ValueError as e:
            notes.append(f"Photoshop image resources{' and IPTC' if meta.iptc else ''} not written: {e}")
    elif meta.iptc:
        try:
            extra += jpeg_app13_iptc(meta.iptc)
        except ValueError as e:
            notes.append(f"IPTC not written: {e}")
    if meta.dpi:
        kwargs["dpi"] = tuple(round(d) for d in meta.dpi)
    aspect = None
    if not meta.dpi and meta.aspect:
        aspect = aspect_within(meta.aspect, 0xFFFF)
        if aspect is None:
            notes.append(f"pixel aspect ratio {meta.aspect[0]}:{meta.aspect[1]} not written to JFIF: more than "
                         "65535 (EXIF keeps it)")
        elif not _jfif_first(_pil(np.zeros((1, 1, channels), np.uint8)), kwargs):
            notes.append(_NO_JFIF.format(*aspect))
            aspect = None
    if "Comment" in meta.text:
        comment = meta.text["Comment"].encode("utf-8")
        if len(comment) <= _JPEG_SEGMENT:
            kwargs["comment"] = comment
        else:
            notes.append(f"comment of {len(comment)} bytes not written: larger than one JPEG segment")
    return _JpegSettings(kwargs, extra, aspect)


_NO_JFIF = "pixel aspect ratio {}:{} not written to JFIF: the encoder wrote no JFIF header (EXIF keeps it)"


def _jfif_first(image: Image.Image, kwargs: dict) -> bool:
    """Whether the encoder writes a JFIF header first when it saves `image` (of the mode of the pixels to be written)
    with these settings: asked of one pixel before the packet is made, since whether the aspect ratio can be
    written to it is a note the packet gives."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", **{k: v for k, v in kwargs.items() if k in ("quality", "subsampling", "dpi")})
    return _starts_with_jfif(buf.getvalue())


def _starts_with_jfif(head: bytes) -> bool:
    """Whether a JPEG's first bytes are SOI then an APP0 JFIF segment."""
    return head[:4] == b"\xff\xd8\xff\xe0" and head[6:11] == b"JFIF\0"


def _write_jpeg(out, pixels8, xmp: bytes | None, settings: _JpegSettings, notes: list[str]) -> None:
    """Encode the JPEG with `settings` (_jpeg_settings) and the XMP packet's segments (a note when it cannot be
    written: made before it, the packet cannot say so itself)."""
    kwargs, extra = dict(settings.kwargs), settings.extra
    if xmp:
        extra += _jpeg_xmp(xmp, notes)
    if extra:
        kwargs["extra"] = extra
    start = out.tell()
    _pil(pixels8).save(out, "JPEG", **kwargs)
    if settings.aspect is not None:
        _jfif_aspect(out, start, settings.aspect, notes)


def _jpeg_xmp(xmp: bytes, notes: list[str]) -> bytes:
    """APP1 segments for the packet: one, or the standard packet and its Extended XMP (see xmp_tree.split_for_jpeg)
    when it is larger than one segment holds."""
    try:
        standard, extension, guid = xmp_tree.split_for_jpeg(xmp, _STANDARD_XMP_LIMIT)
    except (ValueError, XmpError) as e:
        notes.append(f"XMP packet of {len(xmp)} bytes not written: larger than one JPEG segment, and "
                     f"{getattr(e, 'reason', e)}")
        return b""
    out = _segment(0xE1, xmp_tree.JPEG_XMP_HEADER + standard)
    step = _JPEG_SEGMENT - len(xmp_tree.JPEG_EXTENSION_HEADER) - 40  # GUID, full length and offset before each part
    for offset in range(0, len(extension or b""), step):
        out += _segment(0xE1, xmp_tree.JPEG_EXTENSION_HEADER + guid + struct.pack(">II", len(extension), offset)
                        + extension[offset : offset + step])
    return out


def _segment(code: int, payload: bytes) -> bytes:
    return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload


def _jfif_aspect(out, start: int, aspect: tuple[int, int], notes: list[str]) -> None:
    """Set the JFIF density of the JPEG written at `start` in `out` to the aspect ratio, units 0 (none): Pillow
    writes a density only with units 1 (dpi). Patched in place: the header has a fixed layout."""
    end = out.tell()
    out.seek(start)
    head = out.read(18)
    if _starts_with_jfif(head):
        out.seek(start + 13)  # units (1 byte), X density, Y density (2 bytes each, big-endian)
        out.write(struct.pack(">BHH", 0, *aspect))
    else:  # not met: _jpeg_settings asked the encoder first; said all the same should it write otherwise now
        notes.append(_NO_JFIF.format(*aspect))
    out.seek(end)


def webp_is_lossless(meta: Metadata | None, jpeg_quality: int) -> bool:
    """Is a WebP derivative written lossless: when its master was (meta.webp_lossless: a lossless master gives a
    lossless derivative, as a TIFF keeps its master's compression), or at jpeg_quality 100."""
    return bool(meta is not None and meta.webp_lossless) or jpeg_quality == 100


def _write_webp(out, pixels8, alpha8, meta: Metadata, xmp, exif: bytes, quality: int, lossless: bool) -> None:
    if pixels8.shape[2] == 1 and alpha8 is None:  # "gray stored as RGB" is noted by write(), before the XMP is made
        pixels8 = np.repeat(pixels8, 3, axis=2)
    # exact: the colour under fully transparent pixels is kept (libwebp would otherwise change it)
    kwargs: dict = {"exif": exif, "lossless": lossless, "exact": True,
                    **(WEBP_LOSSLESS_EFFORT if lossless else {"quality": quality})}
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    if xmp:
        kwargs["xmp"] = xmp
    _pil(pixels8, alpha8).save(out, "WEBP", **kwargs)
