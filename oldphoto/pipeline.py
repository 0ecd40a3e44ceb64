"""The processing engine: one photo in, its restored derivative (or defect mask) out, in bounded memory.

process_file reads the photo, walks its tile grid in horizontal bands (one row of tiles at a time),
sends the band's tiles in batches (shared with the other photos in flight: batching.TileBatcher) through
detect -> restore -> upscale on the device, and streams the
feathered merge (ops/tiling.RowMerger) into an output buffer from io.allocate (disk-backed when large).
Memory is bounded by tile size x batch size x image width, not by the image: the input stays in its
integer dtype, and no full-image float copy is ever made. Colorize runs afterwards as one global pass at
low resolution whose chroma is upsampled and recombined with the full-resolution lightness band by band.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import uuid
from contextlib import contextmanager, nullcontext
from functools import partial
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import __version__
from . import io as oio
from .batching import TileBatcher
from .config import RestoreConfig
from .errors import ImageError, NoMemory, OldPhotoError, WeightsError, XmpError
from .io import sidecar as xmp_sidecar
from .io.mask_file import MaskError, MaskId, read_mask
from .io.provenance import SourceStamp
from .passes import TiledPass, check_stop, default_threshold, grow_mask, overlay, upscale_alpha
from .report import lasting_notes
from .stages.base import (
    ColorizerStage,
    DetectorStage,
    RestorerStage,
    UpscalerStage,
    configure_cpu_threads,
    resolve_device,
    timed,
)
from .stages.blend import ScanBlend, fitted_chain
from .stages.colorize import Colorizer
from .stages.detect import Detector, TwoScaleDetector
from .stages.restore import Restorer
from .stages.upscale import Upscaler

__all__ = ["Models", "Event", "FileOutcome", "CommitGate", "resolve_device", "load_models", "new_batcher",
           "former_settings", "output_paths", "planned_format", "process_file", "recorded_settings", "update_sidecar",
           "WEIGHT_NAMES"]

# Registry names of the models a run loads for each job.
WEIGHT_NAMES = {
    "detector": "detector-v10",
    # the restorer chain, tuned together on its final output (oldphoto train joint) in two phases, from vae1-v1,
    # mapping-v1, vae2-v1 and refine-v2 (giving the -v2/-v3 chain), then from those; the four entries record each
    # other's sha256
    "vae1": "vae1-v3",  # encoder E_RX of the old-photo VAE
    "mapping": "mapping-v3",  # latent mapping T
    "vae2": "vae2-v3",  # decoder G_Y of the clean-photo VAE
    "refiner": "refine-v4",  # image-space fusion of the scan and G_Y's output
    "colorizer": "colorize-v1",
    "upscaler": "upscale-v1",  # one model with an x2 and an x4 head
    "blend": "blend-v1",  # scan-blend gate, fitted beside the chain and detector above (--scan-blend auto)
}

STAGE_KEYS = ("read", "detect", "restore", "colorize", "upscale", "write", "tiling")

_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp"}
_FORMAT_OF_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".tif": "TIFF",
                     ".tiff": "TIFF", ".webp": "WEBP", ".jp2": "JPEG2000", ".j2k": "JPEG2000"}
# formats read but not written: --format keep writes their restoration in this format, under its own suffix
_KEPT_AS = {"JPEG2000": "TIFF"}
_CFG_FORMAT = {"png": "PNG", "tiff": "TIFF", "jpeg": "JPEG"}


@dataclass
class Models:
    """The loaded stages; any may be None when the config does not need it (see stages/base.py contracts)."""

    detector: DetectorStage | None = None
    restorer: RestorerStage | None = None
    colorizer: ColorizerStage | None = None
    upscaler: UpscalerStage | None = None
    blend: ScanBlend | None = None

    def describe(self) -> dict:
        """{stage: {"name": weights name(s), "sha256": ...}} for the report and provenance.

        A stage made of several networks (the restorer) joins the names with "+", gives the sha256 of its
        parts' digests, and lists the parts. Stages without registry entries are described by class name.
        """
        out = {}
        for key in ("detector", "restorer", "colorizer", "upscaler", "blend"):
            stage = getattr(self, key)
            if stage is None:
                continue
            entries = list(getattr(stage, "entries", None) or [])
            entry = getattr(stage, "entry", None)
            if entry is not None and not entries:
                entries = [entry]
            if not entries:
                out[key] = {"name": type(stage).__name__, "sha256": None}
            elif len(entries) == 1:
                out[key] = {"name": entries[0].name, "sha256": entries[0].sha256}
            else:
                joined = hashlib.sha256("".join(e.sha256 for e in entries).encode()).hexdigest()
                out[key] = {"name": "+".join(e.name for e in entries), "sha256": joined,
                            "parts": [{"name": e.name, "sha256": e.sha256} for e in entries]}
            if key == "upscaler":
                out[key]["scale"] = int(getattr(stage, "scale", 1))
            # thresholds live in the weights' meta: when they change, outputs made with the old ones are stale
            for attr in ("threshold", "mask_threshold", "restore_threshold", "scales", "half_weight"):
                if getattr(stage, attr, None) is not None:
                    out[key][attr] = float(getattr(stage, attr))
        return out


@dataclass
class Event:
    """Progress callback payload; the library never prints."""

    kind: str  # "file_start" | "tiles" | "file_done"
    path: Path
    done: int = 0  # tiles done in this file
    total: int = 0  # tiles in this file


@dataclass
class FileOutcome:
    outputs: list[Path]
    width: int
    height: int
    megapixels: float
    seconds: dict[str, float]  # per stage: read, detect, restore, colorize, upscale, write (+ tiling overhead)
    mask_coverage: float | None  # percent of pixels marked defect (after dilation); None without a detector
    notes: list[str] = field(default_factory=list)  # e.g. "CMYK converted to RGB"
    scan_blend: tuple[float, float] | None = None  # strengths (s_lo, s_hi) of --scan-blend auto; None: not applied
    # the source's XMP sidecar as read (its identity, for the state record), also when it could not be carried (its
    # output is then not among `outputs`; one too large to be a sidecar or whose read failed: without its sha256);
    # None without one, or when it was gone
    sidecar: xmp_sidecar.SidecarId | None = None
    # the source as read for this restoration: a lossless WebP (Metadata.webp_lossless), whose WebP output is lossless
    # whatever --jpeg-quality: its state record's fingerprint says what was written (planning.Fingerprints.current),
    # should the master have been replaced between planning and the read; None: not read (a sidecar written alone)
    lossless_master: bool | None = None
    # hex sha256 of each of `outputs` written, by path: its bytes as they went into place (oio.Staging, hashed)
    output_sha256: dict[Path, str] = field(default_factory=dict)
    # the curated mask the restoration acted on (--masks), as read (its identity, for the state record); None: the
    # detector's
    mask: MaskId | None = None


# ----------------------------------------------------------------------------------------------- loading


def load_models(cfg: RestoreConfig, device: torch.device | str) -> Models:
    """Load from the weights registry only the stages `cfg` needs, on `device` (WEIGHT_NAMES).

    Raises WeightsError (one line) for missing or damaged weights, and for settings in their manifest entries
    that the stages refuse (e.g. a threshold outside (0, 1))."""
    device = torch.device(device)
    if device.type == "cpu":
        configure_cpu_threads()
    try:
        return _load_models(cfg, device)
    except ValueError as e:  # raised by the stages' own checks of the meta they are built from
        raise WeightsError(f"the models cannot be set up from their manifest entries: {e}") from e


def _load_models(cfg: RestoreConfig, device: torch.device) -> Models:
    detector = Detector.from_registry(WEIGHT_NAMES["detector"], device)
    models = Models(detector=TwoScaleDetector(detector) if cfg.scales == 2 else detector)
    if not cfg.only_mask:
        models.restorer = Restorer.from_registry(WEIGHT_NAMES["vae1"], WEIGHT_NAMES["mapping"], WEIGHT_NAMES["vae2"],
                                                 device, refiner=WEIGHT_NAMES["refiner"])
        if cfg.scan_blend_mode == "auto":
            models.blend = ScanBlend.from_registry(WEIGHT_NAMES["blend"],
                                                   fitted_chain(models.restorer, models.detector))
        if cfg.colorize:
            models.colorizer = Colorizer.from_registry(WEIGHT_NAMES["colorizer"], device)
        if cfg.upscale > 1:
            models.upscaler = Upscaler.from_registry(WEIGHT_NAMES["upscaler"], cfg.upscale, device)
    return models


def new_batcher(cfg: RestoreConfig, models: Models, device: torch.device | None = None) -> TileBatcher:
    """The device batcher that photos processed together with `cfg` and `models` share (process_file); `device`
    is cfg.device resolved (resolved here when None)."""
    return TileBatcher(models, resolve_device(cfg.device) if device is None else device, cfg.tile.batch_size)


# ----------------------------------------------------------------------------------------------- naming


def output_format(src_format: str, cfg: RestoreConfig) -> str:
    """The file format written: the input's with --format keep, else the one asked for."""
    if cfg.format != "keep":
        return _CFG_FORMAT[cfg.format]
    fmt = _FORMAT_OF_SUFFIX.get(src_format.lower()) if src_format.startswith(".") else src_format.upper()
    fmt = _KEPT_AS.get(fmt, fmt)
    if fmt not in _SUFFIX:
        raise ValueError(f"unknown image format {src_format!r}; expected one of {sorted(_SUFFIX)} or their suffixes")
    return fmt


