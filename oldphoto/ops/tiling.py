"""Cut an image into overlapping square tiles and blend processed tiles back without seams.

Pure and stateless except `RowMerger`, which streams the same blend row of tiles by row of tiles.

Geometry: tiles are T x T in input pixels; the tile starts along each axis come from `grid`, evenly spread
so that neighbours share at least `overlap` pixels and the last tile ends flush with the image. Images
smaller than a tile are padded at the bottom/right (mirror, or replicate when one pixel wide) to T and the
result is cropped back. With `--edge-margin` the pipeline's streaming merge (RowMerger with a margin) tiles the
image grown by a mirrored margin on every side instead, so that no tile edge falls on the image's own border. A
stage may change the resolution by an integer `scale`: its output tiles are sT x sT and land at (s*y, s*x).

Blending: each tile has a separable weight wy(y) * wx(x). Along an axis the weight is 1 except over the
pixels shared with a neighbour, where it follows a raised-cosine ramp (sin^2 going in, cos^2 going out), so
two neighbours' weights sum to 1 there; at the image border the weight stays 1. The sum of the weighted
tiles is divided by the sum of the weights, which for a full grid is the outer product of the per-axis
sums, so an identity stage gives back the input up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def grid(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis of length `size`: first 0, last `size - tile`, neighbours overlap >= `overlap`.

    A size below one tile gives [0] (the caller pads up to the tile). Starts are spread evenly, so the
    overlaps differ by at most one pixel instead of the last tile overlapping much more than the others.
    """
    if tile < 1:
        raise ValueError(f"grid: tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"grid: overlap must be in [0, {tile - 1}] for tile {tile}, got {overlap}")
    if size < 1:
        raise ValueError(f"grid: size must be >= 1, got {size}")
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    count = max(count, 2)
    span = size - tile
    return [(k * span) // (count - 1) for k in range(count)]


def padded_size(size: int, tile: int) -> int:
    """Length of an axis after padding a too-small image up to one tile."""
    return max(size, tile)


def mirror_index(size: int, length: int, start: int = 0) -> np.ndarray:
    """Indices (length,) into an axis of `size` for positions start, start + 1, ... of that axis extended by
    mirroring on both sides (no edge repeat): ... 2 1 0 1 2 ... size-2 size-1 size-2 ...

    An axis of size 1 repeats its only pixel. Works for any length, also many times the size.
    """
    if size < 1 or length < 0:
        raise ValueError(f"mirror_index: need size >= 1 and length >= 0, got size={size}, length={length}")
    if size == 1:
        return np.zeros(length, dtype=np.int64)
    period = 2 * (size - 1)
    i = np.abs(np.arange(start, start + length)) % period
    return np.where(i < size, i, period - i).astype(np.int64)


def _ramp(width: int) -> np.ndarray:
    """Rising raised-cosine ramp of `width` samples at pixel centres, strictly inside (0, 1)."""
    t = (np.arange(width, dtype=np.float64) + 0.5) / width
    return np.sin(0.5 * np.pi * t) ** 2


def axis_weights(starts: list[int], tile: int, scale: int = 1) -> list[np.ndarray]:
    """Blend weight (scale*tile,) float64 of each tile along one axis, given all tile starts on that axis.

    The ramp over a shared stretch is as wide as the actual overlap with that neighbour (times scale),
    so the two neighbours' ramps are mirror images and sum to 1.
    """
    n = scale * tile
    out = []
    for k, start in enumerate(starts):
        w = np.ones(n, dtype=np.float64)
        if k > 0:
            shared = scale * (starts[k - 1] + tile - start)
            if shared > 0:
                w[:shared] = np.minimum(w[:shared], _ramp(shared))
        if k < len(starts) - 1:
            shared = scale * (start + tile - starts[k + 1])
            if shared > 0:
                w[n - shared:] = np.minimum(w[n - shared:], _ramp(shared)[::-1])
        out.append(w)
    return out


def axis_norm(starts: list[int], tile: int, scale: int = 1) -> np.ndarray:
    """Sum over tiles of the axis weights, (scale * (starts[-1] + tile),) float64; strictly positive."""
    total = np.zeros(scale * (starts[-1] + tile), dtype=np.float64)
    for start, w in zip(starts, axis_weights(starts, tile, scale)):
        total[scale * start: scale * start + w.size] += w
    return total


def _check_tile_args(tile: int, overlap: int, scale: int = 1) -> None:
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tile must be >= 1 and overlap in [0, tile), got tile={tile}, overlap={overlap}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")


def split(x: torch.Tensor, tile: int, overlap: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Image (C, H, W) -> tiles (N, C, T, T) in raster order and their top-left corners [(y, x)].

    Any dtype and value range; the tiles are copies. An image smaller than the tile is mirror-padded
    (replicated when 1 pixel wide) at the bottom/right to T, and `merge` crops the padding off again.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"split: expected an image tensor (C, H, W), got shape {shape}")
    _check_tile_args(tile, overlap)
    _, h, w = x.shape
    if h < 1 or w < 1:
        raise ValueError(f"split: image must not be empty, got shape {tuple(x.shape)}")
    hp, wp = padded_size(h, tile), padded_size(w, tile)
    if hp != h:
        x = x.index_select(1, torch.from_numpy(mirror_index(h, hp)).to(x.device))
    if wp != w:
        x = x.index_select(2, torch.from_numpy(mirror_index(w, wp)).to(x.device))
    boxes = [(y, xx) for y in grid(hp, tile, overlap) for xx in grid(wp, tile, overlap)]
    tiles = torch.stack([x[:, y: y + tile, xx: xx + tile] for y, xx in boxes])
    return tiles, boxes


def merge(tiles: torch.Tensor, boxes: list[tuple[int, int]], size: tuple[int, int], tile: int, overlap: int,
          scale: int = 1) -> torch.Tensor:
    """Blend tiles (N, C, sT, sT) float at `boxes` (input-pixel corners from `split`) -> image (C, sH, sW) float32.

    size is the input image's (H, W); the padding `split` added is cropped off. boxes must be exactly
    the grid `split` makes for this size, tile and overlap (any order).
    """
    _check_tile_args(tile, overlap, scale)
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"merge: size must be positive, got {tuple(size)}")
    ys = grid(padded_size(h, tile), tile, overlap)
    xs = grid(padded_size(w, tile), tile, overlap)
    st = scale * tile
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4 or tuple(tiles.shape[2:]) != (st, st):
        shape = tuple(tiles.shape) if hasattr(tiles, "shape") else type(tiles).__name__
        raise ValueError(f"merge: expected tiles (N, C, {st}, {st}) for tile {tile} x scale {scale}, got {shape}")
    if tiles.shape[0] != len(boxes):
        raise ValueError(f"merge: {tiles.shape[0]} tiles but {len(boxes)} boxes")
    expected = {(y, x) for y in ys for x in xs}
    given = [tuple(int(v) for v in b) for b in boxes]
    if len(set(given)) != len(given) or set(given) != expected:
        raise ValueError(f"merge: boxes do not form the {len(ys)}x{len(xs)} tile grid of size {(h, w)} "
                         f"(tile {tile}, overlap {overlap}); got {len(given)} boxes")
    wy = dict(zip(ys, axis_weights(ys, tile, scale)))
    wx = dict(zip(xs, axis_weights(xs, tile, scale)))
    c = tiles.shape[1]
    canvas = torch.zeros(c, scale * (ys[-1] + tile), scale * (xs[-1] + tile), dtype=torch.float64)
    for t, (y, x) in zip(tiles, given):
        weight = torch.from_numpy(np.outer(wy[y], wx[x]))
        canvas[:, scale * y: scale * y + st, scale * x: scale * x + st] += t.detach().cpu().double() * weight
    norm = torch.from_numpy(np.outer(axis_norm(ys, tile, scale), axis_norm(xs, tile, scale)))
    return (canvas / norm)[:, : scale * h, : scale * w].float()


class RowMerger:
    """Streaming `merge`: takes tiles one row of tiles at a time and returns output rows as soon as final.

    Holds one float32 accumulator of sT output rows x the padded output width (the current tile row, into
    which the previous row's overlap has already been added), never the whole image. Tiles must come in raster
    order: all tiles of a tile row (in one or several `add` calls, any x order) before any tile of the next row;
    `finish` returns the last rows.
    The concatenation of everything returned equals `merge` on the same tiles, as (sH, sW, C).

    width, height: the input image's size (height is needed to know where the tile rows start);
    channels: C of the tiles; scale: output tiles are (scale*tile) px. margin: the tiles cover the image grown by
    `margin` px on every side (TileConfig.edge_margin; the caller fills it, mirrored: mirror_index, start=-margin),
    on the grid of starts self.ys / self.xs over that grown image; only the image's own rows and columns are
    returned, as (sH, sW, C).
    """

    def __init__(self, width: int, channels: int, tile: int, overlap: int, scale: int = 1, *, height: int,
                 margin: int = 0):
        _check_tile_args(tile, overlap, scale)
        if width < 1 or height < 1 or channels < 1:
            raise ValueError(f"RowMerger: width, height, channels must be positive, got {width}, {height}, {channels}")
        if not 0 <= margin < tile:
            raise ValueError(f"RowMerger: margin must be in [0, {tile - 1}] for tile {tile}, got {margin}")
        self.width, self.height, self.channels = width, height, channels
        self.tile, self.overlap, self.scale, self.margin = tile, overlap, scale, margin
        self.ys = grid(padded_size(height + 2 * margin, tile), tile, overlap)
        self.xs = grid(padded_size(width + 2 * margin, tile), tile, overlap)
        self._wy = dict(zip(self.ys, (w.astype(np.float32) for w in axis_weights(self.ys, tile, scale))))
        self._wx = dict(zip(self.xs, (w.astype(np.float32) for w in axis_weights(self.xs, tile, scale))))
        self._norm_y = axis_norm(self.ys, tile, scale).astype(np.float32)
        self._norm_x = axis_norm(self.xs, tile, scale).astype(np.float32)
        st = scale * tile
        self._acc = np.zeros((channels, st, scale * (self.xs[-1] + tile)), dtype=np.float32)
        self._top = 0  # output row held at self._acc[:, 0]
        self._row = -1  # index into ys of the tile row being filled
        self._seen: set[int] = set()  # x starts added for that row
        self._emitted = 0  # output rows returned so far

    @property
    def rows_done(self) -> int:
        """Output rows returned so far."""
        return self._emitted

    def add(self, row_tiles: torch.Tensor | np.ndarray, y: int, x_starts: list[int] | None = None) -> np.ndarray:
        """Add tiles (n, C, sT, sT) float of tile row `y` at `x_starts` (default: the whole row, n = all).

        Returns the output rows that no later tile can touch any more: (m, sW, C) float32, m >= 0, the
        next rows after those returned before.
        """
        st = self.scale * self.tile
        if isinstance(row_tiles, torch.Tensor):
            row_tiles = row_tiles.detach().to("cpu", torch.float32).numpy()
        row_tiles = np.asarray(row_tiles, dtype=np.float32)
        if row_tiles.ndim != 4 or row_tiles.shape[1:] != (self.channels, st, st):
            raise ValueError(f"RowMerger.add: expected tiles (n, {self.channels}, {st}, {st}), got {row_tiles.shape}")
        if x_starts is None:
            x_starts = self.xs
        x_starts = [int(v) for v in x_starts]
        if len(x_starts) != row_tiles.shape[0]:
            raise ValueError(f"RowMerger.add: {row_tiles.shape[0]} tiles but {len(x_starts)} x starts")
        bad = [v for v in x_starts if v not in self._wx]
        if bad:
            raise ValueError(f"RowMerger.add: x starts {bad} are not on the tile grid {self.xs}")
        out = self._start_row(int(y))
        dup = self._seen.intersection(x_starts)
        if dup or len(set(x_starts)) != len(x_starts):
            raise ValueError(f"RowMerger.add: tiles at x {sorted(dup) or x_starts} of row y={y} were already added")
        self._seen.update(x_starts)
        wy = self._wy[int(y)][:, None]
        offset = self.scale * int(y) - self._top
        for t, x in zip(row_tiles, x_starts):
            sx = self.scale * x
            self._acc[:, offset: offset + st, sx: sx + st] += t * (wy * self._wx[x][None, :])
        return out

    def finish(self) -> np.ndarray:
        """Return the remaining output rows (m, sW, C) float32 after the last tile row is complete."""
        if self._row != len(self.ys) - 1 or len(self._seen) != len(self.xs):
            raise ValueError(f"RowMerger.finish: tiles missing (at tile row {self._row + 1} of {len(self.ys)}, "
                             f"{len(self._seen)} of {len(self.xs)} tiles in it)")
        end = self.scale * (self.ys[-1] + self.tile)
        return self._emit(end - self._top)

    def _start_row(self, y: int) -> np.ndarray:
        """Move on to tile row y when it is new; returns the rows finished by that."""
        if self._row >= 0 and y == self.ys[self._row]:
            return self._emit(0)
        k = self._row + 1
        if k >= len(self.ys) or self.ys[k] != y:
            expect = self.ys[k] if k < len(self.ys) else "none (all rows added)"
            raise ValueError(f"RowMerger.add: tile row y={y} out of order; next expected y={expect}")
        if self._row >= 0 and len(self._seen) != len(self.xs):
            raise ValueError(f"RowMerger.add: tile row y={self.ys[self._row]} incomplete "
                             f"({len(self._seen)} of {len(self.xs)} tiles) before row y={y}")
        self._row, self._seen = k, set()
        done = self._emit(self.scale * y - self._top)
        return done

    def _emit(self, count: int) -> np.ndarray:
        """Normalise and return the image's rows among the first `count` accumulator rows, shift the rest up;
        crops the margin and the padding."""
        s, m = self.scale, self.margin
        first = self._top
        lo, hi = max(first, s * m), min(first + count, s * (m + self.height))  # rows of the image itself
        keep = max(0, hi - lo)
        cols = slice(s * m, s * (m + self.width))
        rows = np.empty((keep, s * self.width, self.channels), dtype=np.float32)  # the only copy, channel by channel
        for c in range(self.channels):
            np.divide(self._acc[c, lo - first: lo - first + keep, cols], self._norm_x[None, cols], out=rows[:, :, c])
        rows /= self._norm_y[lo: lo + keep, None, None]
        if count:
            self._acc[:, :-count] = self._acc[:, count:]
            self._acc[:, -count:] = 0.0
        self._top += count
        self._emitted += keep
        return rows
