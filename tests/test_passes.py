import numpy as np
import pytest
import torch

from oldphoto.passes import even_tone, is_near_gray, keep_intact, make_gray


def _scan(h=256, w=384, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.3 + 0.4 * (xx / w) * (0.5 + 0.5 * yy / h) + 0.02 * rng.standard_normal((h, w))
    top = np.iinfo(dtype).max
    return np.rint(np.clip(base, 0, 1)[..., None].repeat(3, 2) * top).astype(dtype)


def test_an_unchanged_restoration_stays_exactly_as_it_was():
    for dtype in (np.uint8, np.uint16):
        scan = _scan(dtype=dtype)
        out = scan.copy()
        mask = np.zeros(scan.shape[:2], np.uint8)
        mask[100:110] = 255
        even_tone(out, scan, mask, 1)
        np.testing.assert_array_equal(out, scan)


def test_tiles_with_their_own_tone_get_the_photos_one_curve():
    yy, xx = np.mgrid[0:256, 0:384]
    pattern = 0.5 + 0.5 * np.sin(2 * np.pi * xx / 64) * np.sin(2 * np.pi * yy / 64)  # alike in every tile
    scan = np.rint((0.2 + 0.6 * pattern)[..., None].repeat(3, 2) * 65535).astype(np.uint16)
    s = scan.astype(np.float64) / 65535
    offsets = np.random.default_rng(3).uniform(-0.06, 0.06, (2, 3))  # each 128-px tile lifted or darkened alike
    block = np.kron(offsets, np.ones((128, 128)))[..., None]
    out = np.rint(np.clip(s ** 1.3 + block, 0, 1) * 65535).astype(np.uint16)
    even_tone(out, scan, None, 1)
    # what is left: the blocks' mean (the photo-wide curve keeps the tiles' average decision), nothing per tile
    err = out.astype(np.float64) / 65535 - s ** 1.3 - offsets.mean()
    assert np.abs(err[16:-16, 16:-16]).mean() < 0.1 * np.abs(offsets - offsets.mean()).mean()


def test_defect_fills_keep_their_content():
    scan = _scan(dtype=np.uint8)
    out = scan.copy()
    out[120:126] = 250  # a scratch the restorer filled with something the scan never had
    out[120:126, :, 1] = 10
    mask = np.zeros(scan.shape[:2], np.uint8)
    mask[118:128] = 255
    even_tone(out, scan, mask, 1)
    assert np.abs(out[120:126].astype(int) - np.array([250, 10, 250])).max() <= 2
    np.testing.assert_array_equal(out[:100], scan[:100])


def test_upscaled_outputs_and_gray_scans_and_shape_checks():
    scan = _scan(64, 96, np.uint8)[..., :1]
    out = np.repeat(np.repeat(scan, 2, 0), 2, 1)
    out3 = np.repeat(out, 3, 2)  # a gray scan being colorized: three equal channels out
    before = out3.copy()
    even_tone(out3, scan, None, 2)
    np.testing.assert_array_equal(out3, before)
    with pytest.raises(ValueError, match="scale 1"):
        even_tone(out3, scan, None, 1)


def test_all_defect_and_tiny_photos_pass_unchanged_or_safely():
    scan = _scan(40, 60, np.uint8)
    out = np.clip(scan.astype(int) + 30, 0, 255).astype(np.uint8)
    before = out.copy()
    even_tone(out, scan, np.full((40, 60), 255, np.uint8), 1)  # nothing intact: no curve, no change
    np.testing.assert_array_equal(out, before)
    tiny, tiny_out = _scan(2, 3, np.uint16), _scan(2, 3, np.uint16, seed=1)
    even_tone(tiny_out, tiny, None, 1)
    assert tiny_out.shape == (2, 3, 3) and tiny_out.dtype == np.uint16


def test_scan_tone_takes_the_tone_back_to_the_scans_and_keeps_detail():
    scan = _scan(dtype=np.uint16)
    s = scan.astype(np.float64) / 65535
    yy, xx = np.mgrid[0:256, 0:384]
    detail = 0.03 * np.sign(np.sin(2 * np.pi * xx / 4))[..., None]  # fine detail the restorer added
    out = np.rint(np.clip(0.8 * s + 0.05 + detail, 0, 1) * 65535).astype(np.uint16)  # and a tone change
    even_tone(out, scan, None, 1, strength=0.0)
    err = out.astype(np.float64) / 65535 - (s + detail)
    assert np.abs(err[16:-16, 16:-16]).mean() < 0.01  # the tone change went, the detail stayed
    fitted = _scan(dtype=np.uint16)
    out2 = np.rint(np.clip(0.8 * s + 0.05, 0, 1) * 65535).astype(np.uint16)
    even_tone(out2, fitted, None, 1)  # the fitted curve keeps the restorer's tone change
    assert np.abs(out2.astype(np.float64) / 65535 - (0.8 * s + 0.05))[16:-16, 16:-16].mean() < 0.01


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_tone_strength_applies_that_share_of_the_fitted_curve(strength):
    scan = _scan(dtype=np.uint16)
    s = scan.astype(np.float64) / 65535
    out = np.rint(np.clip(0.8 * s + 0.05, 0, 1) * 65535).astype(np.uint16)  # a tone change alone
    even_tone(out, scan, None, 1, strength=strength)
    want = s + strength * (0.8 * s + 0.05 - s)
    assert np.abs(out.astype(np.float64) / 65535 - want)[16:-16, 16:-16].mean() < 0.005


def test_tone_strength_out_of_range_is_refused():
    scan = _scan(40, 60, np.uint8)
    with pytest.raises(ValueError, match="strength must be in \\[0, 1\\], got 1.2"):
        even_tone(scan.copy(), scan, None, 1, strength=1.2)


def test_keep_intact_puts_the_scan_back_outside_the_mask_exactly():
    scan = _scan(40, 60, np.uint16)
    out = np.full_like(scan, 123)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:13, 5:50] = 255
    keep_intact(out, scan, mask)
    np.testing.assert_array_equal(out[mask == 0], scan[mask == 0])
    assert (out[mask > 0] == 123).all()
    gray = scan[..., :1]
    out3 = np.zeros_like(scan)  # a gray scan being colorized: three channels out
    keep_intact(out3, gray, mask)
    np.testing.assert_array_equal(out3[mask == 0], np.repeat(gray, 3, 2)[mask == 0])
    with pytest.raises(ValueError, match="do not match"):
        keep_intact(out, scan.astype(np.uint8), mask)


