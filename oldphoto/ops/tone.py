"""One tone curve per photo: fitted from how the restorer changed the whole photo, applied to every tile alike.

Why: the restorer decides tone (fading, casts) from one tile's content, so neighbouring tiles of one print can
get different corrections, which shows as soft blocks in flat areas (a sky) however well the tiles are feathered.
A faded print faded as a whole, so the pipeline fits one monotone curve per channel, scan -> restoration, over
the intact pixels of the whole photo (the average of all the tiles' decisions) and replaces the low band of each
tile's change by that curve's (`passes.even_tone`).

Values are floats in [0, 1]; images are (H, W, C) numpy arrays, as the pipeline's bands are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 64  # scan values are grouped into this many equal bins per channel


def monotone(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` (K,) in weighted least squares (pool adjacent violators)."""
    values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    if values.shape != weights.shape or values.ndim != 1:
        raise ValueError(f"monotone: values and weights must be equal 1-D arrays, got {values.shape} and "
                         f"{weights.shape}")
    means: list[float] = []
    mass: list[float] = []
    sizes: list[int] = []
    for v, w in zip(values, weights):
        means.append(float(v))
        mass.append(float(w))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            v2, w2, n2 = means.pop(), mass.pop(), sizes.pop()
            total = mass[-1] + w2
            means[-1] = (means[-1] * mass[-1] + v2 * w2) / total if total > 0 else (means[-1] + v2) / 2
            mass[-1] = total
            sizes[-1] += n2
    return np.repeat(means, sizes)


@dataclass(frozen=True)
class ToneCurve:
    """Per channel c a piecewise-linear, non-decreasing map through the knots (xs[c][k], ys[c][k]); beyond the
    first and last knot it goes on with slope 1 (an offset: identity stays identity to the ends), clipped to
    [0, 1]. A channel with no knots is left as it is."""

    xs: tuple[np.ndarray, ...]
    ys: tuple[np.ndarray, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (..., C) float in [0, 1] with C = the curve's channels (or 1: every channel of the curve applies to
        it, giving C outputs) -> (..., C) float32."""
        x = np.asarray(x, np.float32)
        channels = len(self.xs)
        if x.shape[-1] not in (1, channels):
            raise ValueError(f"ToneCurve: expected (..., {channels}) values, got shape {x.shape}")
        out = np.empty(x.shape[:-1] + (channels,), np.float32)
        for c in range(channels):
            src = x[..., c if x.shape[-1] > 1 else 0]
            xs, ys = self.xs[c], self.ys[c]
            if not len(xs):
                out[..., c] = src
                continue
            y = np.interp(src, xs, ys)
            y = np.where(src < xs[0], ys[0] + (src - xs[0]), y)
            y = np.where(src > xs[-1], ys[-1] + (src - xs[-1]), y)
            out[..., c] = np.clip(y, 0.0, 1.0)
        return out


class CurveFit:
    """Accumulates (scan, restored) pairs of intact pixels band by band; `curve()` fits the ToneCurve.

    Each channel's scan values are binned (BINS); a knot sits at the mean scan value of a bin and the mean restored
    value there, made non-decreasing (weighted by the pixel counts). An identity change therefore fits the
    identity, so a restorer that leaves the scan alone leaves it alone here too.
    """

    def __init__(self, channels: int):
        if channels < 1:
            raise ValueError(f"CurveFit: channels must be >= 1, got {channels}")
        self.channels = channels
        self._n = np.zeros((channels, BINS))
        self._sx = np.zeros((channels, BINS))
        self._sy = np.zeros((channels, BINS))

    def add(self, scan: np.ndarray, restored: np.ndarray, intact: np.ndarray | None = None) -> None:
        """scan (n, W, C or 1), restored (n, W, C) float in [0, 1]; intact (n, W) bool (None: all pixels)."""
        if restored.ndim != 3 or restored.shape[2] != self.channels or scan.ndim != 3 \
                or scan.shape[:2] != restored.shape[:2] or scan.shape[2] not in (1, self.channels):
            raise ValueError(f"CurveFit.add: expected scan (n, W, 1 or {self.channels}) and restored "
                             f"(n, W, {self.channels}) of one size, got {scan.shape} and {restored.shape}")
        if intact is not None and (intact.shape != restored.shape[:2] or intact.dtype != bool):
            # an integer 0/1 array would index rows 0 and 1 instead of selecting pixels, and fit garbage silently
            raise ValueError(f"CurveFit.add: intact must be bool {restored.shape[:2]}, got {intact.dtype} "
                             f"{intact.shape}")
        for c in range(self.channels):
            x = scan[..., c if scan.shape[2] > 1 else 0]
            y = restored[..., c]
            if intact is not None:
                x, y = x[intact], y[intact]
            x, y = x.ravel().astype(np.float64), y.ravel().astype(np.float64)
            b = np.clip((x * BINS).astype(np.int64), 0, BINS - 1)
            self._n[c] += np.bincount(b, minlength=BINS)
            self._sx[c] += np.bincount(b, weights=x, minlength=BINS)
            self._sy[c] += np.bincount(b, weights=y, minlength=BINS)

    def curve(self) -> ToneCurve:
        """The fitted ToneCurve: per channel one knot per non-empty bin (none for a channel with no pixels yet)."""
        xs, ys = [], []
        for c in range(self.channels):
            ok = self._n[c] > 0
            n = self._n[c][ok]
            xs.append((self._sx[c][ok] / n).astype(np.float32))
            ys.append(monotone(self._sy[c][ok] / n, n).astype(np.float32))
        return ToneCurve(tuple(xs), tuple(ys))
