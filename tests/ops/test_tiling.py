"""Tiling: grid geometry, exact identity round trips, blending, streaming merge, upscaled tiles, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oldphoto.ops.tiling import RowMerger, axis_norm, axis_weights, grid, merge, mirror_index, split


def _image(h: int, w: int, c: int, dtype, seed: int = 0) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, size=(c, h, w), dtype=np.int64).astype(dtype)


def _to_float(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max))


def _back(x: torch.Tensor, dtype) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.rint(np.clip(x.numpy(), 0, 1) * top).astype(dtype)


@pytest.mark.parametrize("size,tile,overlap", [(1, 64, 0), (64, 64, 16), (65, 64, 16), (300, 64, 32),
                                               (1000, 256, 32), (513, 128, 64), (129, 128, 0)])
def test_grid_covers_flush_and_overlaps_enough(size, tile, overlap):
    starts = grid(size, tile, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if size <= tile:
        assert starts == [0]
        return
    assert starts[-1] == size - tile  # flush with the end
    gaps = np.diff(starts)
    assert (tile - gaps >= overlap).all()  # every neighbour pair shares at least `overlap` pixels
    assert gaps.max() - gaps.min() <= 1  # evenly spread
    # the fewest tiles that satisfy the overlap: one tile less could not cover the image
    n = len(starts)
    assert (n - 2) * (tile - overlap) + tile < size


def test_mirror_index_reflects_without_repeating_the_edge():
    assert mirror_index(3, 8).tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert mirror_index(1, 4).tolist() == [0, 0, 0, 0]
    assert mirror_index(2, 5).tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("starts", [[0], [0, 44], [0, 50, 100, 150], [0, 1]])
def test_axis_weights_are_one_at_borders_and_normalise(starts, scale):
    tile = 64
    ws = axis_weights(starts, tile, scale)
    assert ws[0][0] == 1.0 and ws[-1][-1] == 1.0  # image borders keep full weight
    assert all((w > 0).all() and (w <= 1).all() for w in ws)
    norm = axis_norm(starts, tile, scale)
    assert (norm > 0).all()
    if len(starts) <= 2 or all(b - a >= tile // 2 for a, b in zip(starts, starts[1:])):
        # at most two tiles overlap anywhere: the raised-cosine ramps sum exactly to one
        np.testing.assert_allclose(norm, 1.0, atol=1e-12)


SIZES = [(1, 1), (7, 300), (300, 7), (5, 5), (63, 64), (64, 64), (100, 130), (129, 257), (200, 333)]


@pytest.mark.parametrize("overlap", [0, 16, 32, 64])
@pytest.mark.parametrize("h,w", SIZES)
def test_identity_split_merge_is_exact_uint16(h, w, overlap):
    tile = 128
    img = _image(h, w, 3, np.uint16, seed=h * 1000 + w)
    tiles, boxes = split(_to_float(img), tile, overlap)
    assert tiles.shape[1:] == (3, tile, tile)
    out = merge(tiles, boxes, (h, w), tile, overlap)
    assert out.shape == (3, h, w)
    np.testing.assert_array_equal(_back(out, np.uint16), img)


@pytest.mark.parametrize("h,w", [(1, 1), (7, 300), (70, 45), (200, 201)])
def test_identity_split_merge_is_exact_uint8_gray(h, w):
    img = _image(h, w, 1, np.uint8, seed=3)
    tiles, boxes = split(_to_float(img), 64, 16)
    np.testing.assert_array_equal(_back(merge(tiles, boxes, (h, w), 64, 16), np.uint8), img)


def test_merge_of_a_constant_is_constant():
    tiles, boxes = split(torch.zeros(2, 150, 230), 64, 24)
    out = merge(torch.full_like(tiles, 0.3), boxes, (150, 230), 64, 24)
    np.testing.assert_allclose(out.numpy(), 0.3, rtol=0, atol=1e-6)


def test_feathering_blends_neighbours_smoothly():
    # Each tile filled with its own constant: the result moves monotonically across the shared stretch
    # instead of jumping, and is exactly the tile's value outside the overlap.
    h, w, tile, overlap = 64, 112, 64, 16
    tiles, boxes = split(torch.zeros(1, h, w), tile, overlap)
    assert [b[1] for b in boxes] == [0, 48]
    vals = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand_as(tiles)
    row = merge(vals, boxes, (h, w), tile, overlap)[0, 0].numpy()
    assert (row[:48] == 0).all() and (row[64:] == 1).all()
    assert (np.diff(row[48:64]) > 0).all()


@pytest.mark.parametrize("h,w,overlap", [(7, 300, 16), (150, 230, 24), (1, 1, 0), (257, 129, 32)])
@pytest.mark.parametrize("scale", [1, 2])
def test_row_merger_equals_merge(h, w, overlap, scale):
    tile = 64
    torch.manual_seed(0)
    ny = len(grid(max(h, tile), tile, overlap))
    nx = len(grid(max(w, tile), tile, overlap))
    tiles = torch.rand(ny * nx, 3, scale * tile, scale * tile)
    boxes = [(y, x) for y in grid(max(h, tile), tile, overlap) for x in grid(max(w, tile), tile, overlap)]
    ref = merge(tiles, boxes, (h, w), tile, overlap, scale).numpy().transpose(1, 2, 0)

    rm = RowMerger(w, 3, tile, overlap, scale, height=h)
    parts = []
    for r in range(ny):
        row = tiles[r * nx:(r + 1) * nx]
        xs = [b[1] for b in boxes[r * nx:(r + 1) * nx]]
        # feed each tile row in two calls, the second half first: order within a row is free
        half = nx // 2
        parts.append(rm.add(row[half:], boxes[r * nx][0], xs[half:]))
        parts.append(rm.add(row[:half], boxes[r * nx][0], xs[:half]))
    parts.append(rm.finish())
    got = np.concatenate(parts)
    assert got.shape == (scale * h, scale * w, 3)
    assert rm.rows_done == scale * h
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_row_merger_holds_about_one_tile_row():
    rm = RowMerger(4000, 3, 128, 32, 2, height=5000)
    assert rm._acc.nbytes <= 3 * 256 * 2 * 4000 * 4  # one output tile row wide, never the image


def test_row_merger_releases_rows_as_soon_as_final():
    tile, overlap, h, w = 64, 16, 200, 100
    rm = RowMerger(w, 1, tile, overlap, height=h)
    ys = rm.ys
    assert rm.add(torch.zeros(len(rm.xs), 1, tile, tile), ys[0]).shape[0] == 0
    out = rm.add(torch.zeros(len(rm.xs), 1, tile, tile), ys[1])
    assert out.shape == (ys[1], w, 1)  # rows above the second tile row are final


def test_scale2_nearest_identity_roundtrip():
    h, w, tile, overlap = 90, 150, 64, 16
    img = _image(h, w, 3, np.uint16, seed=7)
    tiles, boxes = split(_to_float(img), tile, overlap)
    up = F.interpolate(tiles, scale_factor=2, mode="nearest")
    out = merge(up, boxes, (h, w), tile, overlap, scale=2)
    want = img.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(_back(out, np.uint16), want)


def test_errors_show_actual_shapes():
    with pytest.raises(ValueError, match=r"\(3, 10\)"):
        split(torch.zeros(3, 10), 64, 16)
    tiles, boxes = split(torch.zeros(3, 70, 70), 64, 16)
    with pytest.raises(ValueError, match=r"\(4, 3, 32, 32\)"):
        merge(torch.zeros(4, 3, 32, 32), boxes, (70, 70), 64, 16)
    with pytest.raises(ValueError, match="boxes"):
        merge(tiles, boxes[:-1] + [(1, 1)], (70, 70), 64, 16)
    rm = RowMerger(70, 3, 64, 16, height=70)
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        rm.add(torch.zeros(2, 1, 64, 64), 0, [0, 6])
    with pytest.raises(ValueError, match="out of order"):
        rm.add(torch.zeros(2, 3, 64, 64), 6)
    rm.add(torch.zeros(1, 3, 64, 64), 0, [0])
    with pytest.raises(ValueError, match="incomplete"):
        rm.add(torch.zeros(2, 3, 64, 64), 6)
    with pytest.raises(ValueError, match="missing"):
        rm.finish()
    with pytest.raises(ValueError, match="overlap"):
        grid(100, 64, 64)


def test_mirror_index_from_a_negative_start_matches_reflect_padding():
    for size, start, length in [(5, -3, 12), (2, -4, 9), (9, -16, 40), (1, -2, 5)]:
        want = np.pad(np.arange(size), (-start, length + start - size), mode="reflect" if size > 1 else "edge")
        assert mirror_index(size, length, start=start).tolist() == want.tolist()


@pytest.mark.parametrize("h,w,scale", [(7, 300, 1), (150, 230, 2), (1, 1, 1), (257, 129, 1)])
def test_row_merger_with_a_margin_returns_the_image_rows_of_the_grown_merge(h, w, scale):
    tile, overlap, m = 64, 16, 16
    ys, xs = grid(max(h + 2 * m, tile), tile, overlap), grid(max(w + 2 * m, tile), tile, overlap)
    torch.manual_seed(1)
    tiles = torch.rand(len(ys) * len(xs), 2, scale * tile, scale * tile)
    boxes = [(y, x) for y in ys for x in xs]
    grown = (ys[-1] + tile, xs[-1] + tile)
    ref = merge(tiles, boxes, grown, tile, overlap, scale).numpy().transpose(1, 2, 0)
    ref = ref[scale * m: scale * (m + h), scale * m: scale * (m + w)]
    rm = RowMerger(w, 2, tile, overlap, scale, height=h, margin=m)
    assert (rm.ys, rm.xs) == (ys, xs)
    parts = [rm.add(tiles[r * len(xs):(r + 1) * len(xs)], y) for r, y in enumerate(ys)] + [rm.finish()]
    got = np.concatenate(parts)
    assert got.shape == (scale * h, scale * w, 2) and rm.rows_done == scale * h
    np.testing.assert_allclose(got, ref, atol=2e-6)
    with pytest.raises(ValueError, match="margin"):
        RowMerger(w, 2, tile, overlap, scale, height=h, margin=tile)
