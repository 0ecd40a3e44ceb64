"""Run settings as frozen dataclasses; the CLI options map onto these fields one to one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMATS = ("keep", "png", "tiff", "jpeg")
TILE_SIZES = (128, 256)
UPSCALE_FACTORS = (1, 2, 4)
TONE_MODES = ("photo", "tile", "scan")
SCOPES = ("all", "defects")
SCAN_BLENDS = ("auto", "off")
DETECT_SCALES = (1, 2)
# share of the photo's fitted tone correction that `--tone photo` applies by default: all of it. Half of it won
# on one set of degraded whole validation photos and lost on a second draw of the same photos (weights/README.md,
# sixteenth session): no share was better than another beyond the noise, so the default is what it always was
TONE_STRENGTH = 1.0
JPEG_QUALITY = 95  # the --jpeg-quality default


@dataclass(frozen=True)
class TileConfig:
    size: int = 256  # tile edge in input pixels; 128 or 256
    overlap: int = 32  # pixels shared by neighbouring tiles, blended with a feathered ramp
    batch_size: int = 8  # tiles per forward pass (halved automatically on CUDA out-of-memory)
    # pixels of mirrored image the grid adds on every side, so that no tile edge (where the networks' zero padding
    # acts) lies on the photo's own border. 0: off, as the shipped models were measured: a 16-px margin kept blank
    # borders clean (a white page's edge lost up to 29 levels of 255 without it) but cost 2.3 dB on a photo with
    # torn edges, which the models learned to handle at a tile's edge (weights/README.md, twenty-eighth session)
    edge_margin: int = 0

    def __post_init__(self) -> None:
        if self.size not in TILE_SIZES:
            raise ValueError(f"tile size must be one of {TILE_SIZES}, got {self.size}")
        if not 0 <= self.overlap <= self.size // 2:
            raise ValueError(f"overlap must be in [0, {self.size // 2}], got {self.overlap}")
        if not 0 <= self.edge_margin <= self.size // 4:
            raise ValueError(f"edge margin must be in [0, {self.size // 4}], got {self.edge_margin}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class RestoreConfig:
    only_mask: bool = False  # write defect masks and overlays only; never change pixels
    colorize: bool = False  # add colour to grayscale photos (colour inputs are left as they are)
    upscale: int = 1  # 1 (off), 2 or 4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tile: TileConfig = field(default_factory=TileConfig)
    format: str = "keep"  # keep | png | tiff | jpeg
    overwrite: bool = False  # False: skip outputs already complete with the same settings
    jobs: int = 2  # threads for decoding/encoding files alongside the model
    max_pixels: int = 400_000_000  # refuse images larger than this (guards against decompression bombs)
    mask_threshold: float | None = None  # None: the one stored with the weights (restorer's, else detector's)
    # grow the mask by this many pixels; None: 1 when restoring (covers the soft edges of scratches before they are
    # refilled), 0 with only_mask (the detector's own mask at its F1-tuned threshold, as it was evaluated)
    mask_dilate: int | None = None
    jpeg_quality: int = JPEG_QUALITY  # when writing JPEG or WebP (with only_mask, the overlay)
    # photo: one tone curve per photo fitted from all its restored tiles (passes.even_tone), so a faded print is
    # corrected alike everywhere; tile: each tile keeps the restorer's own tone decision (the behaviour before);
    # scan: the scan's own tone is kept (fading and casts stay), only detail, noise and defects are restored;
    # None: photo, or scan with scope "defects" (the only tone that fills can match untouched pixels with)
    tone: str | None = None
    # with tone photo: the share of the fitted correction applied (0: the scan's tone, 1: all of it);
    # None: TONE_STRENGTH
    tone_strength: float | None = None
    # all: restore the whole photo; defects: change only the pixels of the (grown) defect mask, filled in the
    # scan's tone, and keep every other pixel exactly as scanned (minimal intervention, for archives)
    scope: str = "all"
    # also write NAME.mask.png (the scan's size, 255 = a pixel the restoration refilled): the record of what was
    # acted on, at the restorer's threshold (--only-mask shows the detector's candidates at its own)
    save_mask: bool = False
    # auto: where a gate (fitted with the restorer) judges the scan mildly degraded, give back part of the scan's
    # own tone and detail outside the defects (ops/blend.py; with scope all and tone photo or scan, not when
    # upscaling; before colorizing); off: the restoration as is
    scan_blend: str = "auto"
    # 1: the detector sees each tile as scanned; 2: also each tile shrunk to half size, the two combined with the
    # half-size pass trusted less (stages.detect.TwoScaleDetector): wide defects over smooth content, on scans finer
    # than the training recipe, are otherwise half missed (a quarter more detector time). None: 2 when restoring
    # (its masks restore a little better at every scale tried), 1 with only_mask (the curator's candidates: one
    # pass flags less intact content at the recipe's scale); weights/README.md, twenty-seventh session
    detect_scales: int | None = None
    # a folder of curated defect masks laid out as only_mask writes them (DIR/<path without suffix>.mask.png): a
    # scan's mask there replaces the detector's wherever the restoration uses one (io.mask_file, passes.TiledPass);
    # a scan without one gets the detector's. None: the detector's for every scan
    masks: Path | None = None

    def __post_init__(self) -> None:
        if self.upscale not in UPSCALE_FACTORS:
            raise ValueError(f"upscale must be one of {UPSCALE_FACTORS}, got {self.upscale}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")
        if self.mask_threshold is not None and not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask threshold must be in (0, 1), got {self.mask_threshold}")
        if self.mask_dilate is not None and self.mask_dilate < 0:
            raise ValueError(f"mask dilation must be >= 0 pixels, got {self.mask_dilate}")
        if self.tone is not None and self.tone not in TONE_MODES:
            raise ValueError(f"tone must be one of {TONE_MODES}, got {self.tone!r}")
        if self.tone_strength is not None:
            if not 0.0 <= self.tone_strength <= 1.0:
                raise ValueError(f"tone strength must be in [0, 1], got {self.tone_strength}")
            if self.tone_mode != "photo":
                # with scope defects the tone is the scan's by default, and tone 'photo' is refused there
                why = ("scope 'defects' keeps the scan's tone, and tone 'scan' has none: use it with scope 'all'"
                       if self.tone is None and self.scope == "defects"
                       else f"tone {self.tone_mode!r} has none: use it with tone 'photo'")
                raise ValueError(f"tone strength scales the photo's tone correction; {why}")
        if self.scan_blend not in SCAN_BLENDS:
            raise ValueError(f"scan blend must be one of {SCAN_BLENDS}, got {self.scan_blend!r}")
        if self.detect_scales is not None and self.detect_scales not in DETECT_SCALES:
            raise ValueError(f"detect scales must be one of {DETECT_SCALES}, got {self.detect_scales!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.save_mask and self.only_mask:
            raise ValueError("save_mask writes the mask beside a restoration; only_mask writes it already")
        if self.only_mask and self.colorize:
            raise ValueError("only_mask changes no pixels; colorize adds colour to a restoration: choose one")
        if self.only_mask and self.upscale != 1:
            raise ValueError(f"only_mask writes masks at the scan's size; upscale x{self.upscale} enlarges a "
                             "restoration: choose one")
        if self.scope == "defects":
            if self.only_mask:
                raise ValueError("scope 'defects' changes defect pixels; only_mask changes none: choose one")
            if self.upscale != 1:
                raise ValueError(f"scope 'defects' keeps the scan's own pixels, which cannot be enlarged by upscale "
                                 f"x{self.upscale}: use upscale 1")
            if self.tone not in (None, "scan"):
                raise ValueError(f"scope 'defects' fills defects in the scan's tone; tone {self.tone!r} would "
                                 "not match the untouched pixels: leave tone unset or use tone 'scan'")
        if self.masks is not None and self.only_mask:
            raise ValueError("masks restores with curated masks; only_mask writes the detector's own: choose one")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def dilate_px(self) -> int:
        """Pixels the defect mask is grown by (mask_dilate, or its default for the mode)."""
        if self.mask_dilate is not None:
            return self.mask_dilate
        return 0 if self.only_mask else 1

    @property
    def scales(self) -> int:
        """The detection scales in effect (detect_scales, or its default for the mode)."""
        if self.detect_scales is not None:
            return self.detect_scales
        return 1 if self.only_mask else 2

    @property
    def tone_mode(self) -> str:
        """The tone handling in effect (tone, or its default for the scope)."""
        if self.tone is not None:
            return self.tone
        return "scan" if self.scope == "defects" else "photo"

    @property
    def tone_share(self) -> float:
        """The share of the photo's fitted tone curve that passes.even_tone applies: tone_strength (or its default)
        with tone photo, 0 with scan (the identity); unused with tile."""
        if self.tone_mode != "photo":
            return 0.0
        return TONE_STRENGTH if self.tone_strength is None else self.tone_strength

    @property
    def scan_blend_mode(self) -> str:
        """The scan blend in effect: scan_blend where it applies (restoring the whole photo at scale 1 with tone
        photo or scan), else off."""
        applies = not self.only_mask and self.scope == "all" and self.tone_mode != "tile" and self.upscale == 1
        return self.scan_blend if applies else "off"

    def settings(self) -> dict:
        """Every field, with the defaults that depend on the mode resolved (what the report records): the default
        and the same value given explicitly make the same output."""
        out = {**asdict(self), "mask_dilate": self.dilate_px, "tone": self.tone_mode,
               "tone_strength": self.tone_share if self.tone_mode == "photo" else None,
               "scan_blend": self.scan_blend_mode, "detect_scales": self.scales}
        if self.scales == 1:  # absent at 1: outputs made with one pass before the option existed stay current
            del out["detect_scales"]
        if self.masks is None:
            del out["masks"]  # absent when not used: outputs made before the option existed stay current
        else:
            out["masks"] = str(self.masks)
        return out

    def output_settings(self, default_threshold: float | None = None, written_format: str | None = None,
                        lossless_master: bool = False) -> dict:
        """The settings that change output pixels; used to decide whether an existing output is current.

        A setting that cannot change the outputs is given its default value, so that changing it alone redoes
        nothing and outputs made with the default stay current: jpeg_quality when the restored photo is written as
        PNG or TIFF (--format png or tiff, or `written_format`, the format of one photo's output, "PNG" / "TIFF" /
        "JPEG" / "WEBP", when known), or as WebP from a lossless WebP master (`lossless_master`: the output is
        lossless too, io.writer.webp_is_lossless), format, tone and tone_strength with only_mask (always NAME.mask.png +
        NAME.overlay.jpg, of the scan's own pixels), and mask_threshold when it equals `default_threshold`, the one
        the models would use anyway.
        """
        d = self.settings()
        lossless = written_format in ("PNG", "TIFF") or (written_format == "WEBP" and lossless_master)
        if not self.only_mask and (self.format in ("png", "tiff") or lossless):
            d["jpeg_quality"] = JPEG_QUALITY
        if self.only_mask:
            d["format"] = "keep"
            d["tone"], d["tone_strength"] = "photo", None  # nothing is restored, so nothing is toned
        if default_threshold is not None and d["mask_threshold"] == default_threshold:
            d["mask_threshold"] = None
        for k in ("device", "overwrite", "jobs", "max_pixels"):
            d.pop(k)
        d["tile"].pop("batch_size")
        if d["tile"]["edge_margin"] == 0:
            d["tile"].pop("edge_margin")  # as before the option existed: earlier outputs stay current
        if d["tone_strength"] in (None, 1.0):
            d.pop("tone_strength")  # as before the option existed (all of the curve): earlier outputs stay current
        if d["scan_blend"] == "off":
            d.pop("scan_blend")  # as before the option existed: earlier outputs stay current
        # which mask a scan was restored with is its record's (state.Record.mask) and its outputs' XMP
        # (oldphoto:MaskSHA256), not a setting: a scan without a curated mask is restored with the detector's, --masks
        # or not, so giving --masks redoes only the scans that have one, and moving the folder redoes nothing
        d.pop("masks", None)
        return d
