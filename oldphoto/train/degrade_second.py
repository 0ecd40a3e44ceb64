"""A second degradation generator, designed apart from `degrade`, used only to check generalisation: never trained on.

The hidden evaluation degrades photos with a generator we do not know. Scoring our models on crops from a second,
differently built generator tells how much of their quality is tied to the quirks of the one they learned from
(`benchmarks/cross_generator.py`). What differs from `degrade`:
  damage   anti-aliased Bezier scratches with an additive profile whose strength varies along the stroke, some with
           the dark shoulders of lifted emulsion; polygonal specks; wavy fibres; crazing (branching hairline
           cracks); foxing (soft brown spots); flaked-off losses filled with bare paper, inside or at the border
  ageing   veiling toward a paper tone instead of a gamma/contrast fade; dye loss and yellowing as channel gains;
           duotone toning of mono prints (shadow and highlight colours); radial light fall-off
  scan     3x3 box or anisotropic Gaussian blur; signal-dependent Poisson-Gaussian noise; scanner row banding; JPEG
The mask is what the damage visibly changed in the scan: the print is rendered twice with the same random draws,
with and without the damage, blurred alike, and pixels where any channel differs by more than `visible` are
defects (noise and JPEG come after, on the damaged render only, so they never decide the label).

Images are numpy (H, W, 3) float32 in [0, 1]; the same rng seed gives the same result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .degrade import Degraded, _check
from .degrade_unstructured import _conv, gaussian_kernel_1d, jpeg, luma, smooth_field

SUPERSAMPLE = 4  # strokes are drawn at 4x and box-downsampled: anti-aliased coverage, sub-pixel widths


@dataclass(frozen=True)
class SecondConfig:
    p_damage: float = 0.85  # any damage at all (at least one kind fires when it does)
    p_damage_on_print: float = 0.5  # damage before the ageing (veiled with the print) rather than after it
    p_scratch: float = 0.6  # Bezier scratches
    scratch_count: tuple[int, int] = (1, 8)  # per crop
    scratch_width: tuple[float, float] = (0.5, 10.0)  # px (log-uniform)
    scratch_strength: tuple[float, float] = (0.2, 0.8)  # additive luminance change at full coverage
    p_scratch_bright: float = 0.6  # brighter rather than darker than the content
    p_scratch_emulsion: float = 0.3  # bright core with dark shoulders
    p_speck: float = 0.45  # polygonal specks
    speck_count: tuple[int, int] = (5, 100)  # per 256x256 area
    speck_radius: tuple[float, float] = (0.4, 3.5)  # px (log-uniform)
    p_fibre: float = 0.25  # wavy fibres
    fibre_count: tuple[int, int] = (1, 3)
    fibre_width: tuple[float, float] = (0.6, 1.8)  # px
    p_crazing: float = 0.15  # networks of hairline cracks
    crazing_segments: tuple[int, int] = (30, 120)
    p_foxing: float = 0.25  # brown spots
    foxing_count: tuple[int, int] = (3, 25)
    foxing_radius: tuple[float, float] = (1.0, 8.0)  # px (log-uniform)
    p_loss: float = 0.2  # flaked-off emulsion or torn paper: bare paper
    loss_radius: tuple[float, float] = (6.0, 45.0)  # px
    p_mono: float = 0.4  # B&W print (the target is gray too)
    p_duotone: float = 0.5  # of mono prints: toned between a shadow and a highlight colour
    p_veil: float = 0.5  # fading as veiling toward the paper tone
    veil: tuple[float, float] = (0.1, 0.45)  # mix weight of the paper tone
    p_dye_loss: float = 0.3  # colour prints: per-channel gains
    p_yellowing: float = 0.3  # colour prints: blue (and a little green) lost to yellowed paper
    p_falloff: float = 0.2  # radial light fall-off
    falloff: tuple[float, float] = (0.1, 0.35)  # darkening at the corners
    p_blur: float = 0.5
    p_box_blur: float = 0.3  # of blurs: 3x3 box rather than anisotropic Gaussian
    blur_sigma: tuple[float, float] = (0.3, 1.8)  # per axis
    p_noise: float = 0.6  # Poisson-Gaussian
    noise_gain: tuple[float, float] = (2e-4, 6e-3)  # variance per unit signal (log-uniform)
    noise_floor: tuple[float, float] = (0.002, 0.03)  # std at black (log-uniform)
    p_banding: float = 0.15  # scanner row offsets
    banding: tuple[float, float] = (0.003, 0.015)  # std of the row offsets
    p_jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (25, 90)
    visible: float = 0.06  # label: channel change by the damage above this


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _logu(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


def _count(rng: np.random.Generator, r: tuple[int, int], area_scale: float = 1.0) -> int:
    return max(1, round(int(rng.integers(r[0], r[1] + 1)) * area_scale))


# ---------------------------------------------------------------- drawing

class _Layer:
    """A supersampled 8-bit coverage layer: draw strokes and polygons, read back (H, W) coverage in [0, 1]."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.img = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
        self.draw = ImageDraw.Draw(self.img)

    def line(self, pts: np.ndarray, width: float, value: int = 255) -> None:
        s = SUPERSAMPLE
        self.draw.line([(float(x) * s, float(y) * s) for x, y in pts], fill=value,
                       width=max(1, round(width * s)), joint="curve")

    def polygon(self, pts: np.ndarray, value: int = 255) -> None:
        s = SUPERSAMPLE
        self.draw.polygon([(float(x) * s, float(y) * s) for x, y in pts], fill=value)

    def coverage(self) -> np.ndarray:
        small = self.img.resize((self.w, self.h), Image.Resampling.BOX)
        return np.asarray(small, dtype=np.float32) / 255.0


