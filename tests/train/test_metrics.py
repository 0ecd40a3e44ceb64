import math

import pytest
import torch

from oldphoto.train.metrics import psnr, ssim


def test_psnr_known_value():
    x = torch.zeros(1, 1, 8, 8)
    y = torch.full((1, 1, 8, 8), 0.1)
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01 -> 20 dB
    assert math.isinf(psnr(x, x).item())


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 40, generator=g)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert torch.allclose(ssim(x, noisy), ssim(noisy, x), atol=1e-6)
    more = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, more) < ssim(x, noisy)).all()
    assert (ssim(x, noisy) < 1).all()


def test_ssim_constant_shift_is_luminance_term_only():
    x = torch.full((1, 1, 16, 16), 0.5)
    y = torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    want = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)
    assert ssim(x, y).item() == pytest.approx(want, rel=1e-5)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\)"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
