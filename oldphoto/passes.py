"""The band-by-band passes over one photo that pipeline.process_file composes.

- TiledPass.restore / .detect_only: the tile grid, one row of tiles (a band) at a time, handed to the run's
  TileBatcher (batching.py: batches of tiles from every photo in flight through detect -> restore -> upscale on
  the device), merged with feathering straight into the output buffer; merged defect probabilities are
  thresholded and dilated on the fly (coverage, --only-mask). CUDA out-of-memory halves the batch, then the tile.
- TiledPass.colorize: one global colorizer call on a shrunk lightness image, its chroma upsampled and
  recombined with the full-resolution lightness band by band.
- even_tone: one tone curve for the whole photo (ops/tone.py), so tiles of one print get the same correction.
- scan_blend: `--scan-blend auto` gives back part of the scan (tone, detail) outside the defects where a gate judges
  the scan mildly degraded (ops/blend.py says how).
- keep_intact: `--scope defects` puts the scan's own pixels back everywhere outside the defect mask.
- grow_mask: a curated mask (`--masks`) grown by --mask-dilate once over the whole photo; TiledPass.restore then
  hands its tiles to the restorer and uses it wherever the detector's mask would be (the detector does not run).
- overlay, upscale_alpha, is_near_gray, make_gray: whole-image helpers, also band by band.

Memory: the input stays in its integer dtype; float copies exist only for the tile rows queued for the device
(a photo queues rows until a batch of its tiles waits, so about a batch plus one row), one output tile row
(RowMerger) and bands of about BAND_PIXELS pixels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from . import io as oio
from .batching import MODEL_LOCK, BatchKey, OutOfMemoryAtBatchOne, Ticket, TileBatcher
from .config import RestoreConfig
from .errors import ImageError
from .ops import blend as oblend
from .ops.bands import BoxShrinker, RowDilator, resize_rows, shrink_size, weighted_low_band
from .ops.color import from_float, lab_to_rgb, rgb_to_lab, to_float
from .ops.tone import CurveFit
from .ops.tiling import RowMerger, grid, mirror_index, padded_size
from .report import DEVICE_NOTE
from .stages.base import run_stage, timed
from .stages.restore import restore_threshold

MIN_TILE = 64  # smallest tile tried after CUDA out-of-memory at batch size 1
BAND_PIXELS = 1 << 20  # pixels per band in the whole-image passes (colorize, overlay, alpha, gray check)
OVERLAY_TINT = (255, 0, 0)  # defects shown in red on the overlay
OVERLAY_OPACITY = 0.6
GRAY_SPREAD = 0.02  # an RGB pixel is gray when its channels differ by at most 2% of full scale ...
GRAY_SHARE = 0.999  # ... and an RGB photo is grayscale when that holds for 99.9% of its (intact) pixels
GRAY_MIN_INTACT = 0.5  # a mask leaving less than this share of the photo intact is not trusted: all pixels count
TONE_SHRINK = 4  # even_tone works out the low band of the tone change at 1/4 of the output size ...
TONE_SIGMA = 2.0  # ... blurred with this sigma there: 8 px of the input (16 px: same PSNR, wider halos at edges)

_CPU = torch.device("cpu")


def check_stop(stop: Callable[[], bool]) -> None:
    """Abandon the file (KeyboardInterrupt) when the caller asked to stop."""
    if stop():
        raise KeyboardInterrupt("stop requested; file abandoned")


def default_threshold(cfg: RestoreConfig, models) -> float | None:
    """The defect threshold a run with `cfg` uses when --mask-threshold is not given: with only_mask the detector's
    own, else the restorer's (stages.restore.restore_threshold). None when `models` has no detector."""
    detector = getattr(models, "detector", None)
    if detector is None:
        return None
    if cfg.only_mask:
        return float(detector.threshold)
    return restore_threshold(getattr(models, "restorer", None), detector)


