"""Unstructured degradations: how a print ages (fading, colour cast, toning, stains, grain, halftone) and how it
is scanned (blur, noise, resampling, JPEG).

Primitive ops take explicit parameters so they can be tested one by one; `age_print` and `scan` draw the
parameters from a numpy Generator and a DegradeConfig. Images are numpy (H, W, C) float32 in [0, 1]; the
spatial ops (blurs, resampling) accept any C, so the caller can carry a defect-opacity channel along with RGB.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from .degrade import DegradeConfig

# Rec. 601 luma weights, the same as Pillow's convert("L"), so a gray file made by Pillow matches our gray.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Channel gammas of toned mono prints: out_c = L ** gamma_c keeps black and white neutral and tints mid-tones.
TONES = {
    "sepia": (0.82, 1.0, 1.32),
    "selenium": (0.93, 1.08, 1.0),  # purple-brown
    "gold": (1.08, 1.02, 0.93),  # blue-black
    "cyanotype": (1.7, 1.2, 0.78),
    "warm": (0.9, 1.0, 1.2),  # warm-black paper
}


def luma(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] -> (H, W) Rec. 601 luma in [0, 1]."""
    return x @ LUMA


# ---------------------------------------------------------------- torch helpers

def _to_t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def _to_np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t[0].numpy().transpose(1, 2, 0))


def _conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Depthwise 2-D convolution of (H, W, C) with a (kh, kw) kernel; borders replicate (any image size works)."""
    kh, kw = kernel.shape
    t = _to_t(x)
    c = t.shape[1]
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32)).expand(c, 1, kh, kw)
    t = F.pad(t, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return _to_np(F.conv2d(t, k, groups=c))


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
    return g / g.sum()


# ---------------------------------------------------------------- blur

def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with standard deviation `sigma` px."""
    if sigma <= 0:
        return x
    g = gaussian_kernel_1d(sigma)
    return _conv(_conv(x, g[None, :]), g[:, None])


def disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disk (defocus point spread function), sums to 1."""
    r = math.ceil(radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    k = np.clip(radius + 0.5 - np.hypot(yy, xx), 0, 1)
    return k / k.sum()


def defocus_blur(x: np.ndarray, radius: float) -> np.ndarray:
    """Out-of-focus blur: convolution with a disk of `radius` px."""
    return _conv(x, disk_kernel(radius))


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A line segment of `length` px at `angle` radians, splatted bilinearly; sums to 1."""
    r = math.ceil(length / 2) + 1
    t = np.linspace(-length / 2, length / 2, max(2, int(length * 4)), dtype=np.float32)
    px, py = r + t * math.cos(angle), r + t * math.sin(angle)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return k / k.sum()


def motion_blur(x: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Camera/scanner shake: convolution with a `length` px line at `angle` radians."""
    return _conv(x, motion_kernel(length, angle))


# ---------------------------------------------------------------- noise

def gaussian_noise(x: np.ndarray, rng: np.random.Generator, sigma: float, mono: bool) -> np.ndarray:
    """Additive white noise of std `sigma`; `mono` uses one field for all channels (luminance noise)."""
    h, w, c = x.shape
    n = rng.standard_normal((h, w, 1 if mono else c), dtype=np.float32)
    return np.clip(x + sigma * n, 0, 1)


def speckle_noise(x: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Multiplicative noise x * (1 + sigma * n): stronger in bright areas."""
    n = rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x * (1 + sigma * n), 0, 1)


