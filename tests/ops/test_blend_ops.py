import re

import pytest
import torch

from oldphoto.ops.blend import BLEND_FEATURES, blend, blend_features, intact_low_band


def _scene(seed=0, h=32, w=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, h, w, generator=g) * 0.6 + 0.2
    o = (x + 0.1 * torch.randn(2, 3, h, w, generator=g)).clamp(0, 1)
    m = torch.zeros(2, 1, h, w)
    m[0, :, 10:14, 5:30] = 1
    return x, o, m


def test_full_strength_is_the_restoration_and_zero_gives_the_scan_back_outside_defects():
    x, o, m = _scene()
    assert torch.equal(blend(x, o, m, torch.ones(2, 2)), o)
    none = blend(x, o, m, torch.zeros(2, 2))
    assert torch.allclose(none * (1 - m), x * (1 - m), atol=1e-6)
    # inside a defect the fill stays, moved only by the low band of the change around it
    low = intact_low_band(o - x, m)
    assert torch.allclose((none * m)[0], ((o - low).clamp(0, 1) * m)[0], atol=1e-6)


def test_low_band_ignores_defects_and_keeps_a_constant():
    d = torch.full((1, 1, 32, 32), 0.25)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    d[m.bool()] = 5.0  # a fill's change must not leak into the tone
    assert torch.allclose(intact_low_band(d, m), torch.full_like(d, 0.25), atol=1e-5)


def test_features_are_finite_one_row_per_image_and_see_the_change():
    x, o, m = _scene()
    f = blend_features(x, o, m)
    assert f.shape == (2, len(BLEND_FEATURES)) and torch.isfinite(f).all()
    assert f[0, 0] > 0 and f[1, 0] == 0  # defect share
    same = blend_features(x, x, m)
    assert same[:, BLEND_FEATURES.index("change_rgb")].abs().max() == 0
    gray = x[:, :1].expand(-1, 3, -1, -1)
    assert blend_features(gray, gray, m)[:, BLEND_FEATURES.index("scan_saturation")].abs().max() == 0


@pytest.mark.parametrize("shapes, says", [(((2, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32)), r"m \(B, 1, H, W\)"),
                                          (((2, 3, 4, 32), (2, 3, 4, 32), (2, 1, 4, 32)), r"H, W >= 8")])
def test_features_reject_wrong_shapes_showing_them(shapes, says):
    with pytest.raises(ValueError, match=says):
        blend_features(*(torch.zeros(s) for s in shapes))
    with pytest.raises(ValueError, match=r"strengths \(B, 2\), got .*\(2, 1\)"):
        blend(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(2, 1))


@pytest.mark.parametrize("mask_shape", [(2, 3, 8, 8), (2, 1, 16, 16), (1, 1, 8, 8)])
def test_blend_refuses_a_mask_that_is_not_b_1_h_w(mask_shape):
    # a 3-channel mask was taken as a per-channel one; other sizes failed in broadcasting, shapes unnamed
    with pytest.raises(ValueError, match=r"m \(B, 1, H, W\).*" + re.escape(str(mask_shape))):
        blend(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.zeros(mask_shape), torch.ones(2, 2))


def test_blend_refuses_a_scan_without_a_batch_axis_by_its_shape():
    # a 0-d scan used to fail in x.shape[0] before the check, with an IndexError
    with pytest.raises(ValueError, match=re.escape("got (), (2, 3, 8, 8)")):
        blend(torch.tensor(0.0), torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), torch.ones(2, 2))


@pytest.mark.parametrize("d_shape, m_shape", [((2, 1, 16, 16), (2, 1, 1, 1)), ((2, 1, 16, 16), (2, 3, 16, 16)),
                                              ((1, 16, 16), (1, 16, 16))])
def test_low_band_refuses_a_mask_that_does_not_fit_showing_both_shapes(d_shape, m_shape):
    # a (B, 1, 1, 1) mask broadcast silently; a 3-channel one blurred into a 3-channel result
    with pytest.raises(ValueError, match=re.escape(f"got {d_shape} and {m_shape}")):
        intact_low_band(torch.zeros(d_shape), torch.zeros(m_shape))