@dataclass
class TiledPass:
    """State of one photo's processing shared by its passes.

    models: an object with detector / restorer / upscaler / colorizer attributes (pipeline.Models).
    batcher: the run's TileBatcher (shared by every photo in flight, bound to the same models).
    progress(kind, done, total): kind "file_start" once the tile count is known, then "tiles" per tile row.
    seconds: per-stage wall time, added to in place.
    """

    src: Path
    cfg: RestoreConfig
    models: object
    device: torch.device
    seconds: dict[str, float]
    notes: list[str]
    progress: Callable[[str, int, int], None]
    stop: Callable[[], bool]
    batcher: TileBatcher
    done: int = 0
    total: int = 0
    started: bool = False
    blend_strengths: tuple[float, float] | None = None  # (s_lo, s_hi) the scan blend used; None: not applied
    near_gray: bool = False  # restore() found an RGB scan of a black-and-white print and made its output gray

    @property
    def threshold(self) -> float:
        """Defect probability threshold: the config's; else, when restoring, the one the restorer was tuned with
        (its mapping's meta); else the detector's own (tuned for mask F1 on validation, as --only-mask shows)."""
        if self.cfg.mask_threshold is not None:
            return float(self.cfg.mask_threshold)
        return default_threshold(self.cfg, self.models)

    def detect_only(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        """pixels (H, W, C) uint -> mask (H, W) uint8 (255 = defect, dilated by cfg.dilate_px), coverage %."""
        h, w, _ = pixels.shape
        mask = oio.allocate((h, w), np.uint8)
        coverage = self._tiled(pixels, out=None, mask_out=mask, colorize=False)
        return mask, coverage

    def restore(self, pixels: np.ndarray, colorize: bool, curated: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """pixels (H, W, C) uint -> output (sH, sW, C') same dtype, the defect mask acted on (H, W) uint8 (255 =
        defect; None when nothing needs it: no detector and no curated mask, or --tone tile without --save-mask) and
        its coverage % (None with neither).

        curated: a curator's mask (H, W) uint8 (255 = defect), grown already (grow_mask): the restorer gets its tiles
        instead of the detector's (which does not run), and it is the mask acted on, returned as it is, its coverage
        that of the mask as grown.

        C' is 3 for colour input or when colorizing (gray then fills all three channels), else 1.
        An RGB scan of a black-and-white print (is_near_gray over the pixels outside the mask: stains and dust
        may be coloured) has its restoration made gray (make_gray, self.near_gray) before `--scope defects` puts
        the scan's own pixels back.
        """
        h, w, c = pixels.shape
        if curated is not None and curated.shape != (h, w):
            raise ValueError(f"TiledPass.restore: curated mask {curated.shape} does not match the photo {pixels.shape}")
        s = self.cfg.upscale
        out = oio.allocate((s * h, s * w, 3 if (c == 3 or colorize) else 1), pixels.dtype)
        tone, defects_only = self.cfg.tone_mode, self.cfg.scope == "defects"
        even = tone in ("photo", "scan") and self.models.restorer is not None
        if curated is not None:
            mask = curated
        else:
            keep = (even or defects_only or self.cfg.save_mask) and self.models.detector is not None
            mask = oio.allocate((h, w), np.uint8) if keep else None
        coverage = self._tiled(pixels, out=out, mask_out=mask, colorize=colorize, given=curated)
        with timed(self.seconds, "restore", _CPU):
            self.near_gray = c == 3 and is_near_gray(pixels, mask)
            if even:
                even_tone(out, pixels, mask, s, self.stop, strength=self.cfg.tone_share)
            gate = getattr(self.models, "blend", None)
            # before colorizing: out is still the gray restoration in every channel (not upscaled: scan_blend_mode)
            if gate is not None and self.cfg.scan_blend_mode == "auto" and mask is not None:
                self.blend_strengths = scan_blend(out, pixels, mask, gate, self.stop)
            if self.near_gray:
                make_gray(out, self.stop)
            if defects_only:
                keep_intact(out, pixels, mask, self.stop)
        return out, mask, coverage

    def _tiled(self, pixels, out, mask_out, colorize, given=None) -> float | None:
        """Run the tile grid, halving the tile (and overlap) when even one tile per batch is out of memory. given: a
        curated mask (restore), cut into tiles beside the photo's."""
        tile, overlap, margin = self.cfg.tile.size, self.cfg.tile.overlap, self.cfg.tile.edge_margin
        while True:
            try:
                return self._grid(pixels, out, mask_out, colorize, tile, overlap, margin, given)
            except OutOfMemoryAtBatchOne:
                if tile // 2 < MIN_TILE:
                    raise ImageError(self.src, f"out of {self.device.type} memory even with one {tile}-px tile "
                                               "per batch") from None
                tile, overlap, margin = tile // 2, overlap // 2, margin // 2
                self.notes.append(f"{DEVICE_NOTE} tile size reduced to {tile}")
            finally:
                self.batcher.cancel(self)  # tiles still queued for a failed or stopped grid

    def _grid(self, pixels, out, mask_out, colorize, tile, overlap, m, given=None) -> float | None:
        h, w, c = pixels.shape
        cfg, models, batcher = self.cfg, self.models, self.batcher
        curated = given is not None  # the restorer's mask is cut from it: no probabilities to merge and threshold
        # the grid covers the image grown by m (--edge-margin) mirrored pixels on every side
        ys = grid(padded_size(h + 2 * m, tile), tile, overlap)
        xs = grid(padded_size(w + 2 * m, tile), tile, overlap)
        self.total, self.done = len(ys) * len(xs), 0
        # A retry with a smaller tile restarts the count: reported as progress, not as a new file.
        self.progress("tiles" if self.started else "file_start", 0, self.total)
        self.started = True
        rows_idx = mirror_index(h, ys[-1] + tile, start=-m)
        cols_idx = mirror_index(w, xs[-1] + tile, start=-m)
        image_merger = None if out is None else RowMerger(w, 3, tile, overlap, cfg.upscale, height=h, margin=m)
        has_mask = models.detector is not None and not curated
        mask_merger = RowMerger(w, 1, tile, overlap, 1, height=h, margin=m) if has_mask else None
        threshold = self.threshold if has_mask else 0.0
        sink = _Sink(out, mask_out if has_mask else None, colorize, gray=c == 1, threshold=threshold,
                     dilator=RowDilator(w, cfg.dilate_px) if has_mask else None)
        key = BatchKey(tile=tile, only_mask=out is None, threshold=threshold,
                       mask_dilate=0 if curated else cfg.dilate_px, upscale=cfg.upscale, curated=curated)

        def cut(image: np.ndarray, y: int) -> list[np.ndarray]:
            """The tiles of the grid row at `y` of `image` (the pixels or the curated mask), mirrored past the photo's
            edges: views where the row lies inside it, small copies where it does not."""
            r = y - m  # image row of the band's first row
            band = image[r: r + tile] if 0 <= r and r + tile <= h else image[rows_idx[y: y + tile]]  # (T, W, ...)
            return [band[:, a - m: a - m + tile] if m <= a and a - m + tile <= w else band[:, cols_idx[a: a + tile]]
                    for a in xs]

        # Tile rows are submitted in raster order and collected in that order; rows go on being submitted while
        # fewer than a batch of this photo's tiles wait, so a narrow image still fills its batches, and whatever
        # other photos have queued meanwhile shares them.
        rows: deque[tuple[int, Ticket]] = deque()

        def collect_oldest() -> None:
            y, ticket = rows.popleft()
            images, probs = batcher.collect(ticket)
            with timed(self.seconds, "tiling", _CPU):
                if image_merger is not None:
                    sink.image(image_merger.add(torch.stack(images), y, xs))
                if mask_merger is not None:
                    sink.mask(mask_merger.add(torch.stack(probs), y, xs))
            self.done += len(xs)
            self.progress("tiles", self.done, self.total)

        for y in ys:
            check_stop(self.stop)
            with timed(self.seconds, "tiling", _CPU):
                # float copies of this row's tiles only, so the band (and the memory map behind it) can go
                x = torch.from_numpy(to_float(np.stack(cut(pixels, y)))).permute(0, 3, 1, 2)
                if x.shape[1] == 1:  # gray photos go through the RGB models as three equal channels
                    x = x.expand(-1, 3, -1, -1)
                x = x.contiguous()
                masks = torch.from_numpy(np.stack(cut(given, y)) > 0).float()[:, None] if curated else None
            rows.append((y, batcher.submit(x, key, self, self.seconds, self.notes, masks)))
            while rows and batcher.pending(self) >= batcher.batch_for(tile):
                collect_oldest()
        while rows:
            collect_oldest()
        with timed(self.seconds, "tiling", _CPU):
            if image_merger is not None:
                sink.image(image_merger.finish())
            if mask_merger is not None:
                sink.mask(mask_merger.finish())
                sink.mask_done()
        if curated:
            return 100.0 * _count_set(given) / (h * w)
        return sink.coverage(h * w) if has_mask else None

    def colorize(self, out: np.ndarray) -> None:
        """Replace the chroma of `out` (H, W, 3) uint in place with the colorizer's, keeping its lightness.

        The colorizer sees CIE L* (1, 1, h, w) in [0, 100] of the area-averaged image with the long side at
        most its work_size; its ab (1, 2, h, w) is bilinearly upsampled band by band.
        """
        h, w, _ = out.shape
        colorizer = self.models.colorizer
        rows = max(1, BAND_PIXELS // w)
        sh, sw = shrink_size(h, w, int(getattr(colorizer, "work_size", 512)))
        with torch.inference_mode(), MODEL_LOCK:
            with timed(self.seconds, "colorize", _CPU):
                shrinker = BoxShrinker(h, w, 3, sh, sw)
                for a in range(0, h, rows):
                    shrinker.add(to_float(out[a: a + rows]))
                lightness = rgb_to_lab(torch.from_numpy(shrinker.result())[None])[:, :1]
            with timed(self.seconds, "colorize", self.device):
                ab = run_stage("colorizer", colorizer, self.device, (1, 2, sh, sw), lightness.to(self.device))[0].cpu()
            with timed(self.seconds, "colorize", _CPU):
                for a in range(0, h, rows):
                    check_stop(self.stop)
                    b = min(h, a + rows)
                    lab = rgb_to_lab(torch.from_numpy(to_float(out[a:b])).permute(2, 0, 1))
                    lab = torch.cat([lab[:1], resize_rows(ab, h, w, a, b)])
                    out[a:b] = from_float(lab_to_rgb(lab).permute(1, 2, 0), out.dtype)


def even_tone(out: np.ndarray, pixels: np.ndarray, mask: np.ndarray | None, scale: int,
              stop: Callable[[], bool] = lambda: False, strength: float = 1.0) -> None:
    """Give every tile of one photo the same tone correction, in place (ops/tone.py says why).

    out (sH, sW, C) uint: the merged restoration; pixels (H, W, 1 or C) uint: the scan; mask (H, W) uint8 (> 0 =
    defect) or None; scale s: out's size over the scan's. One monotone curve per channel is fitted, scan ->
    restoration, over the intact pixels; then out loses the low band (Gaussian, TONE_SIGMA at 1/TONE_SHRINK of
    its size, over intact pixels only) of out - curve(scan). Detail, denoising and defect fills stay; tone
    that differs from tile to tile goes. A restoration equal to the scan comes back unchanged.
    strength in [0, 1]: the share of the fitted curve's change applied, scan -> scan + strength (curve(scan) -
    scan) (`--tone-strength`). 0 is the identity (`--tone scan`): the restoration keeps the scan's tone, and a
    defect's fill takes the tone of the intact pixels around it.
    The fit and the low band are worked out on every second row and column (plenty for 64 bins and a blur of
    8 px); only the final subtraction touches every pixel.
    """
    oh, ow, c = out.shape
    h, w, _ = pixels.shape
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"even_tone: strength must be in [0, 1], got {strength}")
    if (oh, ow) != (scale * h, scale * w) or pixels.shape[2] not in (1, c) \
            or (mask is not None and mask.shape != (h, w)):
        raise ValueError(f"even_tone: output {out.shape}, scan {pixels.shape} and mask "
                         f"{None if mask is None else mask.shape} do not match at scale {scale}")
    rows = max(2, BAND_PIXELS // (4 * ow) // 2 * 2)  # output rows per band (even): a few float copies live at once
    cols = np.arange(0, ow, 2) // scale  # scan column of every second output column

    def sampled():
        """Per band: (scan values (n, W2, Cp) uint, restoration (n, W2, C) float, intact (n, W2) bool or None)."""
        for a in range(0, oh, rows):
            check_stop(stop)
            src = np.arange(a, min(oh, a + rows), 2) // scale
            at = np.ix_(src, cols)  # one gather: no full-width copy of the rows first
            intact = None if mask is None else mask[at] == 0
            yield pixels[at], to_float(out[a: a + rows: 2, ::2]), intact

    fit = CurveFit(c)
    if strength > 0:
        for scan, restored, intact in sampled():
            fit.add(to_float(scan), restored, intact)
    # the curve as a table over every scan value: no interpolation per pixel; no knots (strength 0) is the identity
    top = np.iinfo(pixels.dtype).max
    values = np.arange(top + 1, dtype=np.float32)[:, None] / np.float32(top)
    table = fit.curve()(values)  # (top + 1, C)
    if strength < 1:
        table = values + np.float32(strength) * (table - values)

    def differences():  # restoration minus the curve's expectation, weighted to the intact pixels
        for scan, restored, intact in sampled():
            expected = np.stack([table[scan[..., k if scan.shape[2] > 1 else 0], k] for k in range(c)], axis=2)
            weight = np.ones(restored.shape[:2], np.float32) if intact is None else intact.astype(np.float32)
            yield restored - expected, weight[..., None]

    low = weighted_low_band(differences(), -(-oh // 2), -(-ow // 2), c, -(-oh // TONE_SHRINK), -(-ow // TONE_SHRINK),
                            TONE_SIGMA)
    for a in range(0, oh, rows):
        check_stop(stop)
        b = min(oh, a + rows)
        change = resize_rows(low, oh, ow, a, b).permute(1, 2, 0).numpy()
        out[a:b] = from_float(to_float(out[a:b]) - change, out.dtype)


BLEND_BLOCK = 256  # the gate judges blocks of the photo the size of the crops it was fitted on ...
BLEND_BLOCKS = 8  # ... at most this many per side, spread evenly, and averages their strengths
BLEND_FULL = 0.995  # strengths both this close to 1 are taken as 1: the restoration as is, no pass over the photo


def blend_blocks(out: np.ndarray, pixels: np.ndarray, mask: np.ndarray, chunk: int = 8
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Evenly spread BLEND_BLOCK-px blocks (whole sides when smaller) of scan, restoration and mask as the gate's
    input, `chunk` blocks at a time: x, o (B, 3, bh, bw) [0, 1] (gray repeated), m (B, 1, bh, bw) {0, 1}; out and
    pixels (H, W, C) uint. Only the blocks of one chunk are ever in float."""
    h, w, _ = pixels.shape
    bh, bw = min(BLEND_BLOCK, h), min(BLEND_BLOCK, w)
    ys = np.linspace(0, h - bh, min(BLEND_BLOCKS, -(-h // BLEND_BLOCK))).round().astype(int)
    xs = np.linspace(0, w - bw, min(BLEND_BLOCKS, -(-w // BLEND_BLOCK))).round().astype(int)
    corners = [(y, x) for y in ys for x in xs]

    def rgb(blocks: np.ndarray) -> torch.Tensor:  # (B, bh, bw, C) uint -> (B, 3, bh, bw) float
        t = torch.from_numpy(to_float(blocks)).permute(0, 3, 1, 2)
        return t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t

    for i in range(0, len(corners), chunk):
        at = corners[i:i + chunk]
        x, o, m = (np.stack([a[y:y + bh, x0:x0 + bw] for y, x0 in at]) for a in (pixels, out, mask))
        yield rgb(x), rgb(o), torch.from_numpy((m > 0).astype(np.float32))[:, None]


def scan_blend(out: np.ndarray, pixels: np.ndarray, mask: np.ndarray, stage,
               stop: Callable[[], bool] = lambda: False) -> tuple[float, float] | None:
    """`--scan-blend auto`, in place: out = o - (1 - s_lo) L - (1 - m)(1 - s_hi) H (ops/blend.py) with the
    strengths `stage` (stages.blend.ScanBlend) gives for this photo, the mean over its blocks; returns them ((1, 1)
    when both are at least BLEND_FULL: then out is left as it is), or None for a photo too small to judge (left as
    restored).

    out (H, W, C) uint: the restoration after even_tone; pixels (H, W, C or 1) uint of the same dtype: the scan (a
    gray one stands for every channel of a restoration about to be colorized); mask (H, W) uint8 (> 0 = defect, as
    restored). L, the low band of d = out - pixels over intact
    pixels, is worked out on 4 x 4 area means (ops.blend.intact_low_band's grid), then one band of rows at a time.
    """
    h, w, c = out.shape
    if pixels.shape[:2] != (h, w) or pixels.shape[2] not in (1, c) or pixels.dtype != out.dtype \
            or mask.shape != (h, w):
        raise ValueError(f"scan_blend: output {out.shape} {out.dtype}, scan {pixels.shape} {pixels.dtype} and mask "
                         f"{mask.shape} do not match")
    if min(h, w) < oblend.MIN_SIDE:
        return None
    per_block = torch.cat([stage.strengths(*blocks) for blocks in blend_blocks(out, pixels, mask)])
    s_lo, s_hi = (float(v) for v in per_block.mean(0))
    if min(s_lo, s_hi) >= BLEND_FULL:
        return 1.0, 1.0
    rows = max(1, BAND_PIXELS // w)

    def differences():  # restoration minus scan, weighted to the intact pixels
        for a in range(0, h, rows):
            check_stop(stop)
            intact = (mask[a:a + rows] == 0).astype(np.float32)[..., None]
            yield to_float(out[a:a + rows]) - to_float(pixels[a:a + rows]), intact

    # the cells of ops.blend.intact_low_band (4 x 4 px, partial at the bottom and right), which the gate was fitted
    # with: evenly spread bins of H / ceil(H / 4) rows moved the low band by up to 1 % of full scale
    low = weighted_low_band(differences(), h, w, c, -(-h // oblend.LOW_SHRINK), -(-w // oblend.LOW_SHRINK),
                            oblend.LOW_SIGMA, cell=oblend.LOW_SHRINK)
    for a in range(0, h, rows):
        check_stop(stop)
        b = min(h, a + rows)
        lo = resize_rows(low, h, w, a, b).permute(1, 2, 0).numpy()
        o, x = to_float(out[a:b]), to_float(pixels[a:b])
        intact = (mask[a:b] == 0).astype(np.float32)[..., None]
        out[a:b] = from_float(o - (1 - s_lo) * lo - intact * (1 - s_hi) * (o - x - lo), out.dtype)
    return s_lo, s_hi


def grow_mask(defects: np.ndarray, radius: int, stop: Callable[[], bool] = lambda: False) -> np.ndarray:
    """A curated mask as the restoration acts on it: defects (H, W) bool -> (H, W) uint8 (255 = defect; io.allocate,
    disk-backed when large) grown by `radius` pixels (--mask-dilate, as the detector's mask is), band by band."""
    h, w = defects.shape
    out = oio.allocate((h, w), np.uint8)
    dilator, done = RowDilator(w, radius), 0
    rows = max(1, BAND_PIXELS // w)

    def store(grown: np.ndarray) -> None:
        nonlocal done
        out[done: done + grown.shape[0]] = grown.astype(np.uint8) * np.uint8(255)
        done += grown.shape[0]

    for a in range(0, h, rows):
        check_stop(stop)
        store(dilator.push(defects[a: a + rows]))
    store(dilator.finish())
    return out


def _count_set(mask: np.ndarray) -> int:
    """Pixels of mask (H, W) that are set (> 0), band by band (no whole-image temporary)."""
    rows = max(1, BAND_PIXELS // mask.shape[1])
    return sum(int(np.count_nonzero(mask[a: a + rows])) for a in range(0, mask.shape[0], rows))


def keep_intact(out: np.ndarray, pixels: np.ndarray, mask: np.ndarray, stop: Callable[[], bool] = lambda: False
                ) -> None:
    """`--scope defects`, in place: every pixel outside the defect mask gets the scan's value back, exactly.

    out (H, W, C) uint, pixels (H, W, 1 or C) uint of the same dtype (a gray scan fills every channel), mask
    (H, W) uint8 (> 0 = defect, already grown).
    """
    h, w, c = out.shape
    if pixels.shape[:2] != (h, w) or pixels.shape[2] not in (1, c) or mask.shape != (h, w) \
            or pixels.dtype != out.dtype:
        raise ValueError(f"keep_intact: output {out.shape} {out.dtype}, scan {pixels.shape} {pixels.dtype} and "
                         f"mask {mask.shape} do not match")
    rows = max(1, BAND_PIXELS // w)
    for a in range(0, h, rows):
        check_stop(stop)
        b = min(h, a + rows)
        intact = mask[a:b] == 0
        out[a:b][intact] = np.broadcast_to(pixels[a:b], out[a:b].shape)[intact]


class _Sink:
    """Takes merged rows in order: image rows into the output buffer; mask rows thresholded, dilated, counted."""

    def __init__(self, out, mask_out, colorize: bool, gray: bool, threshold: float, dilator: RowDilator | None):
        self.out, self.mask_out, self.colorize, self.gray = out, mask_out, colorize, gray
        self.threshold, self.dilator = threshold, dilator
        self.image_rows = 0
        self.mask_rows = 0
        self.defects = 0

    def image(self, rows: np.ndarray) -> None:
        """rows (m, sW, 3) float32 in [0, 1]; converted in slices so temporaries stay ~BAND_PIXELS (x4 upscaling)."""
        step = max(1, BAND_PIXELS // max(1, rows.shape[1]))
        for i in range(0, rows.shape[0], step):
            part = rows[i: i + step]
            if self.gray:  # collapse the three network channels of a gray photo back to one
                part = part.mean(axis=2, keepdims=True)
                if self.colorize:
                    part = np.repeat(part, 3, axis=2)
            a = self.image_rows
            self.out[a: a + part.shape[0]] = from_float(part, self.out.dtype)
            self.image_rows += part.shape[0]

    def mask(self, rows: np.ndarray) -> None:
        """rows (m, W, 1) float32 merged defect probabilities."""
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


def is_near_gray(pixels: np.ndarray, mask: np.ndarray | None = None) -> bool:
    """True when an (H, W, 3) photo's channels are (nearly) equal: a black-and-white print scanned in RGB.

    At least GRAY_SHARE of the pixels outside mask (H, W) uint8 (> 0 = defect; None: all pixels) must have their
    channels within GRAY_SPREAD of full scale of each other; a small coloured detail (a stamp, a hand-tinted
    area) over 0.1 % of the intact pixels keeps the photo in colour. A mask covering more than half the photo
    is not trusted (a heavily damaged colour print must not pass as gray on its remainder): all pixels count.
    """
    h, w, _ = pixels.shape
    if mask is not None and mask.shape != (h, w):
        raise ValueError(f"is_near_gray: mask {mask.shape} does not match the photo {pixels.shape}")
    limit = int(GRAY_SPREAD * np.iinfo(pixels.dtype).max)
    rows = max(1, BAND_PIXELS // w)
    if mask is not None:
        intact = sum(int(np.count_nonzero(mask[a: a + rows] == 0)) for a in range(0, h, rows))
        if intact < GRAY_MIN_INTACT * h * w:
            mask = None
    counted = h * w if mask is None else intact
    allowed = (1.0 - GRAY_SHARE) * counted
    colourful = 0
    for a in range(0, h, rows):
        band = pixels[a: a + rows].astype(np.int32)
        hit = band.max(axis=2) - band.min(axis=2) > limit
        if mask is not None:
            hit &= mask[a: a + rows] == 0
        colourful += int(hit.sum())
        if colourful > allowed:
            return False
    return True


def make_gray(out: np.ndarray, stop: Callable[[], bool] = lambda: False) -> None:
    """In place: every pixel of out (H, W, 3) uint gets the rounded mean of its channels in all three. The networks
    were trained on colour photos and tint the fills and textures of a black-and-white print scanned in RGB a
    little when its channels are not exactly equal (scanner noise, a slight cast); stages.restore already keeps
    exactly gray tiles gray."""
    h, w, c = out.shape
    if c != 3:
        raise ValueError(f"make_gray: expected (H, W, 3), got {out.shape}")
    rows = max(1, BAND_PIXELS // w)
    for a in range(0, h, rows):
        check_stop(stop)
        band = out[a: a + rows]
        mean = np.rint(band.sum(axis=2, dtype=np.float64) / 3.0).astype(out.dtype)
        band[:] = mean[..., None]


def overlay(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """pixels (H, W, C) uint, mask (H, W) uint8 -> 8-bit RGB (H, W, 3) with defects (mask > 0) tinted red."""
    h, w, _ = pixels.shape
    if mask.shape != (h, w):
        raise ValueError(f"overlay: mask {mask.shape} does not match the photo {pixels.shape}")
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


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Alpha (H, W) -> (sH, sW), nearest neighbour: transparency is carried, never invented."""
    if scale == 1:
        return alpha
    h, w = alpha.shape
    out = oio.allocate((scale * h, scale * w), alpha.dtype)
    rows = max(1, BAND_PIXELS // (w * scale * scale))
    for a in range(0, h, rows):
        band = np.repeat(np.repeat(alpha[a: a + rows], scale, axis=0), scale, axis=1)
        out[scale * a: scale * a + band.shape[0]] = band
    return out