class _FixedGate:
    """A ScanBlend stand-in: fixed strengths, and the blocks it was shown."""

    def __init__(self, strengths):
        self.s, self.seen = strengths, None

    def strengths(self, x, o, m):
        self.seen = (x.shape, o.shape, m.shape)
        return torch.tensor([self.s] * len(x))


@pytest.mark.parametrize("dtype, gray", [(np.uint16, False), (np.uint8, True)])
def test_scan_blend_is_ops_blend_band_by_band(monkeypatch, dtype, gray):
    from oldphoto import passes
    from oldphoto.ops.blend import blend
    from oldphoto.ops.color import to_float

    monkeypatch.setattr(passes, "BAND_PIXELS", 384 * 40)  # several bands, not multiples of 4 rows
    scan = _scan(dtype=dtype)[..., :1] if gray else _scan(dtype=dtype)
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max
    out = np.clip(scan.astype(np.float64) + rng.normal(0, 0.05 * top, scan.shape) + 0.08 * top, 0, top).astype(dtype)
    mask = np.zeros(scan.shape[:2], np.uint8)
    mask[100:112, 30:200] = 255
    t = lambda a: torch.from_numpy(to_float(a)).permute(2, 0, 1)[None]  # noqa: E731
    want = blend(t(scan), t(out), torch.from_numpy(mask > 0).float()[None, None], torch.tensor([[0.3, 0.6]]))
    gate = _FixedGate((0.3, 0.6))
    got = out.copy()
    assert passes.scan_blend(got, scan, mask, gate) == pytest.approx((0.3, 0.6))
    assert gate.seen == ((2, 3, 256, 256), (2, 3, 256, 256), (2, 1, 256, 256))  # 256 x 384: two blocks
    np.testing.assert_allclose(to_float(got), want[0].permute(1, 2, 0).numpy(), atol=1.5 / top)
    same = out.copy()
    assert passes.scan_blend(same, scan, mask, _FixedGate((0.997, 1.0))) == (1.0, 1.0)  # near 1: as restored
    np.testing.assert_array_equal(same, out)