def planned_format(src_suffix: str, cfg: RestoreConfig) -> str | None:
    """The format the restored photo of a source named *src_suffix will be written in (process_file follows the
    name), None for a suffix that is not an image's."""
    if cfg.format != "keep":
        return _CFG_FORMAT[cfg.format]
    fmt = _FORMAT_OF_SUFFIX.get(src_suffix.lower())
    return _KEPT_AS.get(fmt, fmt)


def borrows_suffix(src_suffix: str) -> bool:
    """Whether a source named *src_suffix is in a format oldphoto does not write (a.jp2): its restored photo never
    has its own name (a.tif with keep or tiff), and a master of that name claims it first (planning)."""
    return _FORMAT_OF_SUFFIX.get(src_suffix.lower()) in _KEPT_AS


def _kept_suffix(src_suffix: str) -> str:
    """The suffix --format keep gives the restored photo of a source named *src_suffix: the one written (SCAN.PNG
    stays SCAN.PNG), but a format oldphoto does not write gets that of the format written instead (a.jp2 -> a.tif)."""
    fmt = _FORMAT_OF_SUFFIX.get(src_suffix.lower())
    return _SUFFIX[_KEPT_AS[fmt]] if fmt in _KEPT_AS else src_suffix


def recorded_settings(cfg: RestoreConfig, models: Models, written_format: str | None = None,
                      src_suffix: str | None = None, lossless_master: bool = False) -> dict:
    """The output settings recorded for a photo whose restoration is written as `written_format` (None: not known):
    in its outputs' XMP history and, fingerprinted, in its state record (planning.Fingerprints), so that outputs
    found after the state file was lost are recognised (RunState.recognise). The models' own threshold, given or
    not, counts as the default. src_suffix: the source's suffix as written, when known: a --format that writes the
    very file --format keep would (same path, same format) is recorded as keep, so switching between them redoes
    nothing. lossless_master: the source is a lossless WebP (Metadata.webp_lossless), whose WebP output is lossless
    whatever --jpeg-quality (config.output_settings)."""
    settings = cfg.output_settings(default_threshold(cfg, models), written_format, lossless_master)
    if (src_suffix is not None and cfg.format != "keep"
            and _kept_suffix(src_suffix) == _SUFFIX[_CFG_FORMAT[cfg.format]]):
        # keep writes the suffix as written; the other formats their own (".png", ".tif", ".jpg"): only an exact
        # match names the same file (SCAN.PNG stays SCAN.PNG with keep, png writes SCAN.png; a.jp2 is a.tif with
        # either keep or tiff)
        settings["format"] = "keep"
    return settings


