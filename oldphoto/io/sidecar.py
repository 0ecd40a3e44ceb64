"""XMP sidecar files: a scan's metadata kept beside it rather than in it (XMP specification, part 3, "External
storage of metadata"), carried to its restoration as a sidecar of its own.

Names: NAME.EXT.xmp (darktable, digiKam's default, ExifTool's %f.%e.xmp) names its file exactly; NAME.xmp (Adobe's:
Lightroom, Bridge, Camera Raw, Capture One) names it by its stem, which two files may share (walk.match_sidecars
settles whose it is). The derivative's sidecar takes the style of the scan's, after the derivative's own name
(OUT/scan.jpg.xmp for scan.tif.xmp with --format jpeg; OUT/scan.xmp for scan.xmp), with a lower-case .xmp.

Content: the source sidecar's packet, treated as the derivative's embedded packet is (provenance_xmp: the same
history event, ids and time, so a reader that takes the sidecar first, as digiKam and darktable may, sees the
derivative's history; the same parent in xmpMM:DerivedFrom and OriginalDocumentID, the scan's identity whichever
packet gave it: provenance.parent_ids; restated file layout dropped; pixel_tags.map_xmp: values and regions given in
the scan's pixels follow the orientation applied and the enlargement), written as a well-formed XML document with its
XML declaration (part 3's advice for external files), without the padding an embedded packet keeps for in-place
edits. Never merged into the embedded packet, nor that into it: each keeps what its source said (two packets merged
would hold two values for one property wherever the tools that wrote them disagreed), but for the parent.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from . import provenance, xmp_tree
from .atomic import Staging, atomic_output
from .metadata import Metadata, output_ifd0
from .pixel_tags import map_xmp
from .provenance import provenance_xmp, read_sidecar_bytes, read_source_sha256

SUFFIX = ".xmp"
IMAGE_STYLE, STEM_STYLE = "image", "stem"  # NAME.EXT.xmp, NAME.xmp
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_TIFF_ORIENTATION = "{http://ns.adobe.com/tiff/1.0/}Orientation"
# how every note about a source's sidecar begins (carried_packet's, the pipeline's "... not carried: why"): they are
# true of that sidecar, and a new one replaces them (pipeline.update_sidecar, runner, RunState.recognise)
SIDECAR_NOTE = "XMP sidecar "


def is_sidecar_name(name: str) -> bool:
    """A name ending in .xmp, in any case (Windows tools may write .XMP)."""
    return len(name) > len(SUFFIX) and name[-len(SUFFIX):].lower() == SUFFIX


def style_of(image_name: str, sidecar_name: str) -> str:
    """IMAGE_STYLE when `sidecar_name` is `image_name` + .xmp, else STEM_STYLE."""
    return IMAGE_STYLE if sidecar_name[: -len(SUFFIX)] == image_name else STEM_STYLE


def sidecar_path(output: Path, style: str) -> Path:
    """The sidecar of the derivative `output`, named in `style`."""
    return output.with_name(output.name + SUFFIX) if style == IMAGE_STYLE else output.with_suffix(SUFFIX)


@dataclass(frozen=True)
class SidecarId:
    """A source's XMP sidecar as its state record keeps it: its name beside the scan, size, mtime and sha256; for one
    that could not be read (`unreadable`), also its ctime, which a chmod that makes it readable moves (its mtime
    stays), so that later runs try it again only once it changed."""

    name: str
    size: int
    mtime_ns: int
    sha256: str | None = None  # filled when it has been read in full
    ctime_ns: int | None = None  # kept only for an unreadable one
    unreadable: bool = False

    @classmethod
    def of(cls, path: Path, with_hash: bool = False) -> "SidecarId":
        st = os.stat(path)
        return cls(path.name, st.st_size, st.st_mtime_ns, read_source_sha256(path) if with_hash else None)

    def same_unreadable(self, path: Path) -> bool:
        """Whether this unreadable sidecar's identity is `path`'s now: the same name, size, mtime and ctime (a chmod,
        a replacement or an edit moves one of them). OSError when `path` cannot be stat'ed."""
        st = os.stat(path)
        return self.unreadable and (self.name, self.size, self.mtime_ns, self.ctime_ns) == (
            path.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class SidecarLeftOut(ImageError):
    """A sidecar not carried whatever it holds, as long as it stays as it is. identity: how its state record keeps it
    (no sha256: not read), so that later runs neither try it again nor redo its scan for it until it changes."""

    def __init__(self, path: Path, reason: str, identity: SidecarId) -> None:
        super().__init__(path, reason)
        self.identity = identity


class NotASidecar(SidecarLeftOut):
    """A file named as a sidecar too large to be one (provenance.SIDECAR_LIMIT): not read. identity: its name, size
    and mtime."""


class UnreadableSidecar(SidecarLeftOut):
    """A sidecar whose read failed (permissions, an I/O error, grown too large as it was read). identity: its name,
    size, mtime and ctime as stat'ed before the read, marked unreadable (SidecarId.same_unreadable)."""


def read_sidecar(path: Path) -> tuple[bytes, SidecarId]:
    """(the sidecar's content, its identity: of the very bytes read). Raises NotASidecar when it is too large to be a
    sidecar, UnreadableSidecar when its read fails (or it grew too large as it was), ImageError(path, why) when it
    cannot be stat'ed (gone: nothing to record)."""
    try:
        st = os.stat(path)  # before the read: an edit meanwhile moves its mtime, and the next run checks
    except OSError as e:
        raise ImageError(path, f"cannot read: {e.strerror or e}") from e
    if st.st_size > provenance.SIDECAR_LIMIT:
        raise NotASidecar(path, f"larger than {provenance.SIDECAR_LIMIT >> 20} MiB: not an XMP sidecar",
                          SidecarId(path.name, st.st_size, st.st_mtime_ns))
    try:
        data = read_sidecar_bytes(path)
    except ImageError as e:
        raise UnreadableSidecar(path, e.reason, SidecarId(path.name, st.st_size, st.st_mtime_ns, None,
                                                          st.st_ctime_ns, True)) from e
    return data, SidecarId(path.name, len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest())


def carried_packet(packet: bytes, *, sidecar_name: str, meta: Metadata, width: int, height: int, fmt: str,
                   software: str, notes: list[str], **provenance) -> bytes:
    """The content of a derivative's sidecar from its source sidecar's `packet`: provenance_xmp(packet,
    **provenance) (the keywords the derivative's own packet was made with, its ids and time included), then mapped
    onto the `width` x `height` derivative written as `fmt` from the source's `meta` (its frame: the orientation
    applied and the enlargement), as the writer maps an embedded packet, its copies of EXIF values taking what the
    EXIF written holds. `notes` gets what was dropped or left, each naming the sidecar. Raises XmpError when `packet`
    cannot be parsed."""
    mine: list[str] = []
    _orientation_note(packet, meta.frame.orientation, mine)
    xmp = provenance_xmp(packet, notes=mine, software=software, **provenance)
    ifd0, _, _ = output_ifd0(meta, width=width, height=height, software=software, for_tiff=fmt == "TIFF")
    xmp = map_xmp(xmp, meta.frame, ifd0, width, height, mine)  # output_ifd0's notes are the image's, said there
    prefix = f"{SIDECAR_NOTE}{sidecar_name}: "
    notes.extend(prefix + n for n in mine if prefix + n not in notes)
    return _DECLARATION + xmp_tree.unpadded(xmp) + b"\n"


def _orientation_note(packet: bytes, applied: int, notes: list[str]) -> None:
    """A note when the sidecar gives another tiff:Orientation than the scan's own, which was applied (digiKam and
    Lightroom may record a turn made in their view there alone): dropped with the other restated layout properties,
    so the turn is not made."""
    root, _ = xmp_tree.parse(packet, "XMP sidecar")
    values = {d.attrib.get(_TIFF_ORIENTATION) or (d.findtext(_TIFF_ORIENTATION) or "").strip()
              for d in root.iter(f"{{{xmp_tree.RDF_NS}}}Description")} - {"", None}
    if values and values != {str(applied)}:
        notes.append(f"its tiff:Orientation {', '.join(sorted(values))} is not applied: the restoration is written "
                     f"upright from the scan's own orientation ({applied}); turn it by hand if the sidecar's was meant")


def write_sidecar(path: Path, data: bytes, staging: Staging | None = None) -> None:
    """Write `data` to `path` atomically (atomic.atomic_output; with `staging`, put in place on its commit, together
    with the derivative). Raises ImageError(path, why)."""
    try:
        with atomic_output(path, staging) as f:
            f.write(data)
    except OSError as e:
        raise ImageError(path, f"cannot write the XMP sidecar: {e.strerror or e}") from e
