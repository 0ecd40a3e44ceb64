"""Structured defects: physical damage that replaces content (scratches, dust, hairs, creases, tears, blotches,
scratch/paper textures; and, off by default, crazing, foxing and flaking). Each painter returns the image and the
per-pixel opacity of what it painted, so the caller can build the ground-truth mask; what a painter changes but is
never in the mask (crease shading, paper texture) it also applies to `ref`, the image without the masked damage,
which the change is measured against.

Sizes follow one per-image "defect scale" u in [0, 1]: every size range (lo, hi) is read at lo * (hi/lo) ** u,
with some jitter per defect, so the same kind of scratch is 1 px wide in one file and 12 px in another, as with
scans of the same print at different resolutions. Thin lines are drawn with Pillow at 2x and box-reduced
(anti-aliasing). Images are (H, W, 3) float32 in [0, 1]; opacities (H, W) float32 in [0, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .degrade_unstructured import gaussian_blur, smooth_field

if TYPE_CHECKING:
    from .degrade import DegradeConfig

SS = 2  # supersampling of the drawing canvases

BLEND_MODES = ("add", "lighten", "screen", "multiply")


def at_scale(r: tuple[float, float], u: float) -> float:
    """Read the range `r` at the defect scale u in [0, 1] (log scale)."""
    return r[0] * (r[1] / r[0]) ** min(max(u, 0.0), 1.0)


def blend(img: np.ndarray, layer: np.ndarray, mode: str, opacity: float) -> np.ndarray:
    """Blend a defect layer (H, W) or (H, W, 3) in [0, 1] (0 = no defect) into `img` with `opacity`.

    add: img + layer; lighten: max(img, layer); screen: 1 - (1 - img)(1 - layer); multiply: img * (1 - layer)
    (the layer is the amount of darkening, so dark scratches come out of the same bright-on-black texture).
    """
    if layer.ndim == 2:
        layer = layer[..., None]
    if mode == "add":
        out = img + layer
    elif mode == "lighten":
        out = np.maximum(img, layer)
    elif mode == "screen":
        out = 1 - (1 - img) * (1 - layer)
    elif mode == "multiply":
        out = img * (1 - layer)
    else:
        raise ValueError(f"unknown blend mode {mode!r}; known: {', '.join(BLEND_MODES)}")
    return np.clip(img + opacity * (out - img), 0, 1)


def composite(img: np.ndarray, alpha: np.ndarray, a: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Paint `color` (3,) with opacity `a` (H, W) over `img` in place; accumulate the union opacity in `alpha`."""
    a3 = a[..., None]
    img *= 1 - a3
    img += a3 * np.asarray(color, dtype=np.float32)
    alpha += a - alpha * a
    return img


class Canvas:
    """A 2x supersampled 8-bit opacity canvas; `opacity()` returns (H, W) float32 in [0, 1]."""

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.img = Image.new("L", (w * SS, h * SS), 0)
        self.draw = ImageDraw.Draw(self.img)

    def polyline(self, pts: np.ndarray, width: float | np.ndarray, opac: float | np.ndarray) -> None:
        """Points (N, 2) as (x, y) in image pixels; `width` (px) and `opac` per segment (N-1,) or one value."""
        p = pts * SS
        if np.isscalar(width) and np.isscalar(opac):
            wpx = max(1, round(width * SS))
            self.draw.line([tuple(q) for q in p.tolist()], fill=int(opac * 255), width=wpx, joint="curve")
            return
        n = len(p) - 1
        fills = (np.broadcast_to(np.asarray(opac, dtype=np.float64), (n,)) * 255).astype(int).tolist()
        wpxs = np.maximum(1, np.round(np.broadcast_to(np.asarray(width, dtype=np.float64), (n,)) * SS)).astype(int)
        pl = p.tolist()
        for i, (f, wpx) in enumerate(zip(fills, wpxs.tolist())):
            self.draw.line([tuple(pl[i]), tuple(pl[i + 1])], fill=f, width=wpx)
            if wpx > 3:  # round joints so wide segments leave no notches
                x, y = pl[i + 1]
                r = wpx / 2
                self.draw.ellipse([x - r, y - r, x + r, y + r], fill=f)

    def polygon(self, pts: np.ndarray, opac: float) -> None:
        self.draw.polygon([tuple(q) for q in (pts * SS).tolist()], fill=int(opac * 255))

    def opacity(self, soften: float = 0.0) -> np.ndarray:
        im = self.img.reduce(SS)
        if soften > 0:
            im = im.filter(ImageFilter.GaussianBlur(soften))
        return np.asarray(im, dtype=np.float32) / 255.0