def former_settings(settings: dict, src_suffix: str) -> list[dict]:
    """Other recordings of the same outputs: settings recorded_settings gives as keep for a source whose suffix is
    a --format's own were recorded by that format's name before (scan.jpg with --format jpeg), so records and XMP
    made then still count instead of redoing every such photo after an upgrade."""
    if settings.get("format") != "keep" or settings.get("only_mask"):
        return []
    return [{**settings, "format": name} for name, fmt in _CFG_FORMAT.items() if _SUFFIX[fmt] == src_suffix]


def output_paths(out_base: Path, src_format: str, cfg: RestoreConfig, sidecar: str | None = None) -> list[Path]:
    """Paths process_file writes for out_base (= out_dir / rel path without suffix).

    src_format: the input's suffix (".JPG", kept as written with --format keep) or its format name
    ("JPEG" -> ".jpg"). --only-mask: [NAME.mask.png, NAME.overlay.jpg]; --save-mask: [restored, NAME.mask.png].
    sidecar: the naming style of the source's XMP sidecar (io.sidecar), None without one: the restored photo's
    sidecar comes last, named after it in that style (masks and overlays get none).
    """
    base = str(out_base)
    if cfg.only_mask:
        return [Path(base + ".mask.png"), Path(base + ".overlay.jpg")]
    fmt = output_format(src_format, cfg)
    keep_suffix = cfg.format == "keep" and src_format.startswith(".")
    restored = Path(base + (_kept_suffix(src_format) if keep_suffix else _SUFFIX[fmt]))
    paths = [restored, Path(base + ".mask.png")] if cfg.save_mask else [restored]
    return paths + ([xmp_sidecar.sidecar_path(restored, sidecar)] if sidecar else [])


def sidecar_outputs(restored: Path) -> list[Path]:
    """The names a sidecar of the restored photo `restored` may have, in either style."""
    return [xmp_sidecar.sidecar_path(restored, style) for style in (xmp_sidecar.IMAGE_STYLE, xmp_sidecar.STEM_STYLE)]


# ----------------------------------------------------------------------------------------------- processing


def process_file(src: Path, out_base: Path, cfg: RestoreConfig, models: Models,
                 on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, source_sha256: str | None = None,
                 batcher: TileBatcher | None = None, commit_gate: CommitGate | None = None,
                 sidecar: Path | None = None, stale: Sequence[Path] = (),
                 source_stamp: SourceStamp | None = None, mask: Path | None = None) -> FileOutcome:
    """Restore one photo (or write its defect mask with cfg.only_mask) and write the outputs atomically.

    source_sha256: the source's digest when the caller has already read it in full (else it is computed here).
    source_stamp: the source's stat taken before source_sha256 was read (None: taken here, before the hash and the
    read). The outputs go in place only if the source still stats so, or else still has that sha256 (a touch, a
    chmod, the same bytes copied over it); otherwise the photo fails with SOURCE_CHANGED, nothing written: its pixels
    and metadata may not be the bytes its provenance names (a scan still being written, replaced or edited meanwhile).
    batcher: a TileBatcher over the same `models` shared by the photos processed concurrently (see
    new_batcher), so their tiles share device batches; None gives this photo its own.
    commit_gate: the outputs are put in place only through it; once the caller has closed it (it is letting go
    of the output folder), this photo's outputs are discarded instead and KeyboardInterrupt is raised. Its guard
    is run before each output is written and as they go in; what it raises propagates, nothing written.
    sidecar: the source's XMP sidecar (walk.match_sidecars), carried beside the restored photo (io.sidecar; not with
    cfg.only_mask); one that cannot be read or parsed is left out with a note, the photo restored all the same.
    stale: files of earlier runs to remove as the outputs go in (sidecars of the restored photo's name that the source
    no longer has: planning); so is the sidecar's output path when the sidecar is left out.
    mask: the photo's curated mask file (--masks: planning.curated_mask; not with cfg.only_mask), read once (its
    bytes hashed and decoded: io.mask_file), grown by cfg.dilate_px and used wherever the detector's mask would be
    (the restorer's tiles, --scope defects, --save-mask, the scan blend, the even tone's intact pixels, the gray
    check); the detector does not run. One that cannot be used (not the scan's size, not gray) fails the photo, its
    reason naming the mask file.

    Raises ImageError for bad input, a source that changed as it was read, an unwritable output or no temp folder
    that can map its large pixel buffers, KeyboardInterrupt when should_stop() turns true (checked between bands); in
    both cases no output file is left behind. Stage errors propagate.
    """
    src = Path(src)
    with oio.file_buffers(src) as placed:  # a temp folder that cannot map files: noted, or the photo's ImageError
        outcome = _process_file(src, out_base, cfg, models, on_event, should_stop, source_sha256, batcher,
                                commit_gate, None if cfg.only_mask else sidecar, stale, source_stamp, mask)
    outcome.notes.extend(n for n in placed if n not in outcome.notes)  # read's own are among them already
    return outcome