def _blur2(a: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W) or (H, W, C) array with its own std per axis."""
    squeeze = a.ndim == 2
    x = a[..., None] if squeeze else a
    if sigma_y > 0:
        x = _conv(x, gaussian_kernel_1d(sigma_y)[:, None])
    if sigma_x > 0:
        x = _conv(x, gaussian_kernel_1d(sigma_x)[None, :])
    return x[..., 0] if squeeze else x


def _bezier(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(64, 2) x, y points of a cubic Bezier crossing a good part of an h x w crop."""
    size = max(h, w)
    p0 = np.array([rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h])
    ang = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.3, 1.5) * size
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    p3 = p0 + length * d
    p1 = p0 + length / 3 * d + rng.normal(0, 0.15 * length) * n
    p2 = p0 + 2 * length / 3 * d + rng.normal(0, 0.15 * length) * n
    t = np.linspace(0, 1, 64)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    """(n, 2) vertices of an irregular polygon of mean radius r around (cx, cy)."""
    ang = np.sort(rng.uniform(0, 2 * math.pi, n))
    rad = r * rng.uniform(0.6, 1.3, n)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)


# ---------------------------------------------------------------- damage kinds

def scratches(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    out = img
    for _ in range(_count(rng, cfg.scratch_count)):
        layer = _Layer(h, w)
        width = _logu(rng, cfg.scratch_width)
        layer.line(_bezier(rng, h, w), width)
        a = layer.coverage()
        if rng.random() < 0.4:  # soft edges
            s = rng.uniform(0.3, 1.2)
            a = _blur2(a, s, s)
        a = a * (0.4 + 0.6 * smooth_field(rng, h, w, 3))  # strength varies along the stroke
        amp = _u(rng, cfg.scratch_strength)
        if rng.random() < cfg.p_scratch_emulsion:
            s = max(1.0, width)
            shoulder = np.clip(_blur2(a, s, s) * 2.0 - a, 0, None)
            delta = amp * a - 0.5 * amp * shoulder
        else:
            delta = amp * a * (1.0 if rng.random() < cfg.p_scratch_bright else -1.0)
        out = out + delta[..., None]
    return np.clip(out, 0, 1)


def specks(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    dark, bright = _Layer(h, w), _Layer(h, w)
    for _ in range(_count(rng, cfg.speck_count, h * w / 256 ** 2)):
        r = _logu(rng, cfg.speck_radius)
        pts = _blob(rng, rng.uniform(0, w), rng.uniform(0, h), r, int(rng.integers(5, 9)))
        (dark if rng.random() < 0.5 else bright).polygon(pts)
    a_dark, a_bright = dark.coverage()[..., None], bright.coverage()[..., None]
    out = img * (1 - a_dark) + _u(rng, (0.0, 0.2)) * a_dark
    return out * (1 - a_bright) + _u(rng, (0.85, 1.0)) * a_bright


def fibres(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    out = img
    for _ in range(_count(rng, cfg.fibre_count)):
        layer = _Layer(h, w)
        length = rng.uniform(20, 150)
        ang = rng.uniform(0, 2 * math.pi)
        t = np.linspace(0, 1, 80)
        wave = rng.uniform(2, 15) * np.sin(2 * math.pi * rng.uniform(1, 4) * t + rng.uniform(0, 2 * math.pi))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        pts = np.stack([x0 + length * t * math.cos(ang) - wave * math.sin(ang),
                        y0 + length * t * math.sin(ang) + wave * math.cos(ang)], axis=1)
        layer.line(pts, _u(rng, cfg.fibre_width))
        a = layer.coverage()[..., None] * rng.uniform(0.7, 1.0)
        value = _u(rng, (0.05, 0.3)) if rng.random() < 0.7 else _u(rng, (0.8, 1.0))
        out = out * (1 - a) + value * a
    return out


def crazing(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    layer = _Layer(h, w)
    nodes = [np.array([rng.uniform(0, w), rng.uniform(0, h)])]
    ang = rng.uniform(0, 2 * math.pi)
    width = rng.uniform(0.5, 1.2)
    for _ in range(_count(rng, cfg.crazing_segments)):
        start = nodes[int(rng.integers(len(nodes)))] if rng.random() < 0.3 else nodes[-1]
        ang += rng.normal(0, 0.7)
        end = start + rng.uniform(3, 12) * np.array([math.cos(ang), math.sin(ang)])
        layer.line(np.stack([start, end]), width)
        nodes.append(end)
    a = layer.coverage()[..., None]
    return img * (1 - _u(rng, (0.2, 0.5)) * a)


def foxing(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    layer = _Layer(h, w)
    radii = []
    for _ in range(_count(rng, cfg.foxing_count)):
        r = _logu(rng, cfg.foxing_radius)
        radii.append(r)
        layer.polygon(_blob(rng, rng.uniform(0, w), rng.uniform(0, h), r, 12))
    s = max(0.5, float(np.median(radii)) / 3)
    a = _blur2(layer.coverage(), s, s)[..., None] * rng.uniform(0.4, 1.0)
    brown = np.array([0.72, 0.52, 0.3], np.float32) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    return img * (1 - a) + img * brown * a


def losses(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    h, w = img.shape[:2]
    layer = _Layer(h, w)
    for _ in range(int(rng.integers(1, 3))):
        r = _u(rng, cfg.loss_radius)
        if rng.random() < 0.5:  # torn at the border
            side = int(rng.integers(4))
            along = rng.uniform(0, 1)
            cx, cy = [(along * w, 0), (along * w, h), (0, along * h), (w, along * h)][side]
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        layer.polygon(_blob(rng, cx, cy, r, int(rng.integers(6, 15))))
    a = layer.coverage()[..., None]
    paper = np.array([1.0, 0.97, 0.9], np.float32) * rng.uniform(0.8, 0.97)
    fill = np.clip(paper + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)
    return img * (1 - a) + fill * a


# the ageing and scan switches of SecondConfig: all at 0 leaves the damage alone on the clean photo
STEPS = ("p_mono", "p_veil", "p_dye_loss", "p_yellowing", "p_falloff", "p_blur", "p_noise", "p_banding", "p_jpeg")

KINDS = (("p_scratch", scratches), ("p_speck", specks), ("p_fibre", fibres), ("p_crazing", crazing),
         ("p_foxing", foxing), ("p_loss", losses))


def damage(img: np.ndarray, rng: np.random.Generator, cfg: SecondConfig) -> np.ndarray:
    """Every kind with its probability; at least one (drawn uniformly) when none fired."""
    fired = [fn for p, fn in KINDS if rng.random() < getattr(cfg, p)]
    if not fired:
        fired = [KINDS[int(rng.integers(len(KINDS)))][1]]
    for i in rng.permutation(len(fired)):
        img = fired[i](img, rng, cfg)
    return np.clip(img, 0, 1).astype(np.float32)


# ---------------------------------------------------------------- ageing and scan (parameters drawn once)

def _draw_ageing(rng: np.random.Generator, cfg: SecondConfig, h: int, w: int) -> dict:
    mono = rng.random() < cfg.p_mono
    p: dict = {"mono": mono}
    if mono and rng.random() < cfg.p_duotone:
        p["shadow"] = np.array([0.12, 0.08, 0.05]) + rng.uniform(-0.04, 0.04, 3)
        p["highlight"] = np.array([0.97, 0.93, 0.82]) + rng.uniform(-0.03, 0.03, 3)
    if not mono and rng.random() < cfg.p_dye_loss:
        p["gains"] = rng.uniform(0.8, 1.05, 3)
    if not mono and rng.random() < cfg.p_yellowing:
        p["yellow"] = np.array([1.0, rng.uniform(0.93, 0.99), rng.uniform(0.75, 0.92)])
    if rng.random() < cfg.p_veil:
        p["veil"] = _u(rng, cfg.veil)
        p["paper"] = np.array([0.92, 0.88, 0.78]) + rng.uniform(-0.05, 0.05, 3)
    if rng.random() < cfg.p_falloff:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * (h * h + w * w))
        p["falloff"] = (1 - _u(rng, cfg.falloff) * r2)[..., None]
    return p


def _age(x: np.ndarray, p: dict) -> np.ndarray:
    if p["mono"]:
        lum = luma(x)[..., None]
        if "shadow" in p:
            x = p["shadow"] + (p["highlight"] - p["shadow"]) * lum
        else:
            x = np.repeat(lum, 3, axis=2)
    if "gains" in p:
        x = x * p["gains"]
    if "yellow" in p:
        x = x * p["yellow"]
    if "veil" in p:
        paper = p["paper"] if not p["mono"] or "shadow" in p else np.full(3, float(p["paper"].mean()))
        x = (1 - p["veil"]) * x + p["veil"] * paper
    if "falloff" in p:
        x = x * p["falloff"]
    return np.clip(x, 0, 1).astype(np.float32)


def _draw_blur(rng: np.random.Generator, cfg: SecondConfig) -> tuple[str, float, float] | None:
    if rng.random() >= cfg.p_blur:
        return None
    if rng.random() < cfg.p_box_blur:
        return ("box", 0.0, 0.0)
    return ("gauss", _u(rng, cfg.blur_sigma), _u(rng, cfg.blur_sigma))


def _blur(x: np.ndarray, b: tuple[str, float, float] | None) -> np.ndarray:
    if b is None:
        return x
    if b[0] == "box":
        return _conv(x, np.full((3, 3), 1 / 9, np.float32))
    return _blur2(x, b[1], b[2])


def _scan_noise(x: np.ndarray, rng: np.random.Generator, cfg: SecondConfig, mono: bool) -> np.ndarray:
    h, w = x.shape[:2]
    if rng.random() < cfg.p_noise:
        gain, floor = _logu(rng, cfg.noise_gain), _logu(rng, cfg.noise_floor)
        z = rng.standard_normal((h, w, 1 if mono else 3)).astype(np.float32)
        x = x + np.sqrt(gain * x + floor ** 2) * z
    if rng.random() < cfg.p_banding:
        x = x + rng.normal(0, _u(rng, cfg.banding), (h, 1, 1)).astype(np.float32)
    x = np.clip(x, 0, 1).astype(np.float32)
    if rng.random() < cfg.p_jpeg:
        x = jpeg(x, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)), 2)
    return x


def degrade_second(clean: np.ndarray, rng: np.random.Generator, cfg: SecondConfig = SecondConfig()) -> Degraded:
    """Turn a clean photo into a scan of an old print with this module's recipe.

    clean: (H, W, 3) float in [0, 1], H, W >= 16. Returns Degraded(image (H, W, 3) float32 in [0, 1],
    mask (H, W) float32 in {0, 1}, gray: True for mono prints, whose target is the luma of `clean`).
    """
    x = _check(clean, "clean image")
    h, w = x.shape[:2]
    ageing = _draw_ageing(rng, cfg, h, w)
    blur = _draw_blur(rng, cfg)
    if rng.random() < cfg.p_damage:
        if rng.random() < cfg.p_damage_on_print:
            damaged, intact = _age(damage(x, rng, cfg), ageing), _age(x, ageing)
        else:
            intact = _age(x, ageing)
            damaged = damage(intact, rng, cfg)
        damaged, intact = _blur(damaged, blur), _blur(intact, blur)
        mask = (np.abs(damaged - intact).max(axis=2) > cfg.visible).astype(np.float32)
    else:
        damaged = _blur(_age(x, ageing), blur)
        mask = np.zeros((h, w), np.float32)
    out = _scan_noise(np.clip(damaged, 0, 1), rng, cfg, ageing["mono"] and "shadow" not in ageing)
    return Degraded(image=out, mask=mask, gray=bool(ageing["mono"]))