def random_walk(rng: np.random.Generator, h: int, w: int, length: float, step: float, turn: float,
                angle: float | None = None) -> np.ndarray:
    """A curve (N, 2) of (x, y) through a random point of the image, `length` px long, heading changing by a
    random walk of `turn` radians per `step` px (0: straight)."""
    n = max(2, int(length / step))
    a0 = rng.uniform(0, 2 * math.pi) if angle is None else angle
    dtheta = rng.normal(0, turn, n - 1) if turn > 0 else np.zeros(n - 1)
    heading = a0 + np.cumsum(dtheta)
    d = np.stack([np.cos(heading), np.sin(heading)], 1) * step
    pts = np.concatenate([np.zeros((1, 2)), np.cumsum(d, 0)], 0)
    pts -= pts[rng.integers(n)]  # the curve passes through the chosen point, so part of it is visible
    return pts + np.array([rng.uniform(0, w), rng.uniform(0, h)])


def _profile(rng: np.random.Generator, n: int, base: float, vary: float) -> np.ndarray:
    """Smoothly varying opacity along n samples: base * (1 - vary * smooth noise), in [0, 1]."""
    knots = rng.random(max(2, n // 6 + 2))
    v = np.interp(np.linspace(0, len(knots) - 1, n), np.arange(len(knots)), knots)
    return np.clip(base * (1 - vary * v), 0, 1)


def _paper(rng: np.random.Generator) -> np.ndarray:
    v = rng.uniform(0.86, 1.0)
    t = rng.uniform(0, 0.06)
    return np.array([v, v * (1 - t), v * (1 - 2.2 * t)])


def _dark(rng: np.random.Generator) -> np.ndarray:
    return np.full(3, rng.uniform(0.0, 0.2)) + rng.normal(0, 0.01, 3)


# ---------------------------------------------------------------- painters

def scratches(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Long thin scratches, bright (emulsion scraped to the paper) or dark; wandering or near-straight; opacity
    varying along the length; some soft-edged. Widths read in cfg.scratch_width at scale u (+- jitter)."""
    h, w = img.shape[:2]
    diag = math.hypot(h, w)
    n = int(rng.integers(cfg.scratch_count[0], cfg.scratch_count[1] + 1))
    canv: dict[tuple[bool, bool], Canvas] = {}
    for _ in range(n):
        width = at_scale(cfg.scratch_width, u + rng.normal(0, 0.08))
        bright = bool(rng.random() < cfg.p_scratch_bright)
        soft = bool(rng.random() < cfg.p_scratch_soft)
        straight = bool(rng.random() < cfg.p_scratch_straight)
        length = diag * rng.uniform(0.2, 1.5)
        angle = math.pi / 2 + rng.normal(0, 0.08) if rng.random() < 0.3 else None  # film-style vertical runs
        turn = rng.uniform(0.0, 0.01) if straight else rng.uniform(0.03, 0.2)
        pts = random_walk(rng, h, w, length, step=max(3.0, length / 40), turn=turn, angle=angle)
        opac = _profile(rng, len(pts) - 1, _u(rng, cfg.scratch_opacity), rng.uniform(0, 0.9))
        widths = width * (1 + rng.uniform(0, 0.5) * (_profile(rng, len(pts) - 1, 1.0, 1.0) - 0.5))  # +-25% at most
        key = (bright, soft)
        if key not in canv:
            canv[key] = Canvas(h, w)
        canv[key].polyline(pts, widths, opac)
    for (bright, soft), c in canv.items():
        a = c.opacity(soften=0.25 * at_scale(cfg.scratch_width, u) + 0.3 if soft else 0.0)
        composite(img, alpha, a, _paper(rng) if bright else _dark(rng))
    return img


def dust(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Dust and specks: small irregular blobs, bright and dark; count per 256x256 area in cfg.dust_count."""
    h, w = img.shape[:2]
    n = int(rng.integers(cfg.dust_count[0], cfg.dust_count[1] + 1) * h * w / 256 ** 2)
    base = at_scale(cfg.dust_radius, u)
    bright = Canvas(h, w)
    dark = Canvas(h, w)
    k = 7
    ang = np.linspace(0, 2 * math.pi, k, endpoint=False)
    for _ in range(n):
        r = base * math.exp(rng.normal(0, 0.5))  # many small, few large
        rad = r * rng.uniform(0.5, 1.3, k)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        (bright if rng.random() < cfg.p_dust_bright else dark).polygon(pts, rng.uniform(0.6, 1.0))
    composite(img, alpha, bright.opacity(), _paper(rng))
    composite(img, alpha, dark.opacity(), _dark(rng))
    return img


def hairs(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Hairs and fibres: thin curly curves, mostly dark (lying on the scanner glass)."""
    h, w = img.shape[:2]
    side = min(h, w)
    n = int(rng.integers(cfg.hair_count[0], cfg.hair_count[1] + 1))
    bright = Canvas(h, w)
    dark = Canvas(h, w)
    width = at_scale(cfg.hair_width, u)
    for _ in range(n):
        length = side * _u(rng, cfg.hair_length)
        pts = random_walk(rng, h, w, length, step=max(2.0, length / 30), turn=rng.uniform(0.1, 0.45))
        c = dark if rng.random() < 0.8 else bright
        c.polyline(pts, width * rng.uniform(0.7, 1.3), float(rng.uniform(0.7, 1.0)))
    composite(img, alpha, bright.opacity(), _paper(rng))
    composite(img, alpha, dark.opacity(), _dark(rng))
    return img


def creases(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Folds: a cracked bright line (in the mask) with shading either side (not in the mask)."""
    h, w = img.shape[:2]
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    diag = math.hypot(h, w)
    for _ in range(int(rng.integers(cfg.crease_count[0], cfg.crease_count[1] + 1))):
        theta = rng.uniform(0, math.pi)
        nx, ny = -math.sin(theta), math.cos(theta)
        x0, y0 = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        t = (xx - x0) * ny - (yy - y0) * nx  # position along the fold
        knots = rng.normal(0, rng.uniform(0.5, 3.0), 12)
        wobble = np.interp(t, np.linspace(-diag, diag, 12), knots).astype(np.float32)
        d = (xx - x0) * nx + (yy - y0) * ny + wobble + rng.normal(0, 0.15) * t * t / diag
        width = at_scale(cfg.crease_width, u + rng.normal(0, 0.08))
        # emulsion cracks along the fold in pieces: gate the core by a smooth on/off signal along it
        gate_k = np.clip((rng.random(24) - rng.uniform(0.1, 0.5)) * 4, 0, 1)
        gate = np.interp(t, np.linspace(-diag, diag, 24), gate_k).astype(np.float32)
        core = np.clip(width / 2 + 0.5 - np.abs(d), 0, 1) * gate * rng.uniform(0.7, 1.0)
        spread = width * rng.uniform(2, 6)
        amp = rng.uniform(0.05, 0.25)
        fall = np.exp(-np.abs(d) / spread)
        shade = np.where(d > 0, 1 - amp * fall, 1 + 0.5 * amp * fall)  # lit on one side, shadowed on the other
        img *= shade[..., None]
        np.clip(img, 0, 1, out=img)
        if ref is not None:  # the shading is not in the mask: the reference takes it too
            ref *= shade[..., None]
            np.clip(ref, 0, 1, out=ref)
        composite(img, alpha, core.astype(np.float32), _paper(rng))
    return img


def tears(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Torn or missing corners and edge bites filled with paper colour or the scan bed, with a torn-paper rim."""
    h, w = img.shape[:2]
    side = min(h, w)
    c = Canvas(h, w)
    rim = Canvas(h, w)
    for _ in range(int(rng.integers(cfg.tear_count[0], cfg.tear_count[1] + 1))):
        size = side * _u(rng, cfg.tear_size)
        m = 40
        tt = np.linspace(0, 1, m)
        jag = np.cumsum(rng.normal(0, size * 0.025, m))
        jag -= np.linspace(jag[0], jag[-1], m)  # ends stay on the image border
        jag += rng.normal(0, size * 0.01, m)
        if rng.random() < 0.5:  # corner: a jagged diagonal cut
            a, b = size * rng.uniform(0.6, 1.6), size * rng.uniform(0.6, 1.6)
            line = np.stack([a * (1 - tt), b * tt], 1) + jag[:, None] * np.array([b, a]) / math.hypot(a, b)
            poly = np.concatenate([[[-5.0, -5.0]], [[a + 5, -5.0]], line, [[-5.0, b + 5]]], 0)
        else:  # edge bite
            length = size * rng.uniform(1.0, 3.0)
            depth = size * rng.uniform(0.2, 0.6)
            s0 = rng.uniform(-0.2, 1.0) * (w - length)
            line = np.stack([s0 + length * tt, depth * np.sin(math.pi * tt) ** 0.7 + jag], 1)
            poly = np.concatenate([[[s0, -5.0]], line, [[s0 + length, -5.0]]], 0)
        corner = int(rng.integers(4))  # mirror into one of the four corners / edges
        if corner & 1:
            poly[:, 0] = w - poly[:, 0]
            line[:, 0] = w - line[:, 0]
        if corner & 2:
            poly[:, 1] = h - poly[:, 1]
            line[:, 1] = h - line[:, 1]
        c.polygon(poly, 1.0)
        if rng.random() < 0.6:
            rim.polyline(line, at_scale(cfg.tear_rim_width, u), 1.0)
    fill = [_paper(rng), np.full(3, rng.uniform(0.0, 0.08)), np.full(3, rng.uniform(0.92, 1.0)),
            np.full(3, rng.uniform(0.3, 0.7))][rng.integers(4)]
    composite(img, alpha, rim.opacity(soften=0.5), _paper(rng))
    composite(img, alpha, c.opacity(), fill)
    return img


def blotches(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Irregular stains and emulsion losses that obliterate content, soft-edged."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(int(rng.integers(cfg.blotch_count[0], cfg.blotch_count[1] + 1))):
        s = max(4, int(side * at_scale(cfg.blotch_size, u + rng.normal(0, 0.15))))
        field = smooth_field(rng, s, s, int(rng.integers(3, 7)))
        r = np.hypot(*np.meshgrid(np.linspace(-1, 1, s), np.linspace(-1, 1, s))).astype(np.float32)
        shape = field * 0.6 + (1 - r) * 0.8  # irregular, but concentrated in the box
        thr = rng.uniform(0.55, 0.75)
        a = np.clip((shape - thr) / rng.uniform(0.03, 0.15), 0, 1) * rng.uniform(0.8, 1.0)
        y0, x0 = int(rng.integers(-s // 3, h - s // 3)), int(rng.integers(-s // 3, w - s // 3))
        ys, xs = slice(max(y0, 0), min(y0 + s, h)), slice(max(x0, 0), min(x0 + s, w))
        a = a[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        color = [_paper(rng), _dark(rng), np.array([0.55, 0.42, 0.25]) * rng.uniform(0.5, 1.2),
                 np.array([0.8, 0.75, 0.55]) * rng.uniform(0.8, 1.1)][rng.integers(4)]
        composite(img[ys, xs], alpha[ys, xs], a, np.clip(color, 0, 1))
    return img


def textures(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """A scratch texture (many fine lines; counted in the alpha) or a paper-fibre texture (never counted),
    blended in a random mode with random opacity."""
    h, w = img.shape[:2]
    mode = BLEND_MODES[rng.integers(len(BLEND_MODES))]
    if rng.random() < 0.6:
        c = Canvas(h, w)
        diag = math.hypot(h, w)
        for _ in range(int(rng.integers(20, 120))):
            length = diag * rng.uniform(0.05, 0.6)
            pts = random_walk(rng, h, w, length, step=max(4.0, length / 8), turn=rng.uniform(0, 0.05),
                              angle=math.pi / 2 + rng.normal(0, 0.2) if rng.random() < 0.5 else None)
            c.polyline(pts, rng.uniform(0.5, 1.5) * max(1.0, at_scale(cfg.scratch_width, u) / 3),
                       float(rng.uniform(0.2, 1.0)))
        layer = c.opacity()
        o = _u(rng, cfg.texture_opacity)
        before = img.copy()
        img[:] = blend(img, layer, mode, o)
        a = o * layer
        a *= np.abs(img - before).max(axis=2) > 0  # lighten/add on bright areas changes nothing
        alpha += a - alpha * a
    else:
        n = rng.standard_normal((h, w, 1), dtype=np.float32)
        n = gaussian_blur(n, rng.uniform(0.5, 1.5))
        n = (n - n.mean()) / max(float(n.std()), 1e-6)
        layer = np.clip(0.5 + 0.25 * n[..., 0], 0, 1)
        o = min(_u(rng, cfg.texture_opacity), cfg.paper_opacity_max)
        img[:] = blend(img, layer, mode, o)
        if ref is not None:  # never in the mask: the reference takes it too
            ref[:] = blend(ref, layer, mode, o)
    return img


def crazing(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Craquelure of aged emulsion: a patch of polygonal cells outlined by hairline cracks, mostly dark, some
    bright; the cell size and crack width read at scale u."""
    h, w = img.shape[:2]
    cell = at_scale(cfg.craze_cell, u + rng.normal(0, 0.1))
    width = at_scale(cfg.craze_width, u + rng.normal(0, 0.1))
    ny, nx = int(h / cell) + 3, int(w / cell) + 3
    gy, gx = np.mgrid[-1:ny - 1, -1:nx - 1].astype(np.float64)
    pts = np.stack([(gx + rng.uniform(-0.35, 0.35, gx.shape)) * cell,
                    (gy + rng.uniform(-0.35, 0.35, gy.shape)) * cell], -1)
    c = Canvas(h, w)
    keep = rng.uniform(0.5, 0.9)  # share of the cell walls that cracked
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        if (dy, dx) == (1, 1) and rng.random() < 0.5:
            continue  # sometimes triangles, mostly quadrilaterals
        a, b = pts[:ny - dy, :nx - dx].reshape(-1, 2), pts[dy:, dx:].reshape(-1, 2)
        for i in np.flatnonzero(rng.random(len(a)) < keep * (0.6 if dy and dx else 1.0)):
            mid = (a[i] + b[i]) / 2 + rng.normal(0, 0.08 * cell, 2)
            c.polyline(np.stack([a[i], mid, b[i]]), width * rng.uniform(0.7, 1.3), float(rng.uniform(0.5, 1.0)))
    region = smooth_field(rng, h, w, int(rng.integers(2, 5)))  # crazing covers a patch, not the whole print
    lo = rng.uniform(0.2, 0.6)
    a = c.opacity() * np.clip((region - lo) / 0.15, 0, 1) * rng.uniform(0.4, 0.9)
    composite(img, alpha, a.astype(np.float32), _paper(rng) if rng.random() < 0.3 else _dark(rng))
    return img


def foxing(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Foxing: rust-brown spots with a darker core fading out, alone or in clusters; count per 256x256 area."""
    h, w = img.shape[:2]
    n = max(1, int(rng.integers(cfg.foxing_count[0], cfg.foxing_count[1] + 1) * h * w / 256 ** 2))
    base = at_scale(cfg.foxing_radius, u)
    rust = np.clip(np.array([0.58, 0.38, 0.18]) * rng.uniform(0.7, 1.3) + rng.normal(0, 0.03, 3), 0, 1)
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    spread = rng.uniform(0.1, 0.6) * max(h, w)  # clustered around one place or scattered
    for _ in range(n):
        r = base * math.exp(rng.normal(0, 0.45))
        cx, cy = np.clip(centre + rng.normal(0, spread, 2), 0, [w - 1, h - 1])  # every spot lands on the print
        ex = rng.uniform(0.6, 1.0)  # ellipse axis ratio
        th = rng.uniform(0, math.pi)
        R = int(math.ceil(r * 1.5)) + 1
        y0, y1 = max(int(cy) - R, 0), min(int(cy) + R + 1, h)
        x0, x1 = max(int(cx) - R, 0), min(int(cx) + R + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        d = np.hypot(dx * math.cos(th) + dy * math.sin(th), (-dx * math.sin(th) + dy * math.cos(th)) / ex) / r
        a = (np.clip(1 - d, 0, 1) ** rng.uniform(0.3, 1.0) * rng.uniform(0.4, 0.95)).astype(np.float32)
        composite(img[y0:y1, x0:x1], alpha[y0:y1, x0:x1], a, rust * rng.uniform(0.8, 1.1))
    return img


def flaking(img, alpha, rng, cfg: "DegradeConfig", u: float, ref=None):
    """Flaked-off emulsion inside the picture: hard-edged organic patches of bare, slightly textured paper (or
    the dark base); sizes a fraction of the short side at scale u."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(int(rng.integers(1, 4))):
        s = max(6, int(side * at_scale(cfg.flake_size, u + rng.normal(0, 0.15))))
        field = smooth_field(rng, s, s, int(rng.integers(4, 9)))
        r = np.hypot(*np.meshgrid(np.linspace(-1, 1, s), np.linspace(-1, 1, s))).astype(np.float32)
        shape = field * 0.7 + (1 - r) * 0.7
        a = np.clip((shape - rng.uniform(0.6, 0.8)) / 0.02, 0, 1)
        y0, x0 = int(rng.integers(-s // 4, h - s // 4)), int(rng.integers(-s // 4, w - s // 4))
        ys, xs = slice(max(y0, 0), min(y0 + s, h)), slice(max(x0, 0), min(x0 + s, w))
        a = np.ascontiguousarray(a[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0])
        fill = _paper(rng) if rng.random() < 0.8 else np.full(3, rng.uniform(0.05, 0.3))
        region = img[ys, xs]
        composite(region, alpha[ys, xs], a, fill)
        grain = rng.normal(0, rng.uniform(0.0, 0.03), a.shape).astype(np.float32)
        region += (a * grain)[..., None]  # paper fibre, not a flat fill
    return img


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


PAINTERS = (
    ("p_scratch", scratches),
    ("p_dust", dust),
    ("p_hair", hairs),
    ("p_crease", creases),
    ("p_tear", tears),
    ("p_blotch", blotches),
    ("p_texture", textures),
)
# kinds added later (ageing of the emulsion and paper); their probabilities default to 0, and no random number is
# drawn for a kind at 0, so every fixed evaluation set made with the default recipe stays what it was
AGEING_PAINTERS = (
    ("p_crazing", crazing),
    ("p_foxing", foxing),
    ("p_flaking", flaking),
)


def damage(x: np.ndarray, rng: np.random.Generator, cfg: "DegradeConfig") -> tuple[np.ndarray, np.ndarray]:
    """Paint the structured defects, each kind with its probability, in random order.

    Returns (image (H, W, 3) float32 in [0, 1], visible change (H, W) float32 in [0, 1]): how much the defects
    changed each pixel (max over channels) where their union opacity exceeds cfg.mask_threshold, else 0, measured
    against x with the unmasked effects alone (crease shading, paper texture), so these never enter it. The mask
    is this change above cfg.visible_delta: what a viewer sees as a defect, not what a painter touched (a faint
    line of opacity 0.15 screened on a dark sky is plain to see; an opaque white scratch on white paper is not).
    """
    img = x.copy()
    ref = x.copy()  # x with only the damage that is never in the mask (crease shading, paper texture)
    alpha = np.zeros(x.shape[:2], np.float32)
    u = float(rng.random())
    chosen = [paint for name, paint in PAINTERS if rng.random() < getattr(cfg, name)]
    chosen += [paint for name, paint in AGEING_PAINTERS if getattr(cfg, name) > 0 and rng.random() < getattr(cfg, name)]
    for i in rng.permutation(len(chosen)):
        chosen[i](img, alpha, rng, cfg, u, ref)
    np.clip(img, 0, 1, out=img)
    change = np.abs(img - ref).max(axis=2)
    return img, np.where(alpha > cfg.mask_threshold, change, np.float32(0)).astype(np.float32)