def _process_file(src: Path, out_base: Path, cfg: RestoreConfig, models: Models,
                  on_event: Callable[[Event], None] | None, should_stop: Callable[[], bool] | None,
                  source_sha256: str | None, batcher: TileBatcher | None,
                  commit_gate: CommitGate | None, sidecar: Path | None, stale: Sequence[Path],
                  stamp: SourceStamp | None, mask: Path | None = None) -> FileOutcome:
    src, out_base = Path(src), Path(out_base)
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    device = resolve_device(cfg.device)
    cpu = torch.device("cpu")
    seconds = {k: 0.0 for k in STAGE_KEYS}
    batcher = _checked_batcher(cfg, models, device, batcher)
    with timed(seconds, "read", cpu):
        stamp, source_sha256, pic = _read_source(src, cfg, stamp, source_sha256)
    pixels = _check_pixels(src, pic.pixels)
    height, width, channels = pixels.shape
    notes = _source_notes(pic)
    suffix, outputs = _named_outputs(src, out_base, cfg, pic.format, sidecar, notes)
    carried, known = _read_sidecar(sidecar, notes) if sidecar is not None else (None, None)
    # the scan, as every output and the restoration's sidecar name it: one parent, said alike in each packet
    parent = oio.parent_ids(pic.meta.xmp, carried[0] if carried is not None else None)
    job = TiledPass(src=src, cfg=cfg, models=models, device=device, seconds=seconds, notes=notes,
                    progress=lambda kind, done, total: emit(Event(kind, src, done, total)), stop=stop,
                    batcher=batcher)

    curated: MaskId | None = None
    if cfg.only_mask:
        mask, coverage = job.detect_only(pixels)
        check_stop(stop)
        with timed(seconds, "write", cpu):
            shown = overlay(pixels, mask)
            _, digests = _write_all(outputs, [(mask[..., None], None, "PNG", _mask_meta(pic.meta)),
                                              (shown, None, "JPEG", pic.meta)], src, cfg, source_sha256, models,
                                    notes, commit_gate, coverage, stale=stale, parent=parent, stamp=stamp,
                                    same_read=_reads_as(src, cfg.max_pixels, pic))
    else:
        with timed(seconds, "read", cpu):
            grown, curated = _curated_mask(src, mask, cfg, (width, height), stop)
        items, coverage = _restored_items(job, pixels, pic, cfg, suffix, notes, stop, grown)
        del grown  # done with here: only a --save-mask item still holds it
        with timed(seconds, "write", cpu):
            written, digests = _write_all(outputs, items, src, cfg, source_sha256, models, notes, commit_gate,
                                          coverage, carried, stale, parent, stamp, _reads_as(src, cfg.max_pixels, pic),
                                          curated)
        outputs = outputs[:len(items)] + ([outputs[-1]] if written else [])

    emit(Event("file_done", src, job.done, job.total))
    return FileOutcome(outputs=outputs, width=width, height=height, megapixels=width * height / 1e6,
                       seconds=seconds, mask_coverage=coverage, notes=notes, scan_blend=job.blend_strengths,
                       sidecar=known, lossless_master=bool(pic.meta.webp_lossless), output_sha256=digests,
                       mask=curated)


def _curated_mask(src: Path, mask: Path | None, cfg: RestoreConfig, size: tuple[int, int],
                  stop: Callable[[], bool]) -> tuple[np.ndarray | None, MaskId | None]:
    """(the curated mask at `mask` as the restoration acts on it: (H, W) uint8, 255 = defect, grown by cfg.dilate_px;
    its identity as read), (None, None) without one. ImageError naming `src`, its reason the mask file's (MaskError)."""
    if mask is None:
        return None, None
    name = mask.relative_to(cfg.masks).as_posix() if cfg.masks is not None else mask.name
    try:
        defects, identity = read_mask(mask, name, size, cfg.max_pixels)
    except MaskError as e:
        raise ImageError(src, e.reason) from e
    return grow_mask(defects, cfg.dilate_px, stop), identity


def _checked_batcher(cfg: RestoreConfig, models: Models, device: torch.device,
                     batcher: TileBatcher | None) -> TileBatcher:
    """`batcher` (a new one when None), once the models suit cfg; refused when made for other models or device."""
    _check_models(cfg, models)
    if batcher is None:
        batcher = new_batcher(cfg, models, device)
    elif batcher.models is not models or batcher.device != device:
        raise OldPhotoError("the batcher was made for other models or another device")
    return batcher


def _read_source(src: Path, cfg: RestoreConfig, stamp: SourceStamp | None,
                 source_sha256: str | None) -> tuple[SourceStamp, str, oio.Picture]:
    """(the source's stat, its sha256, its decoded picture), the stat and sha256 taken first where not given."""
    if stamp is None:
        stamp = _stamp(src)
    if source_sha256 is None:  # before the decode, as the runner does: a change after it then fails the check
        source_sha256 = oio.read_source_sha256(src)
    return stamp, source_sha256, oio.read(src, cfg.max_pixels)


def _named_outputs(src: Path, out_base: Path, cfg: RestoreConfig, content: str, sidecar: Path | None,
                   notes: list[str]) -> tuple[str, list[Path]]:
    """(the suffix written, the output paths) of `src`, whose decoded `content` format its name may belie; refuses
    a path that is the source."""
    # The name decides (what the run planned, checked for clashes and recorded); a file whose content is another
    # format than its name says is written in the format of its name.
    named = _FORMAT_OF_SUFFIX.get(src.suffix.lower())
    suffix = src.suffix if named else content
    if named and named != content and not cfg.only_mask and cfg.format == "keep":
        notes.append(f"content is {content} but the name says {src.suffix}: written as "
                     f"{_KEPT_AS.get(named, named)}")
    style = xmp_sidecar.style_of(src.name, sidecar.name) if sidecar is not None else None
    outputs = output_paths(out_base, suffix, cfg, style)
    _refuse_overwriting_source(src, outputs)
    return suffix, outputs


def _restored_items(job: TiledPass, pixels: np.ndarray, pic: oio.Picture, cfg: RestoreConfig, suffix: str,
                    notes: list[str], stop: Callable[[], bool], curated: np.ndarray | None = None,
                    ) -> tuple[list, float | None]:
    """(the (pixels, alpha, fmt, meta) _write_all writes: the restored, maybe colorized photo, then with --save-mask
    its mask; the mask's coverage) of `pixels`; curated: a curator's mask, grown (TiledPass.restore)."""
    # the colorize flag only shapes the output of a 1-channel photo; an RGB one is judged once restored
    out, mask, coverage = job.restore(pixels, cfg.colorize and pixels.shape[2] == 1, curated)
    colorize = _wants_colour(cfg, pixels.shape[2], job.near_gray, notes)
    if job.near_gray:
        notes.append("RGB photo with (nearly) equal channels restored as grayscale"
                     + (", then colorized" if colorize else ""))
    if colorize:
        job.colorize(out)
    check_stop(stop)
    scale = cfg.upscale
    alpha = upscale_alpha(pic.alpha, scale) if pic.alpha is not None else None
    meta = _scaled_meta(pic.meta, scale)
    items = [(out, alpha, output_format(suffix, cfg), meta)]
    if cfg.save_mask:
        items.append((mask[..., None], None, "PNG", _mask_meta(pic.meta)))
    return items, coverage


