"""Image I/O for oldphoto: read photos upright with their metadata, write derivatives atomically.

Public API (see docs/ARCHITECTURE.md):
    probe(path) -> ImageInfo                      header only
    read_metadata(path) -> (ImageInfo, Metadata)  header and metadata as read() gives them, no pixel decoded
    lossless_webp(path) -> bool                   a lossless (VP8L) WebP? From its chunk headers alone
    read(path, max_pixels) -> Picture             pixels (H, W, 1|3) uint8|uint16, alpha, Metadata
    write(path, pixels, alpha, fmt, meta, ...)    -> notes on what the format could not hold
    Staging(temps=None, hashed=False)             several writes that replace their paths together (commit);
                                                  hashed: each read back for its sha256 before the rename
    TempFiles(root=None, root_fd=None)            a run's temp files in progress: close() removes them, refuses more;
                                                  made, renamed and removed through the folder held open (root_fd)
    remove_leftover_temps(root, root_fd, lock_name)  remove the temp files of writes killed before their rename,
                                                  through the folder held open -> Leftover per file (folder)
    provenance_xmp(...) / read_provenance(path) / read_source_sha256(path)
    parent_ids(embedded, sidecar) -> ParentIds    a scan's identity as its derivatives' xmpMM:DerivedFrom names it
    allocate(shape, dtype, tmp_dir=None)          RAM, or a disk-backed np.memmap when large
    file_buffers(path)                            around one file's work: allocate's notes, its failure as ImageError
"""

from .atomic import Leftover, PartialFiles, Staging, TempFiles, remove_leftover_temps
from .buffers import BUFFER_NOTE, allocate, file_buffers
from .metadata import Metadata
from .provenance import ParentIds, Provenance, parent_ids, provenance_xmp, read_provenance, read_source_sha256
from .reader import FORMATS, ImageInfo, Picture, lossless_webp, probe, read, read_metadata, sniff, upright
from .writer import WRITE_FORMATS, to_uint8, write

__all__ = [
    "BUFFER_NOTE", "FORMATS", "WRITE_FORMATS", "ImageInfo", "Leftover", "Metadata", "ParentIds", "PartialFiles",
    "Picture", "Provenance", "Staging", "TempFiles", "allocate", "file_buffers", "lossless_webp", "parent_ids",
    "probe", "provenance_xmp", "read", "read_metadata", "read_provenance", "read_source_sha256",
    "remove_leftover_temps", "sniff", "to_uint8", "upright", "write",
]
