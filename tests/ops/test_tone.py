import numpy as np
import pytest

from oldphoto.ops.tone import BINS, CurveFit, ToneCurve, monotone


def test_monotone_pools_violators_by_weight():
    np.testing.assert_allclose(monotone(np.array([1.0, 2, 3]), np.ones(3)), [1, 2, 3])
    np.testing.assert_allclose(monotone(np.array([1.0, 3, 2, 4]), np.array([1.0, 1, 3, 1])), [1, 2.25, 2.25, 4])
    out = monotone(np.random.default_rng(0).random(50), np.ones(50))
    assert np.all(np.diff(out) >= 0)
    with pytest.raises(ValueError, match=r"\(3,\) and \(2,\)"):
        monotone(np.zeros(3), np.zeros(2))


def test_an_unchanged_restoration_fits_the_identity_exactly():
    rng = np.random.default_rng(1)
    scan = rng.random((40, 50, 3)).astype(np.float32) ** 2  # uneven values within the bins
    fit = CurveFit(3)
    fit.add(scan, scan)
    np.testing.assert_allclose(fit.curve()(scan), scan, atol=2e-7)


def test_a_global_fade_correction_is_recovered_and_defects_do_not_count():
    rng = np.random.default_rng(2)
    scan = (0.2 + 0.6 * rng.random((60, 60, 3))).astype(np.float32)  # a faded print
    restored = np.clip((scan - 0.2) / 0.6, 0, 1) ** 1.2  # what the restorer made of it
    defect = np.zeros((60, 60), bool)
    defect[:, 20:24] = True
    restored[defect] = 1.0  # a scratch refilled with something unrelated to the scan
    fit = CurveFit(3)
    fit.add(scan, restored, ~defect)
    curve = fit.curve()
    expect = np.clip((scan - 0.2) / 0.6, 0, 1) ** 1.2
    assert np.abs(curve(scan) - expect)[~defect].max() < 0.02
    assert all(np.all(np.diff(ys) >= 0) for ys in curve.ys)


def test_gray_scans_drive_every_channel_and_shapes_are_checked():
    fit = CurveFit(3)
    gray = np.linspace(0, 1, 200, dtype=np.float32).reshape(10, 20, 1)
    fit.add(gray, np.concatenate([gray, gray * 0.5, gray], axis=2))
    out = fit.curve()(gray)
    assert out.shape == (10, 20, 3)
    inside = (gray[..., 0] >= fit.curve().xs[1][0]) & (gray[..., 0] <= fit.curve().xs[1][-1])
    assert inside.mean() >= 0.95  # beyond the end knots the curve goes on with slope 1
    np.testing.assert_allclose(out[..., 1][inside], gray[..., 0][inside] * 0.5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(10, 20, 2\)"):
        fit.add(gray, np.zeros((10, 20, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
        ToneCurve((np.zeros(2, np.float32),) * 3, (np.zeros(2, np.float32),) * 3)(np.zeros((2, 2, 2)))
    assert BINS >= 16


def test_a_scan_without_its_channel_axis_is_refused_by_name():
    # (n, W) instead of (n, W, 1): was an IndexError from inside the shape check
    with pytest.raises(ValueError, match=r"got \(4, 5\) and \(4, 5, 3\)"):
        CurveFit(3).add(np.zeros((4, 5), np.float32), np.zeros((4, 5, 3), np.float32))


def test_an_intact_mask_that_is_not_bool_is_refused():
    # a 0/1 integer array indexed rows 0 and 1 instead of selecting pixels: a wrong fit, silently
    scan = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5, 1)
    with pytest.raises(ValueError, match=r"intact must be bool \(4, 5\), got int64 \(4, 5\)"):
        CurveFit(1).add(scan, scan, np.ones((4, 5), np.int64))
