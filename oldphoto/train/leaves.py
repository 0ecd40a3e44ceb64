"""Procedural clean content: a dead-leaves collage of occluding shapes, coloured and textured from the photos.

Why: the detector's precision falls from 0.86 on crops of its 54 training photos to 0.73 on unseen ones with the
same damage: it has learned which thin edges of those photos are content. Dead-leaves images (random occluding
shapes with power-law sizes) share natural images' occlusion edges and scale invariance and are never the same
twice, so the content edges seen in training stop being a fixed set. Shapes take their colours, and some their
textures, from a random crop of the photos; a few are long and thin (wires, stems, gaps between boards): content
that looks like a scratch and is not damage. Only the clean crop is made here; damage and its exact mask are
drawn on it afterwards as on any photo crop.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .data import PhotoPool

SUPERSAMPLE = 2  # shapes are drawn at twice the size and box-filtered down: anti-aliased edges, as a lens gives
MIN_RADIUS = 5.0  # output px; small discs would be content that looks exactly like dust
THIN_STROKES = 1.0  # mean number of thin strokes (0.6-3 px wide) per crop; many would teach that scratches are content


def _power_law_radius(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A radius with density ~ r^-3 on [lo, hi] (the dead-leaves law that makes the collage scale invariant)."""
    u = rng.random()
    return float((lo ** -2 - u * (lo ** -2 - hi ** -2)) ** -0.5)


def _colour(source: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A pixel of the source crop, jittered a little (a gray source keeps gray colours)."""
    h, w = source.shape[:2]
    c = source[int(rng.integers(h)), int(rng.integers(w))].astype(np.float64)
    c = np.clip(c + rng.normal(0, 0.04) + rng.normal(0, 0.015, 3) * (np.ptp(c) > 0.01), 0, 1)
    return tuple(int(round(v * 255)) for v in c)


def _outline(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon of a rotated ellipse, rectangle or star-convex blob of size ~r around (cx, cy)."""
    kind = rng.random()
    aspect = math.exp(rng.uniform(0, math.log(4)))
    a, b = r * math.sqrt(aspect), r / math.sqrt(aspect)
    t = rng.uniform(0, math.pi)
    if kind < 0.45:  # ellipse
        n = 32
        ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
        px, py = a * np.cos(ang), b * np.sin(ang)
    elif kind < 0.7:  # rectangle
        px, py = np.array([-a, a, a, -a]), np.array([-b, -b, b, b])
    else:  # blob: radius varies smoothly with the angle
        n = 24
        ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
        k = np.arange(1, 4)[:, None]
        wobble = (rng.normal(0, 0.25, (3, 1)) * np.cos(k * ang + rng.uniform(0, 2 * math.pi, (3, 1)))).sum(0)
        rad = r * np.clip(1 + wobble, 0.3, 2.0)
        px, py = rad * np.cos(ang), rad * np.sin(ang) * (b / a)
    ct, st = math.cos(t), math.sin(t)
    return list(zip((cx + ct * px - st * py).tolist(), (cy + st * px + ct * py).tolist()))


def _fill(source: np.ndarray, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """An RGB fill of (w, h): flat, a linear gradient between two colours, or a piece of the source crop."""
    kind = rng.random()
    if kind < 0.35:
        return Image.new("RGB", (w, h), _colour(source, rng))
    if kind < 0.6:
        c0, c1 = np.array(_colour(source, rng), np.float32), np.array(_colour(source, rng), np.float32)
        t = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = math.cos(t) * xx / max(w, 1) + math.sin(t) * yy / max(h, 1)
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        img = c0 + ramp[..., None] * (c1 - c0)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    sh, sw = source.shape[:2]
    side = int(rng.integers(max(4, sw // 8), sw + 1))
    y0, x0 = int(rng.integers(0, sh - side + 1)), int(rng.integers(0, sw - side + 1))
    piece = Image.fromarray(np.round(source[y0:y0 + side, x0:x0 + side] * 255).astype(np.uint8))
    return piece.resize((w, h), Image.Resampling.BILINEAR)


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, colour: tuple[int, int, int]) -> None:
    """A thin, nearly straight stroke across part of the canvas (wire, stem, gap between boards)."""
    length = rng.uniform(0.2, 1.2) * size
    t = rng.uniform(0, math.pi)
    cx, cy = rng.uniform(0, size, 2)
    bend = rng.normal(0, 0.04) * length
    s = np.linspace(-0.5, 0.5, 9)
    px = cx + s * length * math.cos(t) - (1 - 4 * s ** 2) * bend * math.sin(t)
    py = cy + s * length * math.sin(t) + (1 - 4 * s ** 2) * bend * math.cos(t)
    width = max(1, int(round(rng.uniform(0.6, 3.0) * SUPERSAMPLE)))
    draw.line(list(zip(px.tolist(), py.tolist())), fill=colour, width=width, joint="curve")


def leaves_crop(pool: PhotoPool, rng: np.random.Generator, size: int, scale_range: tuple[float, float]
                ) -> np.ndarray:
    """(size, size, 3) float32 [0, 1]: a dead-leaves collage whose colours and textures come from one random crop
    of the pool, drawn back to front (later shapes occlude earlier ones), softened by a random lens blur and
    shaded by a smooth illumination field so that shapes are not flat cartoons."""
    source = pool.random_crop(rng, size, scale_range)
    big = size * SUPERSAMPLE
    canvas = _fill(source, rng, big, big)
    draw = ImageDraw.Draw(canvas)
    hi = size * SUPERSAMPLE * rng.uniform(0.2, 0.7)
    radii = sorted((_power_law_radius(rng, MIN_RADIUS * SUPERSAMPLE, hi) for _ in range(int(rng.integers(20, 80)))),
                   reverse=True)  # mostly large shapes behind small ones: a covered canvas, fewer confetti
    for r in radii:
        cx, cy = rng.uniform(-r, big + r, 2)
        poly = _outline(rng, cx, cy, r)
        if rng.random() < 0.6:
            draw.polygon(poly, fill=_colour(source, rng))
            continue
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
        x1, y1 = min(big, int(math.ceil(max(xs))) + 1), min(big, int(math.ceil(max(ys))) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mask = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in poly], fill=255)
        canvas.paste(_fill(source, rng, x1 - x0, y1 - y0), (x0, y0), mask)
    for _ in range(int(rng.poisson(THIN_STROKES))):
        _stroke(draw, rng, big, _colour(source, rng))
    small = canvas.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.5:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    out = np.asarray(small, dtype=np.float32) / 255.0
    cells = int(rng.integers(2, 5))
    light = Image.fromarray(rng.normal(0, 0.12, (cells, cells)).astype(np.float32), mode="F")
    shade = 1 + np.asarray(light.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.ascontiguousarray(np.clip(out * shade[..., None], 0, 1), dtype=np.float32)
