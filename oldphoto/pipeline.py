"""The processing engine: one photo in, its restored derivative (or defect mask) out, in bounded memory.

process_file reads the photo, walks its tile grid in horizontal bands (one row of tiles at a time),
sends the band's tiles in batches through detect -> restore -> upscale on the device, and streams the
feathered merge (ops/tiling.RowMerger) into an output buffer from io.allocate (disk-backed when large).
Memory is bounded by tile size x batch size x image width, not by the image: the input stays in its
integer dtype, and no full-image float copy is ever made. Colorize runs afterwards as one global pass at
low resolution whose chroma is upsampled and recombined with the full-resolution lightness band by band.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from . import io as oio
from .config import RestoreConfig
from .errors import ImageError, OldPhotoError
from .ops.bands import BoxShrinker, RowDilator, resize_rows, shrink_size
from .ops.color import from_float, lab_to_rgb, rgb_to_lab, to_float
from .ops.masks import dilate
from .ops.tiling import RowMerger, grid, mirror_index, padded_size
from .stages.base import (
    ColorizerStage,
    DetectorStage,
    RestorerStage,
    UpscalerStage,
    check_output,
    configure_cpu_threads,
    is_out_of_memory,
    release_memory,
    resolve_device,
    run_stage,
    timed,
)

__all__ = ["Models", "Event", "FileOutcome", "resolve_device", "load_models", "output_paths", "process_file",
           "WEIGHT_NAMES"]

# Registry names of the models the CLI loads for each job.
WEIGHT_NAMES = {
    "detector": "detector-v1",
    "vae1": "vae1-v1",  # encoder E_RX of the old-photo VAE
    "mapping": "mapping-v1",  # latent mapping T
    "vae2": "vae2-v1",  # decoder G_Y of the clean-photo VAE
    "colorizer": "colorizer-v1",
    "upscaler": "upscaler-v1",  # one model with an x2 and an x4 head
}

STAGE_KEYS = ("read", "detect", "restore", "colorize", "upscale", "write", "tiling")
MIN_TILE = 64  # smallest tile tried after CUDA out-of-memory at batch size 1
BAND_PIXELS = 1 << 20  # pixels per band in the whole-image passes (colorize, overlay, alpha)
OVERLAY_TINT = (255, 0, 0)  # defects shown in red on the overlay
OVERLAY_OPACITY = 0.6
GRAY_SPREAD = 0.02  # an RGB pixel is gray when its channels differ by at most 2% of full scale ...
GRAY_SHARE = 0.999  # ... and an RGB photo is grayscale when that holds for 99.9% of its pixels

_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "WEBP": ".webp"}
_FORMAT_OF_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".tif": "TIFF",
                     ".tiff": "TIFF", ".webp": "WEBP"}
_CFG_FORMAT = {"png": "PNG", "tiff": "TIFF", "jpeg": "JPEG"}


@dataclass
class Models:
    """The loaded stages; any may be None when the config does not need it (see stages/base.py contracts)."""

    detector: DetectorStage | None = None
    restorer: RestorerStage | None = None
    colorizer: ColorizerStage | None = None
    upscaler: UpscalerStage | None = None

    def describe(self) -> dict:
        """{stage: {"name": weights name(s), "sha256": ...}} for the report and provenance.

        A stage made of several networks (the restorer) joins the names with "+", gives the sha256 of its
        parts' digests, and lists the parts. Stages without registry entries are described by class name.
        """
        out = {}
        for key in ("detector", "restorer", "colorizer", "upscaler"):
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


# ----------------------------------------------------------------------------------------------- loading


def load_models(cfg: RestoreConfig, device: torch.device | str) -> Models:
    """Load from the weights registry only the stages `cfg` needs, on `device` (WEIGHT_NAMES)."""
    device = torch.device(device)
    if device.type == "cpu":
        configure_cpu_threads()
    from .stages.detect import Detector

    models = Models(detector=Detector.from_registry(WEIGHT_NAMES["detector"], device))
    if cfg.only_mask:
        return models
    from .stages.restore import Restorer

    models.restorer = Restorer.from_registry(WEIGHT_NAMES["vae1"], WEIGHT_NAMES["mapping"], WEIGHT_NAMES["vae2"],
                                             device)
    if cfg.colorize:
        from .stages.colorize import Colorizer

        models.colorizer = Colorizer.from_registry(WEIGHT_NAMES["colorizer"], device)
    if cfg.upscale > 1:
        from .stages.upscale import Upscaler

        models.upscaler = Upscaler.from_registry(WEIGHT_NAMES["upscaler"], cfg.upscale, device)
    return models


# ----------------------------------------------------------------------------------------------- naming


def output_format(src_format: str, cfg: RestoreConfig) -> str:
    """The file format written: the input's with --format keep, else the one asked for."""
    if cfg.format != "keep":
        return _CFG_FORMAT[cfg.format]
    fmt = _FORMAT_OF_SUFFIX.get(src_format.lower()) if src_format.startswith(".") else src_format.upper()
    if fmt not in _SUFFIX:
        raise ValueError(f"unknown image format {src_format!r}; expected one of {sorted(_SUFFIX)} or their suffixes")
    return fmt


