"""Band-wise whole-image operations give the same result as the whole-image versions."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oldphoto.ops.bands import BoxShrinker, RowDilator, resize_rows, shrink_size, weighted_low_band
from oldphoto.ops.filters import gaussian_taps, normalized_blur
from oldphoto.ops.masks import dilate


def _bands(n: int, sizes):
    i = 0
    k = 0
    while i < n:
        step = sizes[k % len(sizes)]
        yield i, min(n, i + step)
        i += step
        k += 1


def test_shrink_size_keeps_aspect_and_never_grows():
    assert shrink_size(1000, 2000, 512) == (256, 512)
    assert shrink_size(100, 50, 512) == (100, 50)
    assert shrink_size(3, 5000, 512) == (1, 512)


@pytest.mark.parametrize("h,w,oh,ow", [(64, 96, 16, 24), (70, 45, 13, 7), (5, 5, 5, 5), (31, 1, 4, 1)])
def test_box_shrinker_matches_area_average(h, w, oh, ow):
    rng = np.random.default_rng(1)
    img = rng.random((h, w, 2)).astype(np.float32)
    s = BoxShrinker(h, w, 2, oh, ow)
    for a, b in _bands(h, [7, 3, 11]):
        s.add(img[a:b])
    got = s.result()
    assert got.shape == (2, oh, ow)
    # reference: mean over the pixels of each bin, bin of index i = i * out // in
    rb = (np.arange(h) * oh) // h
    cb = (np.arange(w) * ow) // w
    want = np.zeros((2, oh, ow))
    for i in range(oh):
        for j in range(ow):
            want[:, i, j] = img[rb == i][:, cb == j].mean(axis=(0, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if h % oh == 0 and w % ow == 0:  # integer factors: same as torch's area pooling
        ref = F.adaptive_avg_pool2d(torch.from_numpy(img).permute(2, 0, 1)[None], (oh, ow))[0]
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)


def test_box_shrinker_refuses_missing_rows():
    s = BoxShrinker(10, 10, 1, 5, 5)
    s.add(np.zeros((4, 10, 1)))
    with pytest.raises(ValueError, match="4 of 10"):
        s.result()
    with pytest.raises(ValueError, match=r"\(3, 9, 1\)"):
        s.add(np.zeros((3, 9, 1)))


@pytest.mark.parametrize("size", [(40, 70), (37, 51), (8, 8), (100, 9)])
def test_resize_rows_matches_interpolate(size):
    torch.manual_seed(0)
    small = torch.rand(2, 8, 9)
    ref = F.interpolate(small[None], size, mode="bilinear", align_corners=False)[0]
    parts = [resize_rows(small, *size, a, b) for a, b in _bands(size[0], [5, 1, 13])]
    torch.testing.assert_close(torch.cat(parts, dim=1), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("radius", [0, 1, 3])
@pytest.mark.parametrize("band", [1, 4, 25])
def test_row_dilator_matches_whole_mask_dilation(radius, band):
    rng = np.random.default_rng(radius * 10 + band)
    mask = rng.random((53, 41)) < 0.02
    d = RowDilator(41, radius)
    parts = [d.push(mask[a:b]) for a, b in _bands(53, [band])] + [d.finish()]
    got = np.concatenate(parts)
    want = dilate(torch.from_numpy(mask).float()[None, None], radius)[0, 0].numpy() > 0.5
    assert got.shape == mask.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("band", [1, 7, 64])
def test_weighted_low_band_matches_whole_image_and_ignores_zero_weights(band):
    rng = np.random.default_rng(3)
    h, w, c = 64, 48, 3
    d = rng.normal(size=(h, w, c)).astype(np.float32)
    wt = (rng.random((h, w, 1)) > 0.3).astype(np.float32)
    bands = ((d[a:a + band], wt[a:a + band]) for a in range(0, h, band))
    got = weighted_low_band(bands, h, w, c, 16, 12, 1.5)
    assert got.shape == (c, 16, 12)
    dw = F.avg_pool2d(torch.from_numpy(d * wt).permute(2, 0, 1)[None], 4)
    ws = F.avg_pool2d(torch.from_numpy(wt).permute(2, 0, 1)[None], 4)
    want = normalized_blur(dw, ws, gaussian_taps(1.5))[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # what zero-weight pixels hold never reaches the result
    d2 = np.where(wt > 0, d, 1e3).astype(np.float32)
    again = weighted_low_band(((d2[a:a + band], wt[a:a + band]) for a in range(0, h, band)), h, w, c, 16, 12, 1.5)
    torch.testing.assert_close(again, got, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("w_shape", [(10, 8, 2), (9, 8, 1)])
def test_weighted_low_band_names_bands_that_do_not_fit(w_shape):
    # weights of 2 channels reached BoxShrinker as a 3-channel concatenation; 9 rows beside 10 failed in numpy
    d, wt = np.zeros((10, 8, 1), np.float32), np.ones(w_shape, np.float32)
    says = f"expected d (n, 8, 1) and w (n, 8, 1), got (10, 8, 1) and {w_shape}"
    with pytest.raises(ValueError, match=re.escape(says)):
        weighted_low_band([(d, wt)], 10, 8, 1, 5, 4, 1.0)


def test_weighted_low_band_refuses_missing_rows():
    d, wt = np.zeros((10, 8, 1), np.float32), np.ones((10, 8, 1), np.float32)
    with pytest.raises(ValueError, match="10 of 20 rows"):
        weighted_low_band([(d, wt)], 20, 8, 1, 5, 4, 1.0)


@pytest.mark.parametrize("h,w", [(37, 51), (8, 12), (1, 5), (30, 3)])
def test_box_shrinker_in_fixed_cells_is_ceil_mode_area_pooling(h, w):
    rng = np.random.default_rng(4)
    img = rng.random((h, w, 2)).astype(np.float32)
    s = BoxShrinker(h, w, 2, -(-h // 4), -(-w // 4), cell=4)
    for a, b in _bands(h, [5, 2, 9]):
        s.add(img[a:b])
    ref = F.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1)[None], 4, ceil_mode=True)[0]
    np.testing.assert_allclose(s.result(), ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="cells of 4 px"):
        BoxShrinker(h, w, 2, -(-h // 4), -(-w // 4) + 1, cell=4)
