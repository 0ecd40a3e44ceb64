"""Synthetic old-photo degradation: clean photo -> (degraded photo, defect mask, gray flag).

The recipe follows the physical order with random order inside each step:
  1. ageing of the print (degrade_unstructured.age_print): fading, colour cast, desaturation, B&W or toned mono,
     diffuse stains, uneven exposure / vignetting, film grain, now and then a halftone screen;
  2. physical damage (degrade_structured.damage): scratches, dust, hairs, creases, tears, blotches, textures;
     crazing, foxing and flaking when switched on (off by default);
  3. scanning (degrade_unstructured.scan): Gaussian / defocus / motion blur, Gaussian / speckle / salt-and-pepper
     noise, down-and-up sampling, JPEG.
With probability p_damage_after_scan the damage is painted last instead (sharp defects on a soft scan), which
some other generators do; the models should not depend on either order.

Mask rule: a pixel is a defect when the structured defects changed it visibly: their change to the pixel (max
over channels, counted where their union opacity exceeds mask_threshold; crease shading and paper texture, never
in the mask, are not part of that change), carried through any later blur or resampling like the image, exceeds
visible_delta. So the mask is what a viewer sees as damage: faint texture overlays, defects that vanished in a
strong blur and defects the colour of what they cover are not in it, while a low-opacity line that stands out on a
dark area is.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from .degrade_structured import AGEING_PAINTERS, PAINTERS, damage
from .degrade_unstructured import age_print, scan

MIN_SIDE = 16  # smaller crops cannot hold the defects meaningfully
# p_* fields of DegradeConfig that choose *how* a step looks (bright or dark, soft, straight, before or after the
# scan) rather than whether it happens; scaling a recipe's probabilities leaves these alone
WITHIN_STEP = frozenset({"p_scratch_bright", "p_scratch_soft", "p_scratch_straight", "p_dust_bright",
                         "p_damage_after_scan"})

# the recipe's families of degradation, each named by the p_* fields that switch it on (structured ones also need
# p_structured); family_recipe() makes a recipe of some of them alone
FAMILIES = {
    "fade": ("p_fade",), "cast+desat": ("p_color_cast", "p_desaturate"), "toned": ("p_toned",),
    "stain": ("p_stain",), "exposure": ("p_exposure",), "grain": ("p_grain",), "blur": ("p_blur",),
    "noise": ("p_noise",), "resample": ("p_resample",), "jpeg": ("p_jpeg",),
    "scratch": ("p_structured", "p_scratch"), "dust": ("p_structured", "p_dust"),
    "blotch+tear+crease": ("p_structured", "p_blotch", "p_tear", "p_crease"),
    "texture": ("p_structured", "p_texture"),
}


@dataclass(frozen=True)
class DegradeConfig:
    # ---- print ageing (each with its probability, random order)
    p_fade: float = 0.5  # faded print
    fade_contrast: tuple[float, float] = (0.5, 1.0)  # contrast kept around the mean
    fade_gamma: tuple[float, float] = (0.7, 1.4)  # gamma applied before the contrast loss (log-uniform)
    fade_black: tuple[float, float] = (0.0, 0.22)  # black level after fading (lifted blacks)
    fade_white: tuple[float, float] = (0.82, 1.0)  # white level after fading (dull highlights)
    p_color_cast: float = 0.4  # colour cast (dye fading, yellowed paper)
    cast_strength: tuple[float, float] = (0.03, 0.2)  # largest relative channel gain change
    p_desaturate: float = 0.3  # washed-out colours
    desaturate_keep: tuple[float, float] = (0.15, 0.85)  # fraction of chroma kept
    p_bw: float = 0.3  # B&W print (gray=True)
    p_toned: float = 0.15  # toned mono print: sepia, selenium, gold, cyanotype, warm (gray=True)
    p_stain: float = 0.3  # diffuse low-frequency stains (not in the mask)
    stain_strength: tuple[float, float] = (0.1, 0.5)  # pull toward the stain colour at the stain centres
    p_exposure: float = 0.35  # uneven exposure and vignetting
    vignette: tuple[float, float] = (0.0, 0.45)  # relative darkening in the corners
    exposure_gradient: tuple[float, float] = (0.0, 0.2)  # +- gain of a linear ramp across the print
    p_grain: float = 0.35  # film grain
    grain_strength: tuple[float, float] = (0.01, 0.07)  # grain std in the mid-tones
    grain_size: tuple[float, float] = (0.4, 1.5)  # blur of the grain field, px
    p_halftone: float = 0.04  # printed reproduction (dot screen)
    halftone_period: tuple[float, float] = (3.0, 6.0)  # screen period, px
    # ---- structured damage (ground truth of the mask)
    p_structured: float = 0.85  # damage at all
    p_damage_after_scan: float = 0.2  # paint the damage after the scan step instead of before it
    p_scratch: float = 0.65  # long thin scratches
    scratch_count: tuple[int, int] = (1, 10)  # per image
    scratch_width: tuple[float, float] = (1.0, 15.0)  # px, read at the image's defect scale
    scratch_opacity: tuple[float, float] = (0.5, 1.0)  # peak opacity; it varies along the scratch
    p_scratch_bright: float = 0.7  # bright (scraped emulsion) rather than dark
    p_scratch_soft: float = 0.35  # soft-edged
    p_scratch_straight: float = 0.4  # near-straight rather than wandering
    p_dust: float = 0.45  # dust and specks
    dust_count: tuple[int, int] = (3, 80)  # per 256x256 area
    dust_radius: tuple[float, float] = (0.6, 5.0)  # px, median at the defect scale
    p_dust_bright: float = 0.5  # bright rather than dark specks
    p_hair: float = 0.25  # hairs and fibres
    hair_count: tuple[int, int] = (1, 4)  # per image
    hair_width: tuple[float, float] = (0.8, 4.0)  # px, at the defect scale
    hair_length: tuple[float, float] = (0.05, 0.35)  # fraction of the short side
    p_crease: float = 0.2  # folds
    crease_count: tuple[int, int] = (1, 2)  # per image
    crease_width: tuple[float, float] = (1.0, 8.0)  # cracked core, px, at the defect scale
    p_tear: float = 0.12  # torn or missing corners and edges
    tear_count: tuple[int, int] = (1, 2)  # per image
    tear_size: tuple[float, float] = (0.06, 0.3)  # fraction of the short side
    tear_rim_width: tuple[float, float] = (1.0, 5.0)  # white torn-paper rim, px, at the defect scale
    p_blotch: float = 0.25  # stains and emulsion losses that obliterate content
    blotch_count: tuple[int, int] = (1, 4)  # per image
    blotch_size: tuple[float, float] = (0.04, 0.3)  # fraction of the short side, at the defect scale
    p_texture: float = 0.35  # scratch or paper texture overlay
    texture_opacity: tuple[float, float] = (0.1, 0.7)  # blend opacity
    paper_opacity_max: float = 0.3  # paper textures stay faint (never in the mask)
    # ageing damage, off by default so the fixed evaluation sets stay as they were (detector.Config.p_ageing turns
    # it on for training)
    p_crazing: float = 0.0  # craquelure: cells outlined by hairline cracks over a patch of the print
    craze_cell: tuple[float, float] = (6.0, 40.0)  # cell size, px, at the defect scale
    craze_width: tuple[float, float] = (0.5, 2.0)  # crack width, px, at the defect scale
    p_foxing: float = 0.0  # rust-brown spots
    foxing_count: tuple[int, int] = (2, 30)  # per 256x256 area
    foxing_radius: tuple[float, float] = (1.0, 10.0)  # px, median at the defect scale
    p_flaking: float = 0.0  # hard-edged patches of lost emulsion inside the picture
    flake_size: tuple[float, float] = (0.03, 0.2)  # fraction of the short side, at the defect scale
    # ---- scanning (each with its probability, random order)
    p_blur: float = 0.55  # any blur
    blur_kind_weights: tuple[float, float, float] = (0.6, 0.25, 0.15)  # Gaussian, defocus, motion
    blur_sigma: tuple[float, float] = (0.4, 2.5)  # Gaussian std, px (log-uniform)
    defocus_radius: tuple[float, float] = (1.0, 3.5)  # disk radius, px
    motion_length: tuple[float, float] = (2.0, 9.0)  # line length, px
    p_noise: float = 0.6  # any noise
    noise_kind_weights: tuple[float, float, float] = (0.6, 0.25, 0.15)  # Gaussian, speckle, salt-and-pepper
    noise_sigma: tuple[float, float] = (0.005, 0.12)  # Gaussian std (log-uniform)
    speckle_sigma: tuple[float, float] = (0.02, 0.25)  # relative std (log-uniform)
    salt_pepper_amount: tuple[float, float] = (0.0005, 0.01)  # fraction of pixels (log-uniform)
    p_resample: float = 0.4  # down-and-up sampling
    resample_factor: tuple[float, float] = (0.3, 0.9)  # down-sampling factor
    p_jpeg: float = 0.5  # JPEG round trip
    jpeg_quality: tuple[int, int] = (30, 95)  # Pillow quality, inclusive
    # ---- mask rule
    visible_delta: float = 0.06  # a mask pixel was changed by the defects by more than this (~15/255), after blur
    mask_threshold: float = 0.02  # defect opacity below which a pixel's change is not counted (soft fringes)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1], got {v}")
            if isinstance(v, tuple) and f.name.endswith("_weights"):
                if len(v) != 3 or min(v) < 0 or sum(v) <= 0:
                    raise ValueError(f"{f.name} must be 3 non-negative weights with a positive sum, got {v}")
            elif isinstance(v, tuple) and (len(v) != 2 or v[0] > v[1] or v[0] < 0):
                raise ValueError(f"{f.name} must be a range (lo, hi) with 0 <= lo <= hi, got {v}")
        if self.p_bw + self.p_toned > 1:
            raise ValueError(f"p_bw + p_toned must be <= 1, got {self.p_bw} + {self.p_toned}")
        for name in ("scratch_width", "dust_radius", "hair_width", "crease_width", "tear_rim_width", "blotch_size",
                     "craze_cell", "craze_width", "foxing_radius", "flake_size",
                     "fade_gamma", "blur_sigma", "noise_sigma", "speckle_sigma", "salt_pepper_amount"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be positive (read on a log scale), got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")


def scaled_recipe(scale: float, base: "DegradeConfig | None" = None) -> DegradeConfig:
    """`base` (default: the default recipe) with the probability of every step (p_*) multiplied by `scale`; the
    choices within a step (WITHIN_STEP: bright or dark, soft, straight, before or after the scan) stay."""
    base = DegradeConfig() if base is None else base
    return replace(base, **{f.name: getattr(base, f.name) * scale for f in fields(base)
                            if f.name.startswith("p_") and f.name not in WITHIN_STEP})


def ageing_recipe(p: float, base: "DegradeConfig | None" = None) -> DegradeConfig:
    """`base` (default: the default recipe) with each ageing damage kind (AGEING_PAINTERS: crazing, foxing,
    flaking) at probability p; p 0 leaves them off, as in the default recipe."""
    base = DegradeConfig() if base is None else base
    return replace(base, **{name: p for name, _ in AGEING_PAINTERS})


def sharp_recipe(scale: float, base: "DegradeConfig | None" = None) -> DegradeConfig:
    """`base` (default: the default recipe) with the probability of every unstructured step (ageing and scanning:
    fading, blur, noise, JPEG, ...) multiplied by `scale`, and the damage (p_structured and each kind of defect)
    as it is: damaged but otherwise crisp scans, where sharp content edges sit beside the defects."""
    base = DegradeConfig() if base is None else base
    keep = {"p_structured", *(p for p, _ in PAINTERS + AGEING_PAINTERS)}
    scaled = scaled_recipe(scale, base)
    return replace(scaled, **{p: getattr(base, p) for p in keep})


def family_recipe(*names: str) -> DegradeConfig:
    """Only the named FAMILIES, each for certain (its p_* set to 1); every other step off. No name: a clean crop."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown degradation families {unknown}; known: {sorted(FAMILIES)}")
    return replace(scaled_recipe(0.0), **{p: 1.0 for n in names for p in FAMILIES[n]})