def update_sidecar(src: Path, out_base: Path, cfg: RestoreConfig, made: oio.Provenance, size: tuple[int, int],
                   commit_gate: CommitGate | None = None, sidecar: Path | None = None,
                   stale: Sequence[Path] = (), source_stamp: SourceStamp | None = None) -> FileOutcome:
    """Write (or remove) the XMP sidecar of a restoration that stays as it is: only the source's sidecar changed
    (planning: the scan, settings and models are those the restoration was made from, its outputs as recorded). The
    sidecar is the one a full run would write beside it (io.sidecar.carried_packet, mapped through the scan's frame
    read from its metadata alone, no pixel decoded), describing the same derivative: the restoration's own history
    event, ids and time (`made`: its provenance), with this sidecar's sha256 and xmp:MetadataDate now. `stale`: files
    of earlier runs removed as it goes in; so is its path when `sidecar` is None or cannot be carried. size: the scan's
    upright (width, height) as recorded. Its oldphoto:Notes: the restoration's (made.notes), those on the sidecar
    being this one's; its xmpMM:DerivedFrom and OriginalDocumentID: the parent the restoration names (made.parent),
    which the new sidecar might not give as the one it was made with did. Atomic and through `commit_gate` as
    process_file's outputs; outputs: the sidecar written, if one was (output_sha256: its sha256). source_stamp: the
    scan's stat as planning took it (None: taken here, before its metadata is read): it goes in only while the scan
    still stats so, or still has made.source_sha256 (as process_file). Raises ImageError (the scan's header
    unreadable, its size changed since, or it changed as it was read: SOURCE_CHANGED)."""
    src, out_base = Path(src), Path(out_base)
    cpu = torch.device("cpu")
    seconds = {k: 0.0 for k in STAGE_KEYS}
    notes: list[str] = []
    with timed(seconds, "read", cpu):
        stamp = source_stamp if source_stamp is not None else _stamp(src)
        info, meta = oio.read_metadata(src, cfg.max_pixels)
        if (info.width, info.height) != tuple(size):  # the scan was replaced since planning: its next run redoes it
            raise ImageError(src, f"its size changed while the run was planned ({size[0]} x {size[1]} -> "
                                  f"{info.width} x {info.height}); rerun to restore it again")
        suffix = src.suffix if _FORMAT_OF_SUFFIX.get(src.suffix.lower()) else info.format  # as process_file
        style = xmp_sidecar.style_of(src.name, sidecar.name) if sidecar is not None else None
        target = output_paths(out_base, suffix, cfg, style)[-1] if style else None
        carried, known = _read_sidecar(sidecar, notes) if sidecar is not None else (None, None)
    packet = None
    if carried is not None:
        (data, read), scale = carried, cfg.upscale
        when = datetime.fromisoformat(made.when) if made.when else None

        def sidecar_packet(said: list[str], kept: tuple[str, ...]) -> bytes:
            return xmp_sidecar.carried_packet(
                data, sidecar_name=read.name, meta=_scaled_meta(meta, scale), width=info.width * scale,
                height=info.height * scale, fmt=output_format(suffix, cfg), notes=said, source_name=src.name,
                source_sha256=made.source_sha256, software=made.software, action="derived",
                parameters=made.parameters["settings"], models=made.parameters["models"],
                mask_coverage=made.mask_coverage, document_id=made.document_id, instance_id=made.instance_id,
                when=when, metadata_date=datetime.now(timezone.utc), sidecar_sha256=read.sha256, kept_notes=kept,
                parent=made.parent, mask_file=made.mask_file, mask_sha256=made.mask_sha256)

        try:
            sidecar_packet(notes, ())  # what of this sidecar is dropped or not applied: notes on it, said in it
            # the restoration's notes, less those on the sidecar it was made with (its XMP keeps them as they were,
            # the restoration is not rewritten): this one's instead (RunState.recognise reads them here)
            packet = sidecar_packet([], tuple(n for n in made.notes if not n.startswith(xmp_sidecar.SIDECAR_NOTE))
                                    + lasting_notes(notes))
        except XmpError as e:
            notes.append(f"XMP sidecar {read.name} not carried: {e.reason}")
    if target is not None and packet is None:
        stale = [*stale, target]  # an earlier one there no longer goes with the photo
    with timed(seconds, "write", cpu), _staged(commit_gate) as staging:
        if packet is not None:
            _make_folder(target, staging, commit_gate)
            xmp_sidecar.write_sidecar(target, packet, staging)
        _check_unchanged(src, stamp, made.source_sha256)  # its metadata, read above, is of the bytes the packet names
        _put_in_place(staging, commit_gate, src, stale, target)
    width, height = size
    return FileOutcome(outputs=[target] if packet is not None else [], width=width, height=height,
                       megapixels=width * height / 1e6, seconds=seconds, mask_coverage=made.mask_coverage,
                       notes=notes, sidecar=known, output_sha256=dict(staging.sha256))


class CommitGate:
    """Lets outputs into place only while it is open. close() waits for a commit in progress, then turns every later
    one away (KeyboardInterrupt, as for a stop request): a run that stops while files are still in flight closes it
    before it records its state and releases the output folder, so nothing lands there unrecorded afterwards. It
    also keeps the temp files of the outputs being written (staging()), which close() removes: the threads writing
    them need not return (one may be blocked for good on a hung network share) for the folder to be left clean.

    guard: called before each of a photo's outputs is written (check) and again as they go in (entry); it raises when
    they must not (e.g. lock.OutputLock.check_folder: the output folder was deleted or replaced). Its error closes the
    gate and propagates, so that photo stops with it and every later one is turned away; a photo whose writing failed
    asks it again (process_file), so a failure the folder's loss caused ends the same way.
    temps: where the outputs' folders and temp files are made, renamed and removed: io.TempFiles on the folder the run
    holds (through its descriptor, so they follow it if it is moved and never go into another made under its name);
    None: a TempFiles by name."""

    def __init__(self, guard: Callable[[], None] | None = None, temps: oio.TempFiles | None = None) -> None:
        self._lock = threading.Lock()
        self._open = True
        self._guard = guard
        self._passed: set[str] = set()  # sources whose outputs were put in place
        self._temps = temps if temps is not None else oio.TempFiles()

    def staging(self) -> oio.Staging:
        """A staging for the outputs of one source, whose temp files close() removes; each read back for its sha256
        (hashed)."""
        return oio.Staging(self._temps, hashed=True)

    def check(self) -> None:
        """Before anything of a photo's outputs is written (folders included): raises as entry() would now."""
        with self._lock:
            self._let_in()

    @contextmanager
    def entry(self, src: str | Path) -> Iterator[None]:
        with self._lock:
            self._let_in()
            yield
            self._passed.add(str(src))

    def _let_in(self) -> None:
        if not self._open:
            raise KeyboardInterrupt("the run has let go of the output folder")
        if self._guard is not None:
            try:
                self._guard()
            except Exception:
                self._open = False  # and re-raised: the run stops on it
                raise

    def close(self, timeout: float | None = None) -> list[tuple[Path, OSError]]:
        """Turn every later commit and temp file away and remove the temp files still there. Waits up to `timeout`
        seconds (None: as long as it takes) for a commit in progress: one blocked in I/O for longer is let be (its
        renames may still land, unrecorded, as after a crash: the next run checks those outputs by their XMP).
        Returns the temp files that could not be removed, with why. Closing it again removes what is left (a signal
        may have cut the first call short)."""
        if self._open:
            locked = self._lock.acquire(timeout=-1 if timeout is None else timeout)
            self._open = False  # also without the lock: entry() reads it under the lock, after the commit in progress
            if locked:
                self._lock.release()
        return self._temps.close(timeout)

    def passed(self, src: str | Path) -> bool:
        """Whether `src`'s outputs went through (so they are in place even if its call has not returned yet)."""
        with self._lock:
            return str(src) in self._passed


