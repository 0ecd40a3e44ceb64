"""Upscaler stage contract: shapes for any batch, x2 and x4, clipped range, bicubic start, validation."""

import pytest
import torch
import torch.nn.functional as F

from oldphoto.archs import build
from oldphoto.stages.upscale import Upscaler


def _model(**kw):
    torch.manual_seed(0)
    return build("upscaler", channels=8, layers=2, **kw)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("batch", [1, 5])
def test_shapes_range_and_no_grad(scale, batch):
    model = _model()
    with torch.no_grad():
        for p in model.parameters():  # non-zero heads, so the output is not just bicubic
            p.add_(torch.randn_like(p) * 0.2)
    up = Upscaler(model, scale)
    assert up.scale == scale and up.entry is None
    out = up(torch.rand(batch, 3, 24, 24))
    assert out.shape == (batch, 3, 24 * scale, 24 * scale)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert out.min() >= 0 and out.max() <= 1
    assert not out.requires_grad


def test_untrained_model_is_exactly_clipped_bicubic():
    """The residual heads start at zero: a fresh model must reproduce bicubic upsampling."""
    x = torch.rand(2, 3, 16, 20)
    out = Upscaler(_model(), 2)(x)
    ref = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(out, ref, atol=1e-6)


def test_tiles_do_not_depend_on_their_batch():
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    up = Upscaler(model, 4)
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(up(x)[1:2], up(x[1:2]), atol=1e-5)


def test_channels_last_input_is_accepted():
    up = Upscaler(_model(), 2)
    x = torch.rand(2, 3, 16, 16).to(memory_format=torch.channels_last)
    assert up(x).shape == (2, 3, 32, 32)


def test_unsupported_scale_and_bad_inputs():
    with pytest.raises(ValueError, match="factor 4"):
        Upscaler(_model(scales=(2,)), 4)
    up = Upscaler(_model(), 2)
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        up(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 1, 16, 16\)"):
        up(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        up(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