@dataclass
class Degraded:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1], degraded
    mask: np.ndarray  # (H, W) float32 in {0, 1}: 1 where a structured defect replaced content
    gray: bool  # True when the photo was turned into a B&W or toned mono print


def _check(img: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", type(img).__name__)
        raise ValueError(f"{what} must be an (H, W, 3) array, got {shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{what} must be float in [0, 1], got dtype {img.dtype} with shape {img.shape}")
    if min(img.shape[:2]) < MIN_SIDE:
        raise ValueError(f"{what} must be at least {MIN_SIDE}x{MIN_SIDE}, got shape {img.shape}")
    lo, hi = float(img.min()), float(img.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or not np.isfinite(lo + hi):
        raise ValueError(f"{what} values must be in [0, 1], got [{lo}, {hi}] with shape {img.shape}")
    return np.clip(img.astype(np.float32), 0, 1)  # a copy: the caller's array is never modified


def degrade(clean: np.ndarray, rng: np.random.Generator, cfg: DegradeConfig = DegradeConfig()) -> Degraded:
    """Turn a clean photo into a synthetic old-photo scan.

    clean: (H, W, 3) float in [0, 1], H, W >= 16. The same rng seed gives the same result.
    Returns Degraded(image (H, W, 3) float32 in [0, 1], mask (H, W) float32 in {0, 1}, gray).
    """
    x = _check(clean, "clean image")
    x, gray = age_print(x, rng, cfg)
    alpha = None
    structured = rng.random() < cfg.p_structured
    late = rng.random() < cfg.p_damage_after_scan
    if structured and not late:
        x, alpha = damage(x, rng, cfg)
    x, alpha = scan(x, alpha, rng, cfg)
    if structured and late:
        x, alpha = damage(x, rng, cfg)
    if alpha is None:
        mask = np.zeros(x.shape[:2], np.float32)
    else:
        mask = (alpha > cfg.visible_delta).astype(np.float32)
    return Degraded(image=np.clip(x, 0, 1).astype(np.float32, copy=False), mask=mask, gray=bool(gray))


def structured_defects(img: np.ndarray, rng: np.random.Generator, cfg: DegradeConfig = DegradeConfig()
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Only the structured damage, e.g. for training the detector on otherwise clean photos.

    img: (H, W, 3) float in [0, 1]. Returns (image (H, W, 3) float32 in [0, 1], mask (H, W) float32 in {0, 1}).
    Each defect kind fires with its cfg probability (p_structured is not consulted: damage always runs).
    """
    x = _check(img, "image")
    out, alpha = damage(x, rng, cfg)
    return out, (alpha > cfg.visible_delta).astype(np.float32)