# ----------------------------------------------------------------------------------------------- helpers


def _check_models(cfg: RestoreConfig, models: Models) -> None:
    """Refuse a config the loaded models cannot serve (a programming error, not a bad file)."""
    if cfg.only_mask and models.detector is None:
        raise OldPhotoError("--only-mask needs a detector model")
    if not cfg.only_mask and cfg.upscale > 1:
        scale = getattr(models.upscaler, "scale", None)
        if scale != cfg.upscale:
            raise OldPhotoError(f"upscale x{cfg.upscale} needs an upscaler of that factor, got {scale}")
    if cfg.colorize and not cfg.only_mask and models.colorizer is None:
        raise OldPhotoError("--colorize needs a colorizer model")
    if cfg.scope == "defects" and (models.detector is None or models.restorer is None):
        raise OldPhotoError("--scope defects needs a detector and a restorer model")
    if cfg.save_mask and models.detector is None:
        raise OldPhotoError("--save-mask needs a detector model")


def _refuse_overwriting_source(src: Path, outputs: list[Path]) -> None:
    """The scan is the master: an output path that is the input file itself is refused before any work."""
    for out in outputs:
        if out.resolve() == src.resolve() or (out.exists() and out.samefile(src)):
            raise ImageError(src, f"output {out} would overwrite the input; choose another output folder")


