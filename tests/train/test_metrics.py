import math

import pytest
import torch

from oldphoto.train.metrics import psnr, ssim, tone_oracle


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


def _ssim_full_window(x, y, size=11, sigma=1.5):
    """Reference SSIM with an explicit 2-D window, to check the separable implementation."""
    import torch.nn.functional as F
    x, y = x.double(), y.double()
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)
    blur = lambda t: F.conv2d(t, win, groups=x.shape[1])  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def test_ssim_separable_window_and_float32_match_the_full_window():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 48, 37, generator=g)
    y = (x * 0.8 + 0.2 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    want = _ssim_full_window(x, y).float()
    assert torch.allclose(ssim(x, y), want, atol=1e-6)
    assert torch.allclose(ssim(x, y, dtype=torch.float32), want, atol=2e-5)
    pred = x.clone().requires_grad_(True)
    (1 - ssim(pred, y, dtype=torch.float32).mean()).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_tone_oracle_undoes_a_gain_and_offset_and_never_loses():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(3, 3, 16, 16, generator=g) * 0.6 + 0.2
    faded = 0.5 * y + 0.3  # stays inside [0, 1]: exactly invertible
    assert torch.allclose(tone_oracle(faded, y), y, atol=1e-5)
    other = (y + 0.2 * torch.randn(y.shape, generator=g)).clamp(0, 1)
    assert (psnr(tone_oracle(other, y), y) >= psnr(other, y) - 1e-4).all()
    assert (psnr(tone_oracle(other, y), y) > psnr(other, y) + 0.01).any()
    flat = torch.full_like(y, 0.5)
    assert torch.allclose(tone_oracle(flat, y), y.mean((2, 3), keepdim=True).expand_as(y), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(3, 3, 16, 16\)"):
        tone_oracle(y, y[:, :1])