def test_scan_blend_leaves_tiny_photos_and_refuses_mismatches():
    from oldphoto.passes import scan_blend

    scan = _scan(6, 50)
    out = scan.copy()
    assert scan_blend(out, scan, np.zeros((6, 50), np.uint8), _FixedGate((0.0, 0.0))) is None
    with pytest.raises(ValueError, match="do not match"):
        scan_blend(out, scan[:, :40], np.zeros((6, 50), np.uint8), _FixedGate((0.0, 0.0)))


def test_scan_blend_averages_the_gate_over_every_block_chunk_by_chunk():
    from oldphoto.passes import BLEND_BLOCK, scan_blend

    class Counting:
        sizes: list = []

        def strengths(self, x, o, m):
            self.sizes.append(len(x))
            return torch.tensor([[0.2, 1.0]] * (len(x) - 1) + [[0.8, 1.0]])  # the last block of each chunk differs

    scan = _scan(2 * BLEND_BLOCK + 40, 2 * BLEND_BLOCK + 90)  # 3 x 3 blocks: one chunk of 8, one of 1
    gate = Counting()
    s_lo, s_hi = scan_blend(scan.copy(), scan, np.zeros(scan.shape[:2], np.uint8), gate)
    assert gate.sizes == [8, 1]
    assert s_lo == pytest.approx((7 * 0.2 + 0.8 + 0.8) / 9) and s_hi == pytest.approx(1.0)


def test_scan_blend_of_a_gray_scan_about_to_be_colorized():
    from oldphoto.ops.blend import blend
    from oldphoto.ops.color import to_float
    from oldphoto.passes import scan_blend

    scan = _scan(dtype=np.uint16)[..., :1]
    out = np.clip(scan.astype(np.int64) + 3000, 0, 65535).astype(np.uint16).repeat(3, axis=2)
    mask = np.zeros(scan.shape[:2], np.uint8)
    mask[50:60, 10:90] = 255
    got = out.copy()
    scan_blend(got, scan, mask, _FixedGate((0.5, 0.0)))
    t = lambda a: torch.from_numpy(to_float(a)).permute(2, 0, 1)[None]  # noqa: E731
    want = blend(t(scan).expand(-1, 3, -1, -1), t(out), torch.from_numpy(mask > 0).float()[None, None],
                 torch.tensor([[0.5, 0.0]]))
    np.testing.assert_allclose(to_float(got), want[0].permute(1, 2, 0).numpy(), atol=1.5 / 65535)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()  # still gray for colorize


def test_make_gray_gives_every_channel_the_rounded_mean():
    out = np.array([[[0, 1, 1], [65535, 65534, 65535], [10, 20, 31]]], np.uint16)
    make_gray(out)
    np.testing.assert_array_equal(out, np.array([[[1, 1, 1], [65535, 65535, 65535], [20, 20, 20]]], np.uint16))
    with pytest.raises(ValueError, match=r"\(2, 3, 1\)"):
        make_gray(np.zeros((2, 3, 1), np.uint8))