def salt_pepper_noise(x: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A fraction `amount` of the pixels set to black or white (half each)."""
    u = rng.random(x.shape[:2], dtype=np.float32)
    out = x.copy()
    out[u < amount / 2] = 0.0
    out[u > 1 - amount / 2] = 1.0
    return out


def film_grain(x: np.ndarray, rng: np.random.Generator, strength: float, size: float, mono: bool) -> np.ndarray:
    """Grain of silver/dye clumps: noise blurred to `size` px, strongest in the mid-tones.

    The blurred field is rescaled to unit std so `strength` is the mid-tone std whatever the grain size.
    """
    h, w, c = x.shape
    n = rng.standard_normal((h, w, 1 if mono else c), dtype=np.float32)
    n = gaussian_blur(n, size)
    n /= max(float(n.std()), 1e-6)
    y = luma(x)[..., None]
    amp = strength * (0.25 + 3.0 * y * (1 - y))  # 0.25 at black/white, 1.0 at mid-gray
    return np.clip(x + amp * n, 0, 1)


# ---------------------------------------------------------------- resampling and compression

def resample(x: np.ndarray, factor: float, down: str, up: str) -> np.ndarray:
    """Down-sample by `factor` (< 1) with mode `down`, back to the original size with mode `up`.

    Modes: "nearest", "area", "bilinear", "bicubic" (down) / "nearest", "bilinear", "bicubic" (up).
    """
    h, w = x.shape[:2]
    size = (max(2, round(h * factor)), max(2, round(w * factor)))
    t = _to_t(x)
    aa = down in ("bilinear", "bicubic")
    kw = {"align_corners": False} if down in ("bilinear", "bicubic") else {}
    t = F.interpolate(t, size=size, mode=down, antialias=aa, **kw)
    kw = {"align_corners": False} if up in ("bilinear", "bicubic") else {}
    t = F.interpolate(t, size=(h, w), mode=up, **kw)
    return np.clip(_to_np(t), 0, 1)


def jpeg(x: np.ndarray, quality: int, subsampling: int) -> np.ndarray:
    """Round trip through Pillow's JPEG codec. subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0. (H, W, 3) only."""
    img = Image.fromarray((x * 255 + 0.5).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality), subsampling=int(subsampling))
    buf.seek(0)
    with Image.open(buf) as out:
        return np.asarray(out.convert("RGB"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------- print ageing

def fade(x: np.ndarray, contrast: float, gamma: float, black: float, white: float) -> np.ndarray:
    """Faded print: gamma shift, contrast shrunk by `contrast` around the mean, blacks lifted to `black`,
    whites dulled to `white`."""
    y = x ** gamma
    m = float(y.mean())
    y = m + contrast * (y - m)
    return np.clip(black + (white - black) * y, 0, 1)


def color_cast(x: np.ndarray, gains: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Per-channel gain and offset, (3,) each: dye fading and yellowed paper."""
    return np.clip(x * gains.astype(np.float32) + offset.astype(np.float32), 0, 1)


def desaturate(x: np.ndarray, keep: float) -> np.ndarray:
    """Move colours toward their luma, keeping a fraction `keep` of the chroma."""
    y = luma(x)[..., None]
    return np.clip(y + keep * (x - y), 0, 1)


def tone(x: np.ndarray, gammas: tuple[float, float, float]) -> np.ndarray:
    """Mono print: luma L, channel c = L ** gammas[c]; gammas (1, 1, 1) is plain B&W (equal channels)."""
    y = np.clip(luma(x), 0, 1)[..., None]
    return y ** np.asarray(gammas, dtype=np.float32)


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency random field (H, W) in [0, 1]: a `cells`-wide random grid upsampled bicubically."""
    gh = max(2, round(cells * h / max(h, w)))
    gw = max(2, round(cells * w / max(h, w)))
    g = torch.from_numpy(rng.random((1, 1, gh + 2, gw + 2), dtype=np.float32))
    f = F.interpolate(g, size=(h + 2 * h // gh, w + 2 * w // gw), mode="bicubic", align_corners=False)
    f = f[0, 0, h // gh:h // gh + h, w // gw:w // gw + w].numpy()  # drop the border cells' overshoot
    lo, hi = float(f.min()), float(f.max())
    return (f - lo) / max(hi - lo, 1e-6)


def stain(x: np.ndarray, field: np.ndarray, color: np.ndarray, strength: float) -> np.ndarray:
    """Diffuse stain: multiply toward `color` (3,) by `strength` * `field` (H, W) in [0, 1]."""
    wgt = (strength * field)[..., None]
    return np.clip(x * (1 - wgt + wgt * color.astype(np.float32)), 0, 1)


def exposure_gain(h: int, w: int, vignette: float, gradient: float, angle: float) -> np.ndarray:
    """(H, W) gain: radial fall-off to 1 - `vignette` in the corners times a linear ramp of +-`gradient`."""
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    r2 = (xx * xx + yy * yy) / 2
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    return (1 - vignette * r2) * (1 + gradient * ramp)


def halftone(x: np.ndarray, period: float, angles: tuple[float, float, float], mono: bool) -> np.ndarray:
    """Printed reproduction: an anti-aliased dot screen of `period` px per channel (or on luma when `mono`)."""
    h, w = x.shape[:2]
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    src = luma(x)[..., None] if mono else x
    out = np.empty_like(src)
    k = 2 * math.pi / period
    for c in range(src.shape[2]):
        ca, sa = math.cos(angles[c]), math.sin(angles[c])
        u, v = xx * ca + yy * sa, yy * ca - xx * sa
        screen = 0.5 + 0.25 * (np.cos(k * u) + np.cos(k * v))
        out[..., c] = np.clip(0.5 + (src[..., c] - screen) * period * 0.7, 0, 1)
    return np.repeat(out, 3, axis=2) if mono else out


# ---------------------------------------------------------------- random recipes

def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _logu(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))


def age_print(x: np.ndarray, rng: np.random.Generator, cfg: "DegradeConfig") -> tuple[np.ndarray, bool]:
    """Ageing of the print, each op with its probability, in random order. Returns (image, gray) where gray
    tells that the print was made B&W or toned mono."""
    h, w = x.shape[:2]
    gray = False
    u = rng.random()
    if u < cfg.p_bw:
        gray_tone: tuple[float, float, float] | None = (1.0, 1.0, 1.0)
    elif u < cfg.p_bw + cfg.p_toned:
        name = list(TONES)[rng.integers(len(TONES))]
        strength = rng.uniform(0.6, 1.4)  # scales the tint, never cancels it
        gray_tone = tuple(float(g) for g in 1 + (np.asarray(TONES[name]) - 1) * strength)
    else:
        gray_tone = None

    def do_tone(img):
        return tone(img, gray_tone)

    def do_fade(img):
        return fade(img, _u(rng, cfg.fade_contrast), _logu(rng, cfg.fade_gamma), _u(rng, cfg.fade_black),
                    _u(rng, cfg.fade_white))

    def do_cast(img):
        s = _u(rng, cfg.cast_strength)
        # old colour prints lose cyan dye first (red/magenta cast) and the paper yellows; otherwise random
        direction = [np.array([1.0, -0.2, -0.8]), np.array([0.6, -0.7, 0.3]), np.array([0.3, 0.1, -1.0]),
                     rng.normal(0, 1, 3)][rng.integers(4)]
        direction = direction / max(float(np.abs(direction).max()), 1e-6)
        gains = 1 + s * direction
        offset = rng.normal(0, s / 4, 3)
        return color_cast(img, gains, offset)

    def do_desat(img):
        return desaturate(img, _u(rng, cfg.desaturate_keep))

    def do_stain(img):
        field = smooth_field(rng, h, w, int(rng.integers(3, 9)))
        t = rng.uniform(0.3, 0.7)  # only the upper part of the field stains: separate patches
        field = np.clip((field - t) / (1 - t), 0, 1)
        color = np.array([1.0, rng.uniform(0.7, 0.9), rng.uniform(0.35, 0.7)])
        return stain(img, field, color, _u(rng, cfg.stain_strength))

    def do_exposure(img):
        g = exposure_gain(h, w, _u(rng, cfg.vignette), _u(rng, cfg.exposure_gradient), rng.uniform(0, 2 * math.pi))
        return np.clip(img * g[..., None], 0, 1)

    def do_grain(img):
        return film_grain(img, rng, _u(rng, cfg.grain_strength), _u(rng, cfg.grain_size),
                          mono=gray or bool(rng.random() < 0.6))

    def do_halftone(img):
        a = rng.uniform(0, math.pi / 2)
        return halftone(img, _u(rng, cfg.halftone_period), (a + 0.26, a + 1.31, a), mono=gray)

    ops = []
    if gray_tone is not None:
        ops.append(do_tone)
    for p, op in ((cfg.p_fade, do_fade), (cfg.p_color_cast, do_cast), (cfg.p_desaturate, do_desat),
                  (cfg.p_stain, do_stain), (cfg.p_exposure, do_exposure), (cfg.p_grain, do_grain),
                  (cfg.p_halftone, do_halftone)):
        if rng.random() < p:
            ops.append(op)
    for i in rng.permutation(len(ops)):
        if ops[i] is do_tone:
            gray = True
        x = ops[i](x)
    return x.astype(np.float32, copy=False), gray


def scan(x: np.ndarray, alpha: np.ndarray | None, rng: np.random.Generator, cfg: "DegradeConfig"
         ) -> tuple[np.ndarray, np.ndarray | None]:
    """Scanning of the print: blur, noise, down-and-up sampling and JPEG, each with its probability, in random
    order. `alpha` (H, W), the defects' visible change, goes through the same blurs and resampling as the image so the
    mask keeps matching what is visible; it is returned alongside (None stays None)."""

    def spatial(op, img, a):
        if a is None:
            return op(img), None
        both = op(np.concatenate([img, a[..., None]], axis=2))
        return both[..., :3], both[..., 3]

    def do_blur(img, a):
        kind = rng.choice(3, p=np.asarray(cfg.blur_kind_weights) / sum(cfg.blur_kind_weights))
        if kind == 0:
            s = _logu(rng, cfg.blur_sigma)
            return spatial(lambda t: gaussian_blur(t, s), img, a)
        if kind == 1:
            r = _u(rng, cfg.defocus_radius)
            return spatial(lambda t: defocus_blur(t, r), img, a)
        n, ang = _u(rng, cfg.motion_length), rng.uniform(0, math.pi)
        return spatial(lambda t: motion_blur(t, n, ang), img, a)

    def do_noise(img, a):
        kind = rng.choice(3, p=np.asarray(cfg.noise_kind_weights) / sum(cfg.noise_kind_weights))
        if kind == 0:
            return gaussian_noise(img, rng, _logu(rng, cfg.noise_sigma), mono=bool(rng.random() < 0.5)), a
        if kind == 1:
            return speckle_noise(img, rng, _logu(rng, cfg.speckle_sigma)), a
        return salt_pepper_noise(img, rng, _logu(rng, cfg.salt_pepper_amount)), a

    def do_resample(img, a):
        f = _u(rng, cfg.resample_factor)
        down = ("nearest", "area", "bilinear", "bicubic")[rng.integers(4)]
        up = ("nearest", "bilinear", "bicubic")[rng.integers(3)]
        return spatial(lambda t: resample(t, f, down, up), img, a)

    def do_jpeg(img, a):
        return jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)), int(rng.integers(3))), a

    ops = [op for p, op in ((cfg.p_blur, do_blur), (cfg.p_noise, do_noise), (cfg.p_resample, do_resample),
                            (cfg.p_jpeg, do_jpeg)) if rng.random() < p]
    for i in rng.permutation(len(ops)):
        x, alpha = ops[i](x, alpha)
    return x.astype(np.float32, copy=False), alpha
