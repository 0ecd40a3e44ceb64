"""Whole-image operations done band by band (rows top to bottom) so big images never exist as float arrays.

- BoxShrinker: area-average an image streamed in row bands down to a small size (colorizer input).
- resize_rows: rows [r0, r1) of the bilinear upsampling of a small image to full size (colorizer output).
- RowDilator: square binary dilation of a mask streamed in row bands (same result as masks.dilate).
- weighted_low_band: the low band of a difference over weights, streamed in row bands (tone and blend passes).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .filters import gaussian_taps, normalized_blur


def shrink_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side at most `long_side` and the aspect kept; never larger than (height, width)."""
    if height < 1 or width < 1 or long_side < 1:
        raise ValueError(f"shrink_size: sizes must be positive, got {(height, width)} and {long_side}")
    k = min(1.0, long_side / max(height, width))
    return max(1, min(height, round(height * k))), max(1, min(width, round(width * k)))


def _bin_starts(size: int, bins: int, cell: int | None = None) -> np.ndarray:
    """First index of each of `bins` contiguous, non-empty bins over range(size): bin of i is i*bins//size, or
    i//cell with a fixed `cell` (bins = ceil(size / cell), the last one holding what is left)."""
    if cell is not None:
        return np.arange(bins) * cell
    return -((-np.arange(bins) * size) // bins)  # ceil(b * size / bins)


class BoxShrinker:
    """Area average of an (H, W, C) image given in row bands, down to (h, w): result() -> (C, h, w) float32.

    Output cell (i, j) is the mean of the input pixels whose bin is (i, j), with the bin of row r being
    r*h//H (same for columns), so every input pixel counts once and equal-size bins get equal weight.
    With `cell` the bins are cell x cell pixels from the top left instead, those at the bottom and right holding
    what is left (h = ceil(H / cell), w = ceil(W / cell)): F.avg_pool2d(cell, ceil_mode=True).
    """

    def __init__(self, height: int, width: int, channels: int, out_height: int, out_width: int, *,
                 cell: int | None = None):
        if not (1 <= out_height <= height and 1 <= out_width <= width) or channels < 1:
            raise ValueError(f"BoxShrinker: cannot shrink {(height, width, channels)} to {(out_height, out_width)}")
        if cell is not None and (cell < 1 or (out_height, out_width) != (-(-height // cell), -(-width // cell))):
            raise ValueError(f"BoxShrinker: {(out_height, out_width)} is not {(height, width)} in cells of {cell} px")
        self.height, self.width, self.channels = height, width, channels
        self.out_height, self.out_width = out_height, out_width
        self._row_starts = _bin_starts(height, out_height, cell)
        self._col_starts = _bin_starts(width, out_width, cell)
        self._sum = np.zeros((out_height, out_width, channels), dtype=np.float64)
        self._rows = 0

    def add(self, rows: np.ndarray) -> None:
        """The next band of rows (n, W, C) float, in order from the top."""
        rows = np.asarray(rows)
        if rows.ndim != 3 or rows.shape[1:] != (self.width, self.channels):
            raise ValueError(f"BoxShrinker.add: expected rows (n, {self.width}, {self.channels}), got {rows.shape}")
        n = rows.shape[0]
        if self._rows + n > self.height:
            raise ValueError(f"BoxShrinker.add: {self._rows + n} rows given for an image of height {self.height}")
        if n == 0:
            return
        cols = np.add.reduceat(rows.astype(np.float64), self._col_starts, axis=1)  # (n, w, C)
        bins = np.searchsorted(self._row_starts, self._rows + np.arange(n), side="right") - 1
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        self._sum[bins[starts]] += np.add.reduceat(cols, starts, axis=0)
        self._rows += n

    def result(self) -> np.ndarray:
        """The shrunk image (C, h, w) float32; all H rows must have been added."""
        if self._rows != self.height:
            raise ValueError(f"BoxShrinker.result: {self._rows} of {self.height} rows added")
        row_n = np.diff(np.r_[self._row_starts, self.height])
        col_n = np.diff(np.r_[self._col_starts, self.width])
        counts = row_n[:, None] * col_n[None, :]
        out = np.empty((self.channels, self.out_height, self.out_width), np.float32)
        for k in range(self.channels):  # one channel at a time: no float64 copy of the whole sum (200 MB at 100 MP)
            np.divide(self._sum[..., k], counts, out=out[k], casting="same_kind")
        return out


def weighted_low_band(bands: Iterable[tuple[np.ndarray, np.ndarray]], height: int, width: int, channels: int,
                      out_height: int, out_width: int, sigma: float, *, cell: int | None = None) -> torch.Tensor:
    """The low band of a difference d over weights w, small: (C, h, w) float32.

    bands: (d (n, W, C) float, w (n, W, 1) float in [0, 1], e.g. 1 on intact pixels) in row bands from the top,
    covering all `height` rows. Both d * w and w are area-averaged to (out_height, out_width) (BoxShrinker; in
    cell x cell squares with `cell`) and blurred there (Gaussian of `sigma` small pixels): normalised convolution,
    so zero-weight pixels neither count nor keep their own values. Only the small sums ever exist whole.
    """
    shrinker = BoxShrinker(height, width, channels + 1, out_height, out_width, cell=cell)
    for d, w in bands:
        if d.ndim != 3 or d.shape[1:] != (width, channels) or w.shape != (*d.shape[:2], 1):
            # checked here: BoxShrinker would only see their concatenation, of a channel count neither has
            raise ValueError(f"weighted_low_band: expected d (n, {width}, {channels}) and w (n, {width}, 1), got "
                             f"{d.shape} and {w.shape}")
        shrinker.add(np.concatenate([d * w, w], axis=2))
    small = torch.from_numpy(shrinker.result())[None]  # (1, C + 1, h, w): means of d * w and of w
    del shrinker  # its float64 sums: 200 MB at 100 MP, not needed through the blur
    return normalized_blur(small[:, :channels], small[:, channels:], gaussian_taps(sigma))[0]


def _linear_taps(out_size: int, in_size: int, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices i0, i1 and weight of i1 for outputs [first, last) (half-pixel centres, edges clamped)."""
    dst = torch.arange(first, last, dtype=torch.float64)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    return i0, i1, (src - i0).float()


def resize_rows(small: torch.Tensor, height: int, width: int, first: int, last: int) -> torch.Tensor:
    """Rows [first, last) of `small` (C, h, w) float resized bilinearly to (height, width) -> (C, last-first, width).

    Same values as F.interpolate(small[None], (height, width), mode="bilinear", align_corners=False),
    without building the full-size result.
    """
    if small.dim() != 3:
        raise ValueError(f"resize_rows: expected a (C, h, w) tensor, got shape {tuple(small.shape)}")
    if not 0 <= first <= last <= height:
        raise ValueError(f"resize_rows: rows [{first}, {last}) outside the height {height}")
    _, h, w = small.shape
    small = small.float()
    r0, r1, fr = _linear_taps(height, h, first, last)
    fr = fr.to(small.device)[None, :, None]
    rows = small[:, r0.to(small.device)] * (1 - fr) + small[:, r1.to(small.device)] * fr  # (C, n, w)
    c0, c1, fc = _linear_taps(width, w, 0, width)
    fc = fc.to(small.device)[None, None, :]
    return rows[:, :, c0.to(small.device)] * (1 - fc) + rows[:, :, c1.to(small.device)] * fc


def _dilate_lines(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Binary max filter of width 2r+1 along one axis of a bool array (outside counts as False)."""
    out = x.copy()
    size = x.shape[axis]
    for d in range(1, min(radius, size - 1) + 1):
        lo = [slice(None)] * x.ndim
        hi = [slice(None)] * x.ndim
        lo[axis], hi[axis] = slice(0, size - d), slice(d, size)
        out[tuple(hi)] |= x[tuple(lo)]
        out[tuple(lo)] |= x[tuple(hi)]
    return out


class RowDilator:
    """Grow a bool mask (H, W), streamed in row bands, by `radius` pixels with a square (2r+1)^2 element.

    push(rows) returns the dilated rows that are final (their r rows below have arrived), finish() the rest;
    together they equal the dilation of the whole mask. Holds about 2r rows besides the band.
    """

    def __init__(self, width: int, radius: int):
        if width < 1 or radius < 0:
            raise ValueError(f"RowDilator: need width >= 1 and radius >= 0, got {width}, {radius}")
        self.width, self.radius = width, radius
        self._raw = np.zeros((0, width), dtype=bool)  # input rows from self._raw_first on
        self._raw_first = 0
        self._received = 0
        self._done = 0  # rows returned so far

    def push(self, rows: np.ndarray) -> np.ndarray:
        """Next rows (n, W) bool from the top -> final dilated rows (m, W) bool."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"RowDilator.push: expected rows (n, {self.width}), got {rows.shape}")
        self._raw = np.concatenate([self._raw, rows.astype(bool, copy=False)])
        self._received += rows.shape[0]
        return self._flush(self._received - self.radius)

    def finish(self) -> np.ndarray:
        """The remaining dilated rows once every row has been pushed."""
        return self._flush(self._received)

    def _flush(self, until: int) -> np.ndarray:
        until = max(until, self._done)
        if until == self._done:
            return np.zeros((0, self.width), dtype=bool)
        r = self.radius
        window = self._raw[: until + r - self._raw_first]  # raw rows [raw_first, until + r)
        grown = _dilate_lines(_dilate_lines(window, r, 1), r, 0)
        out = grown[self._done - self._raw_first: until - self._raw_first]
        self._done = until
        drop = max(0, self._done - r - self._raw_first)
        self._raw = self._raw[drop:]
        self._raw_first += drop
        return out.copy()