def _check_pixels(src: Path, pixels: np.ndarray) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise ImageError(src, f"expected pixels (H, W, 1 or 3), got shape {shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(src, f"expected 8- or 16-bit pixels, got {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageError(src, f"empty image of shape {pixels.shape}")
    return pixels


def _source_notes(pic) -> list[str]:
    """Conversions io made on read (e.g. "CMYK converted to RGB"), for the report."""
    return [str(n) for n in (getattr(pic, "notes", None) or [])]


def _wants_colour(cfg: RestoreConfig, channels: int, near_gray: bool, notes: list[str]) -> bool:
    """Colorize only grayscale photos: 1-channel, or RGB whose channels are (nearly) equal (near_gray)."""
    if not cfg.colorize:
        return False
    if channels == 1 or near_gray:
        return True
    notes.append("colour photo: colorize skipped")
    return False


def _scaled_meta(meta, scale: int):
    """Metadata with the resolution multiplied by the upscale factor (same print size at more pixels), and its
    frame enlarged (the EXIF values given in the source's pixels follow: io.pixel_tags). A pixel aspect ratio without
    unit (meta.aspect, ResolutionUnit 1) holds as it is: both axes grow alike."""
    if scale == 1 or meta is None:
        return meta
    changes = {"frame": dataclasses.replace(meta.frame, scale=meta.frame.scale * scale)}
    if getattr(meta, "dpi", None):
        changes["dpi"] = (meta.dpi[0] * scale, meta.dpi[1] * scale)
    tags = getattr(meta, "tiff_tags", None)
    if tags and any(k in tags for k in (282, 283)) and tags.get(296) != 1:
        tags = dict(tags)
        for k in (282, 283):
            if k in tags:
                tags[k] = _scale_rational(tags[k], scale)
        changes["tiff_tags"] = tags
    return dataclasses.replace(meta, **changes)


def _scale_rational(value, scale: int):
    if isinstance(value, tuple) and len(value) == 2:
        return (value[0] * scale, value[1])
    return value * scale


def _mask_meta(meta):
    """A mask is not a photo: keep only its resolution (or pixel aspect ratio), so it overlays the scan at the
    same size and shape."""
    return oio.Metadata(dpi=getattr(meta, "dpi", None), aspect=getattr(meta, "aspect", None))


SOURCE_CHANGED = "changed while it was being read (still being written?); it will be retried next run"


def _stamp(src: Path) -> SourceStamp:
    """`src`'s stamp now; ImageError when it cannot be stat'ed."""
    try:
        return SourceStamp.of(src)
    except OSError as e:
        raise ImageError(src, f"cannot open: {e.strerror or e}") from e


def _check_unchanged(src: Path, stamp: SourceStamp, sha256: str, same_read: Callable[[], bool] | None = None) -> None:
    """Let `src`'s outputs go in only while it holds the bytes whose sha256 is `sha256`, stat'ed as `stamp` before
    they were read: when it stats the same (no second read); else (rare: something touched it during its restoration)
    when it has the same size and, read again, that sha256 (a touch, a chmod, a hard link made by a backup tool, the
    same bytes copied over it: a nightly job that does so must not fail it every night), and same_read() (when given)
    says that decoding it again gives what was decoded: the same bytes at the end do not show that the decoder saw
    them throughout (a writer that cut the file short and wrote it again, a lenient decoder taking the gap). ImageError
    (src, SOURCE_CHANGED) otherwise; ImageError too when it is gone."""
    try:
        now = SourceStamp.of(src)
    except OSError as e:
        raise ImageError(src, f"removed or renamed while it was being read ({e.strerror or e}); nothing written") from e
    if now == stamp:
        return
    try:
        same = now.size == stamp.size and oio.read_source_sha256(src) == sha256
    except ImageError:  # gone or unreadable since the stat: not the bytes read either
        same = False
    if not (same and (same_read is None or same_read())):
        raise ImageError(src, SOURCE_CHANGED)


def _reads_as(src: Path, max_pixels: int, pic: oio.Picture) -> Callable[[], bool]:
    """A check that `src`, decoded again, gives `pic`'s pixels, alpha and metadata (for _check_unchanged)."""
    def same_read() -> bool:
        try:
            again = oio.read(src, max_pixels)
        except NoMemory:
            raise  # its own reason: the file fails for want of memory, not as changed
        except ImageError:
            return False
        if (again.alpha is None) != (pic.alpha is None) or again.meta != pic.meta:
            return False
        alpha_same = pic.alpha is None or np.array_equal(again.alpha, pic.alpha)
        return alpha_same and np.array_equal(again.pixels, pic.pixels)
    return same_read


def _read_sidecar(path: Path, notes: list[str]) -> tuple[tuple[bytes, xmp_sidecar.SidecarId] | None,
                                                          xmp_sidecar.SidecarId | None]:
    """((content, identity) of the source's XMP sidecar, or None with a note when it cannot be read; the identity its
    state record keeps). A file too large to be a sidecar, or one that cannot be read, is recorded as it is (not
    tried again until it changes: a chmod moves its ctime); one gone since the walk is not."""
    try:
        carried = xmp_sidecar.read_sidecar(path)
    except ImageError as e:
        notes.append(f"XMP sidecar {path.name} not carried: {e.reason}")
        return None, e.identity if isinstance(e, xmp_sidecar.SidecarLeftOut) else None
    return carried, carried[1]


def _write_all(outputs: list[Path], items, src: Path, cfg: RestoreConfig, source_sha256: str, models: Models,
               notes: list[str], gate: CommitGate | None = None, coverage: float | None = None,
               sidecar: tuple[bytes, xmp_sidecar.SidecarId] | None = None, stale: Sequence[Path] = (),
               parent: oio.ParentIds | None = None, stamp: SourceStamp | None = None,
               same_read: Callable[[], bool] | None = None, curated: MaskId | None = None,
               ) -> tuple[bool, dict[Path, str]]:
    """Write each (pixels, alpha, fmt, meta) to its path, as a set: all complete under temp names first, then
    renamed into place together, so a failure on any leaves every path as it was (oio.Staging).

    Each output carries an XMP history entry: settings (recorded_settings), models (names + weight sha256), source
    name + sha256, the mask's coverage and the file's lasting notes known as it is written (report.lasting_notes; so
    a run that recognises the outputs after a lost state file can report them, as a record would).

    sidecar: the source's XMP sidecar (content, identity), written to the last of `outputs` (then one more than
    `items`: the sidecar's path), beside the first item (the restored photo), with that photo's history entry
    (io.sidecar), and put in place with the rest; one that cannot be parsed is left out with a note. `stale` files,
    and the sidecar's path when no sidecar is written there (none given, or left out), are removed as the outputs go
    in. Returns (whether the sidecar was written, the sha256 of each file put in place by its path: see _staged).

    parent: the source's identity (oio.parent_ids), which every output's xmpMM:DerivedFrom and OriginalDocumentID
    state, the sidecar's too, whichever packet each was made from; None: each from its own source packet.

    stamp: the source's stat before source_sha256 was read: checked once the outputs are staged, before they go in
    (_check_unchanged); None: not checked. same_read: how _check_unchanged tells, when the stat moved, that the
    decoder saw the bytes whole (_reads_as).

    curated: the curated mask the restoration acted on (--masks), named with its sha256 in every output's packet.
    """
    software = f"oldphoto {__version__}"
    provenance, shared = _provenance_args(items, src, cfg, source_sha256, models, coverage, parent, software)
    if curated is not None:
        provenance.update(mask_file=curated.name, mask_sha256=curated.sha256)
    sidecar_packet = packet = None
    if sidecar is not None:
        sidecar_packet = _sidecar_packer(sidecar, items[0], provenance, shared)
        packet = _first_sidecar_packet(sidecar_packet, sidecar[1], provenance, notes)
    if packet is None and len(outputs) > len(items):  # a sidecar's path, none written there: unreadable or left out
        stale = [*stale, outputs[-1]]  # an earlier one there no longer goes with the photo
    kept: list[str] = []  # the lasting notes the restoration's packet says; its sidecar says the same
    with _staged(gate) as staging:
        for i, (path, (pixels, alpha, fmt, meta)) in enumerate(zip(outputs, items)):
            _make_folder(path, staging, gate)
            xmp_of = partial(_output_packet, xmp=meta.xmp, first=i == 0, notes=notes, kept=kept,
                             provenance=provenance, shared=shared)
            try:
                result = oio.write(path, pixels, alpha, fmt, meta, jpeg_quality=cfg.jpeg_quality,
                                   software=software, provenance_xmp=xmp_of, staging=staging)
            except ImageError as e:  # the run names the source: say which of its outputs failed
                raise ImageError(path, f"{path}: {e.reason}") from e
            notes.extend(str(n) for n in result or [] if str(n) not in notes)
        if packet is not None:
            if gate is not None:
                gate.check()
            if kept:  # the restoration's notes, as its packet says them (known once it was written)
                packet = sidecar_packet([], kept_notes=tuple(kept))
            xmp_sidecar.write_sidecar(outputs[-1], packet, staging)
        if stamp is not None:  # last, once the outputs are written: it covers the whole read, decode and write
            _check_unchanged(src, stamp, source_sha256, same_read)
        _put_in_place(staging, gate, src, stale, outputs[0])
    return packet is not None, dict(staging.sha256)


def _provenance_args(items, src: Path, cfg: RestoreConfig, source_sha256: str, models: Models,
                     coverage: float | None, parent: oio.ParentIds | None, software: str) -> tuple[dict, dict]:
    """(the oio.provenance_xmp arguments of every output's packet, those the restored photo (the first of `items`)
    shares with its sidecar: new ids and the time)."""
    settings = recorded_settings(cfg, models, items[0][2], src.suffix,
                                 bool(getattr(items[0][3], "webp_lossless", None)))
    described = models.describe()
    # the restored photo and its sidecar describe one file: one history entry, with the same ids and time
    shared = {"document_id": f"xmp.did:{uuid.uuid4()}", "instance_id": f"xmp.iid:{uuid.uuid4()}",
              "when": datetime.now(timezone.utc)}
    provenance = {"source_name": src.name, "source_sha256": source_sha256, "software": software,
                  "action": "derived", "parameters": settings, "models": described, "mask_coverage": coverage,
                  "parent": parent}
    return provenance, shared


def _sidecar_packer(sidecar: tuple[bytes, xmp_sidecar.SidecarId], photo_item, provenance: dict,
                    shared: dict) -> Callable[..., bytes]:
    """How the source's XMP sidecar's packet is made beside the restored photo (`photo_item`), with its history
    entry: provenance and shared as they are when it is called."""
    (data, read), (photo, _, photo_fmt, photo_meta) = sidecar, photo_item

    def sidecar_packet(said: list[str], **more) -> bytes:
        return xmp_sidecar.carried_packet(
            data, sidecar_name=read.name, meta=photo_meta, width=photo.shape[1], height=photo.shape[0],
            fmt=photo_fmt, notes=said, **provenance, **shared, **more)

    return sidecar_packet


def _first_sidecar_packet(sidecar_packet: Callable[..., bytes], read: xmp_sidecar.SidecarId, provenance: dict,
                          notes: list[str]) -> bytes | None:
    """The sidecar's packet, its sha256 then added to `provenance`; None, with a note, when it cannot be parsed."""
    try:
        packet = sidecar_packet(notes, sidecar_sha256=read.sha256)
        provenance["sidecar_sha256"] = read.sha256  # every output says which sidecar went with them
    except XmpError as e:  # the photo is restored all the same, without it
        notes.append(f"XMP sidecar {read.name} not carried: {e.reason}")
        return None
    return packet


def _output_packet(found: list[str], *, xmp: bytes | None, first: bool, notes: list[str], kept: list[str],
                   provenance: dict, shared: dict) -> bytes | None:
    """An output's packet (oio.write's provenance_xmp), its oldphoto:Notes those of the file so far with the writer's
    `found` in the first output (then kept in `kept`); in a later one (a --save-mask mask, an --only-mask overlay)
    what the writer found of that file alone: the others are about the first (an "alpha dropped" is not the mask's)
    or said there, and a run recognising the outputs after a lost state file reports the first's with theirs
    (RunState.recognise)."""
    known = [*notes, *(n for n in found if n not in notes)] if first else list(found)
    dropped: list[str] = []
    try:
        packet = oio.provenance_xmp(xmp, notes=dropped, kept_notes=lasting_notes(known), **provenance,
                                    **(shared if first else {}))
        if any(n not in known for n in dropped):  # what of the packet it drops (a thumbnail), said too
            known += [n for n in dropped if n not in known]
            packet = oio.provenance_xmp(xmp, kept_notes=lasting_notes(known), **provenance,
                                        **(shared if first else {}))
    except XmpError as e:  # the source's own metadata is kept as it is rather than dropped or refused
        note = f"{e.reason}: carried unchanged, without oldphoto's provenance entry"
        if note not in notes:
            notes.append(note)
        return xmp
    notes.extend(n for n in dropped if n not in notes)
    if first:
        kept[:] = lasting_notes(known)
    return packet


@contextmanager
def _staged(gate: CommitGate | None) -> Iterator[oio.Staging]:
    """The staging of one source's outputs (through the gate's temp files when there is a gate); what is left staged
    is removed on the way out (after a commit nothing is; through the folder held, wherever it went). An ImageError
    meanwhile asks the gate once more: the output folder deleted meanwhile (even as the outputs went in) is why, and
    the photo did not fail, the run was stopped (FolderLost, chained to the error). Each file staged is read back for
    its sha256 once written (staging.sha256: the outputs' fixity, for their state record and the report)."""
    staging = gate.staging() if gate is not None else oio.Staging(hashed=True)
    try:
        yield staging
    except ImageError:
        if gate is not None:
            gate.check()
        raise
    finally:
        staging.discard()


def _make_folder(path: Path, staging: oio.Staging, gate: CommitGate | None) -> None:
    """Make the folders of output `path`, after asking the gate: an output folder deleted meanwhile (while the model
    ran, or while the output before this one was written) is not made again (nor, later, by the making itself: it
    goes through the folder the run holds, staging.temps)."""
    if gate is not None:
        gate.check()
    try:
        staging.temps.makedirs(path.parent)
    except OSError as e:
        raise ImageError(path, f"cannot create the output folder {path.parent}: {e.strerror or e}") from e


def _put_in_place(staging: oio.Staging, gate: CommitGate | None, src: Path, stale: Sequence[Path], first: Path,
                  ) -> None:
    """Commit the staged outputs of `src` through the gate's entry and remove the `stale` files of earlier runs;
    ImageError naming the output that could not go in (`first` when the error names none)."""
    try:
        with gate.entry(src) if gate is not None else nullcontext():
            staging.commit()
            _remove(stale, staging.temps)
    except OSError as e:
        failed = e.filename or first
        raise ImageError(failed, f"cannot put {failed} in place: {e.strerror or e}") from e


def _remove(stale: Sequence[Path], temps: oio.TempFiles) -> None:
    """Remove files of earlier runs that no longer go with the outputs just put in place, through the folder the run
    holds (temps); ImageError when one cannot be: the file then fails, and its next run tries again. KeyboardInterrupt
    once the run has let go of the folder (temps closed while the outputs went in): one left there unsaid would stay
    for good beside a restoration recorded as done."""
    for path in stale:
        try:
            temps.remove_file(path)
        except OSError as e:
            raise ImageError(path, f"cannot remove {path}, which no longer goes with the restoration: "
                                   f"{e.strerror or e}") from e
