import pytest
import torch

from oldphoto.ops.masks import classical_detect, dilate, downsample_mask, tophat_response


def _dot(h=9, w=9, y=4, x=4):
    m = torch.zeros(1, 1, h, w)
    m[0, 0, y, x] = 1
    return m


def test_dilate_grows_by_radius_square():
    out = dilate(_dot(), 2)
    assert out.shape == (1, 1, 9, 9)
    assert out.sum() == 25
    assert out[0, 0, 2:7, 2:7].eq(1).all()


def test_dilate_at_border_does_not_wrap_or_spill():
    out = dilate(_dot(y=0, x=0), 1)
    assert out.sum() == 4 and out[0, 0, :2, :2].eq(1).all()


def test_dilate_zero_is_identity_and_rejects_bad_input():
    m = _dot()
    assert torch.equal(dilate(m, 0), m)
    with pytest.raises(ValueError, match=r"\(1, 9, 9\)"):
        dilate(m[0], 1)
    with pytest.raises(ValueError, match="radius"):
        dilate(m, -1)


def test_downsample_keeps_any_defect_in_a_cell():
    m = torch.zeros(2, 1, 16, 16)
    m[0, 0, 5, 9] = 1  # one pixel -> latent cell (1, 2) at /4
    out = downsample_mask(m, (4, 4))
    assert out.shape == (2, 1, 4, 4)
    assert out[0, 0, 1, 2] == 1 and out.sum() == 1


def test_downsample_non_dividing_size_and_refuses_upsampling():
    m = torch.rand(1, 1, 30, 22)
    assert downsample_mask(m, (8, 6)).shape == (1, 1, 8, 6)
    with pytest.raises(ValueError, match="<="):
        downsample_mask(m, (60, 6))


def test_tophat_finds_thin_lines_of_both_polarities_not_flat_regions():
    img = torch.full((1, 3, 32, 32), 0.5)
    img[..., 10, :] = 0.9  # white scratch, 1 px
    img[..., :, 20] = 0.1  # dark scratch, 1 px
    img[..., 25:, :5] = 0.8  # broad bright area: not a defect at this scale
    r = tophat_response(img, 5)
    assert r.shape == (1, 1, 32, 32)
    assert r[0, 0, 10, 3] == pytest.approx(0.4, abs=1e-6)
    assert r[0, 0, 3, 20] == pytest.approx(0.4, abs=1e-6)
    assert r[0, 0, 2:8, 2:8].abs().max() < 1e-6
    assert r[0, 0, 28, 1] < 1e-6  # inside the broad bright block
    mask = classical_detect(img, 5, 0.2)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[0, 0, 10].sum() >= 30 and mask[0, 0, :, 20].sum() >= 30


def test_tophat_rejects_even_size_and_bad_shape():
    with pytest.raises(ValueError, match="odd"):
        tophat_response(torch.rand(1, 1, 8, 8), 4)
    with pytest.raises(ValueError, match=r"\(1, 2, 8, 8\)"):
        tophat_response(torch.rand(1, 2, 8, 8), 5)