def test_is_near_gray_counts_only_intact_pixels_when_given_a_mask():
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 65536, size=(100, 80, 1))
    scan = np.clip(gray + rng.integers(-500, 501, size=(100, 80, 3)), 0, 65535).astype(np.uint16)  # within 2 %
    assert is_near_gray(scan)
    scan[10:15, 10:30] = (50000, 20000, 10000)  # a coloured stain on 1.25 % of the print
    assert not is_near_gray(scan)
    mask = np.zeros((100, 80), np.uint8)
    mask[10:15, 10:30] = 255
    assert is_near_gray(scan, mask)
    stamp = scan.copy()
    stamp[50:53, 50:53] = (60000, 5000, 5000)  # a red stamp on 0.11 % of the intact pixels keeps its colour
    assert not is_near_gray(stamp, mask)
    vivid = np.zeros((100, 80, 3), np.uint16)
    vivid[..., 0] = 60000  # a colour photo masked almost whole: the remainder does not decide
    almost = np.full((100, 80), 255, np.uint8)
    almost[:3, :3] = 0
    vivid[:3, :3] = 30000
    assert not is_near_gray(vivid, almost)
    colour = scan.copy()
    colour[::2, :, 0] //= 2  # half the pixels clearly coloured: a colour photo, mask or not
    assert not is_near_gray(colour, mask)
    with pytest.raises(ValueError, match=r"\(100, 79\)"):
        is_near_gray(scan, mask[:, :79])


@pytest.mark.parametrize("h, w", [(257, 385), (250, 383), (13, 30)])
def test_scan_blend_uses_the_gates_low_band_on_any_size(h, w):
    # sides that are not multiples of 4: the low band is still ops.blend's (4 x 4 cells, partial at the end), not
    # evenly spread bins of H / ceil(H / 4) rows (up to 1 % of full scale off at the bottom and right)
    from oldphoto.ops.blend import blend
    from oldphoto.ops.color import to_float
    from oldphoto.passes import scan_blend

    scan = _scan(h, w, np.uint16)
    rng = np.random.default_rng(1)
    out = np.clip(scan.astype(np.float64) + rng.normal(0, 3000, scan.shape) + 5000, 0, 65535).astype(np.uint16)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3: h // 3 + 5, 3: w // 2] = 255
    t = lambda a: torch.from_numpy(to_float(a)).permute(2, 0, 1)[None]  # noqa: E731
    want = blend(t(scan), t(out), torch.from_numpy(mask > 0).float()[None, None], torch.tensor([[0.3, 0.6]]))
    got = out.copy()
    scan_blend(got, scan, mask, _FixedGate((0.3, 0.6)))
    np.testing.assert_allclose(to_float(got), want[0].permute(1, 2, 0).numpy(), atol=1.5 / 65535)


def test_even_tone_refuses_a_scan_with_other_channels_than_the_output():
    # a 3-channel scan for a 1-channel restoration went through silently at strength 0 (channel 0 stood for all)
    scan = _scan(40, 60, np.uint8)
    for strength in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"even_tone: output \(40, 60, 1\), scan \(40, 60, 3\)"):
            even_tone(scan[..., :1].copy(), scan, None, 1, strength=strength)


def test_overlay_tints_defects_and_refuses_a_mask_of_another_size():
    from oldphoto.passes import OVERLAY_OPACITY, OVERLAY_TINT, overlay

    scan = _scan(20, 30, np.uint16)
    mask = np.zeros((20, 30), np.uint8)
    mask[5, 7] = 255
    shown = overlay(scan, mask)
    assert shown.dtype == np.uint8 and shown.shape == (20, 30, 3)
    base = scan[5, 7].astype(np.float64) / 65535 * 255
    np.testing.assert_array_equal(shown[5, 7], np.rint(base * (1 - OVERLAY_OPACITY) + np.array(OVERLAY_TINT) *
                                                        OVERLAY_OPACITY))
    assert shown[0, 0, 0] == round(scan[0, 0, 0] / 65535 * 255)
    with pytest.raises(ValueError, match=r"mask \(20, 29\) does not match the photo \(20, 30, 3\)"):
        overlay(scan, mask[:, :29])  # was an IndexError from a boolean index