def output_paths(out_base: Path, src_format: str, cfg: RestoreConfig) -> list[Path]:
    """Paths process_file writes for out_base (= out_dir / rel path without suffix).

    src_format: the input's suffix (".JPG", kept as written with --format keep) or its format name
    ("JPEG" -> ".jpg"). --only-mask: [NAME.mask.png, NAME.overlay.jpg].
    """
    base = str(out_base)
    if cfg.only_mask:
        return [Path(base + ".mask.png"), Path(base + ".overlay.jpg")]
    fmt = output_format(src_format, cfg)
    if cfg.format == "keep" and src_format.startswith("."):
        return [Path(base + src_format)]
    return [Path(base + _SUFFIX[fmt])]


# ----------------------------------------------------------------------------------------------- processing


def process_file(src: Path, out_base: Path, cfg: RestoreConfig, models: Models,
                 on_event: Callable[[Event], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FileOutcome:
    """Restore one photo (or write its defect mask with cfg.only_mask) and write the outputs atomically.

    Raises ImageError for bad input or an unwritable output, KeyboardInterrupt when should_stop() turns
    true (checked between bands); in both cases no output file is left behind. Stage errors propagate.
    """
    src, out_base = Path(src), Path(out_base)
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    device = resolve_device(cfg.device)
    cpu = torch.device("cpu")
    seconds = {k: 0.0 for k in STAGE_KEYS}
    _check_models(cfg, models)

    with timed(seconds, "read", cpu):
        pic = oio.read(src, cfg.max_pixels)
        source_sha256 = oio.read_source_sha256(src)
    pixels = _check_pixels(src, pic.pixels)
    height, width, channels = pixels.shape
    notes = _source_notes(pic)

    suffix = src.suffix if _FORMAT_OF_SUFFIX.get(src.suffix.lower()) == pic.format else pic.format
    outputs = output_paths(out_base, suffix, cfg)
    job = _Job(src=src, cfg=cfg, models=models, device=device, seconds=seconds, notes=notes, emit=emit, stop=stop)

    if cfg.only_mask:
        mask, coverage = job.detect_only(pixels)
        _check_stop(stop)
        with timed(seconds, "write", cpu):
            overlay = _overlay(pixels, mask)
            _write_all(outputs, [(mask[..., None], None, "PNG", _mask_meta(pic.meta)),
                                 (overlay, None, "JPEG", pic.meta)], cfg, pic, source_sha256, models, notes,
                       action="derived")
    else:
        colorize = _wants_colour(cfg, pixels, notes)
        out, coverage = job.restore(pixels, colorize)
        if colorize:
            job.colorize(out)
        _check_stop(stop)
        scale = cfg.upscale
        alpha = _upscale_alpha(pic.alpha, scale) if pic.alpha is not None else None
        meta = _scaled_meta(pic.meta, scale)
        with timed(seconds, "write", cpu):
            _write_all(outputs, [(out, alpha, output_format(suffix, cfg), meta)], cfg, pic, source_sha256,
                       models, notes, action="derived")

    emit(Event("file_done", src, job.done, job.total))
    return FileOutcome(outputs=outputs, width=width, height=height, megapixels=width * height / 1e6,
                       seconds=seconds, mask_coverage=coverage, notes=notes)


class _OutOfMemoryAtBatchOne(Exception):
    """The device cannot hold even one tile of the current size; the caller retries with a smaller tile."""


@dataclass
class _Job:
    """State of one process_file call shared by its passes."""

    src: Path
    cfg: RestoreConfig
    models: Models
    device: torch.device
    seconds: dict[str, float]
    notes: list[str]
    emit: Callable[[Event], None]
    stop: Callable[[], bool]
    done: int = 0
    total: int = 0
    started: bool = False

    @property
    def threshold(self) -> float:
        if self.cfg.mask_threshold is not None:
            return float(self.cfg.mask_threshold)
        return float(self.models.detector.threshold)

    # --- tiled pass ------------------------------------------------------------------------------------

    def detect_only(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        """Mask pass: (H, W) uint8 mask (255 = defect, dilated) and its coverage in percent."""
        h, w, _ = pixels.shape
        mask = oio.allocate((h, w), np.uint8)
        coverage = self._tiled(pixels, out=None, mask_out=mask, colorize=False)
        return mask, coverage

    def restore(self, pixels: np.ndarray, colorize: bool) -> tuple[np.ndarray, float | None]:
        """Restoration pass: output (sH, sW, C') in the input dtype, C' = 3 for colour or colorized output."""
        h, w, c = pixels.shape
        s = self.cfg.upscale
        out = oio.allocate((s * h, s * w, 3 if (c == 3 or colorize) else 1), pixels.dtype)
        coverage = self._tiled(pixels, out=out, mask_out=None, colorize=colorize)
        return out, coverage

    def _tiled(self, pixels, out, mask_out, colorize) -> float | None:
        """Run the tile grid, shrinking the batch and then the tile on CUDA out-of-memory."""
        tile, overlap = self.cfg.tile.size, self.cfg.tile.overlap
        while True:
            try:
                return self._grid_pass(pixels, out, mask_out, colorize, tile, overlap)
            except _OutOfMemoryAtBatchOne:
                if tile // 2 < MIN_TILE:
                    raise ImageError(self.src, f"out of {self.device.type} memory even with one {tile}-px tile "
                                               f"per batch") from None
                tile, overlap = tile // 2, overlap // 2
                self.notes.append(f"out of device memory: tile size reduced to {tile}")

    def _grid_pass(self, pixels, out, mask_out, colorize, tile, overlap) -> float | None:
        h, w, c = pixels.shape
        cfg, models, s = self.cfg, self.models, self.cfg.upscale
        ys = grid(padded_size(h, tile), tile, overlap)
        xs = grid(padded_size(w, tile), tile, overlap)
        self.total, self.done = len(ys) * len(xs), 0
        # A retry with a smaller tile restarts the count: report the new total as progress, not a new file.
        self.emit(Event("tiles" if self.started else "file_start", self.src, 0, self.total))
        self.started = True
        rows_idx = mirror_index(h, padded_size(h, tile))
        cols_idx = mirror_index(w, padded_size(w, tile)) if w < tile else None
        image_merger = None if out is None else RowMerger(w, 3, tile, overlap, s, height=h)
        has_mask = models.detector is not None
        mask_merger = RowMerger(w, 1, tile, overlap, 1, height=h) if has_mask else None
        dilator = RowDilator(w, cfg.mask_dilate) if has_mask else None
        sink = _Sink(out, mask_out, colorize, c == 1, self.threshold if has_mask else 0.0, dilator)
        batch = cfg.tile.batch_size

        with torch.inference_mode():
            for y in ys:
                _check_stop(self.stop)
                band = pixels[y: y + tile] if y + tile <= h else pixels[rows_idx[y: y + tile]]
                if cols_idx is not None:
                    band = band[:, cols_idx]
                i = 0
                while i < len(xs):
                    xb = xs[i: i + batch]
                    try:
                        img, prob = self._batch(band, xb, tile, only_mask=out is None)
                    except Exception as exc:
                        if not is_out_of_memory(exc):
                            raise
                        release_memory(self.device)
                        if len(xb) == 1:
                            raise _OutOfMemoryAtBatchOne() from exc
                        batch = max(1, len(xb) // 2)
                        self.notes.append(f"out of device memory: batch size reduced to {batch}")
                        continue
                    with timed(self.seconds, "tiling", torch.device("cpu")):
                        if image_merger is not None:
                            sink.image(image_merger.add(img, y, xb))
                        if mask_merger is not None:
                            sink.mask(mask_merger.add(prob, y, xb))
                    i += len(xb)
                    self.done += len(xb)
                    self.emit(Event("tiles", self.src, self.done, self.total))
            with timed(self.seconds, "tiling", torch.device("cpu")):
                if image_merger is not None:
                    sink.image(image_merger.finish())
                if mask_merger is not None:
                    sink.mask(mask_merger.finish())
                    sink.mask_done()
        return sink.coverage(h * w) if has_mask else None

    def _batch(self, band: np.ndarray, xb: list[int], tile: int, only_mask: bool):
        """Tiles at xb of a band (T, W', C) -> (restored/upscaled (n, 3, sT, sT) cpu or None, prob (n, 1, T, T) or None)."""
        n, dev, models, s = len(xb), self.device, self.models, self.cfg.upscale
        with timed(self.seconds, "tiling", torch.device("cpu")):
            stack = np.stack([band[:, x: x + tile] for x in xb])  # (n, T, T, C) integer
            x = torch.from_numpy(to_float(stack)).permute(0, 3, 1, 2)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = x.contiguous().to(dev)
        prob = None
        if models.detector is not None:
            with timed(self.seconds, "detect", dev):
                prob = check_output("detector", run_stage(models.detector, dev, x), (n, 1, tile, tile)).clamp(0, 1)
        if only_mask:
            return None, prob.cpu()
        y = x
        if models.restorer is not None:
            mask = (prob > self.threshold).float() if prob is not None else torch.zeros_like(x[:, :1])
            mask = dilate(mask, self.cfg.mask_dilate)
            with timed(self.seconds, "restore", dev):
                y = check_output("restorer", run_stage(models.restorer, dev, y, mask), (n, 3, tile, tile))
        if s > 1:
            with timed(self.seconds, "upscale", dev):
                y = check_output("upscaler", run_stage(models.upscaler, dev, y), (n, 3, s * tile, s * tile))
        return y.clamp(0, 1).cpu(), (prob.cpu() if prob is not None else None)

    # --- colorize ------------------------------------------------------------------------------------

    def colorize(self, out: np.ndarray) -> None:
        """Replace the chroma of `out` (H, W, 3) in place with the colorizer's, keeping its full-res lightness."""
        h, w, _ = out.shape
        colorizer = self.models.colorizer
        cpu = torch.device("cpu")
        rows = max(1, BAND_PIXELS // w)
        sh, sw = shrink_size(h, w, int(getattr(colorizer, "work_size", 512)))
        with torch.inference_mode():
            with timed(self.seconds, "colorize", cpu):
                shrinker = BoxShrinker(h, w, 3, sh, sw)
                for a in range(0, h, rows):
                    shrinker.add(to_float(out[a: a + rows]))
                small = torch.from_numpy(shrinker.result())[None]
                lightness = rgb_to_lab(small)[:, :1]
            with timed(self.seconds, "colorize", self.device):
                ab = run_stage(colorizer, self.device, lightness.to(self.device))
                ab = check_output("colorizer", ab, (1, 2, sh, sw))[0].cpu()
            with timed(self.seconds, "colorize", cpu):
                for a in range(0, h, rows):
                    _check_stop(self.stop)
                    b = min(h, a + rows)
                    lab = rgb_to_lab(torch.from_numpy(to_float(out[a:b])).permute(2, 0, 1))
                    lab = torch.cat([lab[:1], resize_rows(ab, h, w, a, b)])
                    out[a:b] = from_float(lab_to_rgb(lab).permute(1, 2, 0), out.dtype)


class _Sink:
    """Receives merged rows in order: writes image rows to the output buffer, thresholds + dilates mask rows."""

    def __init__(self, out, mask_out, colorize: bool, gray: bool, threshold: float, dilator):
        self.out, self.mask_out, self.colorize, self.gray = out, mask_out, colorize, gray
        self.threshold, self.dilator = threshold, dilator
        self.image_rows = 0
        self.mask_rows = 0
        self.defects = 0

    def image(self, rows: np.ndarray) -> None:
        """rows (m, sW, 3) float32 in [0, 1]."""
        if rows.shape[0] == 0:
            return
        if self.gray:  # gray input went through the RGB models as 3 equal channels; collapse back
            rows = rows.mean(axis=2, keepdims=True)
            if self.colorize:
                rows = np.repeat(rows, 3, axis=2)
        a = self.image_rows
        self.out[a: a + rows.shape[0]] = from_float(rows, self.out.dtype)
        self.image_rows += rows.shape[0]

    def mask(self, rows: np.ndarray) -> None:
        """rows (m, W, 1) float32 merged probabilities."""
        if rows.shape[0]:
            self._store(self.dilator.push(rows[..., 0] > self.threshold))

    def mask_done(self) -> None:
        self._store(self.dilator.finish())

    def _store(self, grown: np.ndarray) -> None:
        self.defects += int(grown.sum())
        if self.mask_out is not None and grown.shape[0]:
            a = self.mask_rows
            self.mask_out[a: a + grown.shape[0]] = grown.astype(np.uint8) * np.uint8(255)
        self.mask_rows += grown.shape[0]

    def coverage(self, pixels: int) -> float:
        return 100.0 * self.defects / pixels


# ----------------------------------------------------------------------------------------------- helpers


def _check_stop(stop: Callable[[], bool]) -> None:
    if stop():
        raise KeyboardInterrupt("stop requested; file abandoned")


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
    mode = str(getattr(pic, "source_mode", "") or "")
    notes = [str(n) for n in getattr(pic, "notes", []) or []]
    if mode in ("CMYK", "P", "PA", "YCbCr", "LAB", "HSV") and not any(mode in n for n in notes):
        notes.append(f"{mode} converted to RGB")
    return notes


def _wants_colour(cfg: RestoreConfig, pixels: np.ndarray, notes: list[str]) -> bool:
    """Colorize only grayscale photos: 1-channel, or RGB whose channels are (nearly) equal."""
    if not cfg.colorize:
        return False
    if pixels.shape[2] == 1:
        return True
    if _is_near_gray(pixels):
        notes.append("RGB photo with (nearly) equal channels treated as grayscale for colorize")
        return True
    notes.append("colour photo: colorize skipped")
    return False


def _is_near_gray(pixels: np.ndarray) -> bool:
    h, w, _ = pixels.shape
    limit = int(GRAY_SPREAD * np.iinfo(pixels.dtype).max)
    rows = max(1, BAND_PIXELS // w)
    colourful = 0
    allowed = (1.0 - GRAY_SHARE) * h * w
    for a in range(0, h, rows):
        band = pixels[a: a + rows].astype(np.int32)
        spread = band.max(axis=2) - band.min(axis=2)
        colourful += int((spread > limit).sum())
        if colourful > allowed:
            return False
    return True


def _overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """8-bit RGB view of the photo (H, W, 3) with defects (mask 255) tinted red, band by band."""
    h, w, _ = pixels.shape
    out = oio.allocate((h, w, 3), np.uint8)
    tint = np.array(OVERLAY_TINT, dtype=np.float32)
    rows = max(1, BAND_PIXELS // w)
    for a in range(0, h, rows):
        band = to_float(pixels[a: a + rows]) * 255.0
        if band.shape[2] == 1:
            band = np.repeat(band, 3, axis=2)
        hit = mask[a: a + rows] > 0
        band[hit] = band[hit] * (1.0 - OVERLAY_OPACITY) + tint * OVERLAY_OPACITY
        out[a: a + rows] = np.rint(band).clip(0, 255).astype(np.uint8)
    return out


def _upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Alpha (H, W) carried untouched; nearest-neighbour enlarged by the upscale factor."""
    if scale == 1:
        return alpha
    h, w = alpha.shape
    out = oio.allocate((scale * h, scale * w), alpha.dtype)
    rows = max(1, BAND_PIXELS // (w * scale * scale))
    for a in range(0, h, rows):
        band = np.repeat(np.repeat(alpha[a: a + rows], scale, axis=0), scale, axis=1)
        out[scale * a: scale * a + band.shape[0]] = band
    return out


def _scaled_meta(meta, scale: int):
    """Metadata with the resolution multiplied by the upscale factor (same print size at more pixels)."""
    if scale == 1 or meta is None:
        return meta
    changes = {}
    if getattr(meta, "dpi", None):
        changes["dpi"] = (meta.dpi[0] * scale, meta.dpi[1] * scale)
    tags = getattr(meta, "tiff_tags", None)
    if tags and any(k in tags for k in (282, 283)):
        tags = dict(tags)
        for k in (282, 283):
            if k in tags:
                tags[k] = _scale_rational(tags[k], scale)
        changes["tiff_tags"] = tags
    return dataclasses.replace(meta, **changes) if changes else meta


def _scale_rational(value, scale: int):
    if isinstance(value, tuple) and len(value) == 2:
        return (value[0] * scale, value[1])
    return value * scale


def _mask_meta(meta):
    """A mask is not a photo: keep only its resolution, so it overlays the scan at the same size."""
    return oio.Metadata(exif=None, icc=None, xmp=None, iptc=None, dpi=getattr(meta, "dpi", None), tiff_tags={})


def _write_all(outputs: list[Path], items, cfg: RestoreConfig, pic, source_sha256: str, models: Models,
               notes: list[str], action: str) -> None:
    """Write each (pixels, alpha, fmt, meta) to its path atomically; on failure remove the ones already written."""
    parameters = {"settings": cfg.output_settings(), "models": models.describe()}
    written: list[Path] = []
    try:
        for path, (pixels, alpha, fmt, meta) in zip(outputs, items):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ImageError(path, f"cannot create output folder: {e.strerror or e}") from e
            xmp = oio.build_provenance(meta.xmp if meta is not None else None, action=action,
                                       software=f"oldphoto {__version__}", parameters=parameters,
                                       source_name=pic_name(pic, outputs), source_sha256=source_sha256)
            result = oio.write(path, pixels, alpha, fmt, meta, jpeg_quality=cfg.jpeg_quality,
                               software=f"oldphoto {__version__}", provenance_xmp=xmp)
            written.append(path)
            if isinstance(result, (list, tuple)):
                notes.extend(str(n) for n in result if str(n) not in notes)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise


def pic_name(pic, outputs) -> str:
    return str(getattr(pic, "path", "") or "")
