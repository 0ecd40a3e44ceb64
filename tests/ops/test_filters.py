import re

import pytest
import torch
import torch.nn.functional as F

from oldphoto.ops.filters import blur, gaussian_taps, masked_blur, normalized_blur


def test_masked_blur_keeps_flat_fields_and_smooths_detail():
    taps = gaussian_taps(2.0)
    assert taps.numel() % 2 == 1 and abs(float(taps.sum()) - 1) < 1e-6
    intact = torch.zeros(1, 1, 20, 24)
    flat = torch.full((1, 3, 20, 24), 0.3)
    assert torch.allclose(masked_blur(flat, intact, taps), flat, atol=1e-6)
    checker = (torch.arange(24).view(1, -1) + torch.arange(20).view(-1, 1)) % 2
    d = checker.float().expand(1, 3, -1, -1)
    assert float(masked_blur(d, intact, taps).std()) < 0.05 * float(d.std())


def test_masked_blur_ignores_defects_so_no_halo_leaves_the_mask():
    taps = gaussian_taps(2.0)
    d = torch.full((1, 3, 32, 32), 0.1)
    m = torch.zeros(1, 1, 32, 32)
    d[..., 15:17], m[..., 14:18] = 0.9, 1  # a bright scratch, inside a dilated mask
    low = masked_blur(d, m, taps)
    assert torch.allclose(low, torch.full_like(low, 0.1), atol=1e-5)  # the scratch leaks nowhere
    deep = torch.zeros(1, 1, 32, 32)
    deep[..., 4:28, 4:28] = 1
    assert torch.isfinite(masked_blur(d, deep, taps)).all()  # far from intact pixels: no division by zero


def test_blur_keeps_the_mean_of_a_ramp_and_checks_shapes():
    ramp = torch.linspace(0, 1, 40).view(1, 1, 1, 40).expand(1, 2, 30, 40)
    out = blur(ramp, gaussian_taps(3.0))
    assert out.shape == ramp.shape
    assert torch.allclose(out[..., 10:30], ramp[..., 10:30], atol=1e-5)  # linear away from the edges stays
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        blur(torch.zeros(3, 4), gaussian_taps(1.0))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_taps(0.0)
    with pytest.raises(ValueError, match="mask"):
        masked_blur(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), gaussian_taps(1.0))


def _conv_blur(d: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The reference: a depthwise convolution per axis over replicate-padded input."""
    c, pad = d.shape[1], taps.numel() // 2
    d = F.conv2d(F.pad(d, (0, 0, pad, pad), mode="replicate"), taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(F.pad(d, (pad, pad, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                    groups=c)


@pytest.mark.parametrize("shape", [(2, 3, 40, 57), (1, 1, 1, 9), (1, 4, 5, 2)])
def test_blur_equals_a_depthwise_convolution_on_any_size(shape):
    d = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    taps = gaussian_taps(2.0)  # 13 taps: wider than some of the sizes above
    assert torch.allclose(blur(d, taps), _conv_blur(d, taps), atol=1e-6)


def test_blur_passes_gradients_and_rejects_even_taps():
    d = torch.rand(1, 2, 16, 16, requires_grad=True)
    blur(d, gaussian_taps(1.0)).sum().backward()
    inner = d.grad[..., 3:-3, 3:-3]  # 7 taps; the replicated edges count more than once
    assert torch.allclose(inner, torch.ones_like(inner), atol=1e-5)  # normalised taps: an inner pixel counts once
    with pytest.raises(ValueError, match=r"odd length.*\(4,\)"):
        blur(d, torch.ones(4) / 4)


@pytest.mark.parametrize("weight_shape", [(2, 1, 1, 1), (2, 3, 8, 8), (2, 1, 8, 9)])
def test_normalized_blur_refuses_a_weight_that_does_not_fit_showing_both_shapes(weight_shape):
    # (2, 1, 1, 1) broadcast in the division, (2, 3, 8, 8) gave per-channel weights: both silently
    with pytest.raises(ValueError, match=re.escape(f"got (2, 3, 8, 8) and {weight_shape}")):
        normalized_blur(torch.zeros(2, 3, 8, 8), torch.ones(weight_shape), gaussian_taps(1.0))
