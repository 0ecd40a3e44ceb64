"""Colorizer stage contract: one global pass at the work resolution, ab at the input's size, helpers."""

import pytest
import torch

from oldphoto.archs import build
from oldphoto.ops.color import rgb_to_lab
from oldphoto.stages.colorize import Colorizer, combine, shrink_lightness, upsample_ab, work_shape


class _Spy(torch.nn.Module):
    """Records the input shapes it sees; predicts a = L / 2 - 25, b = 10 (a known, smooth answer)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, l):
        self.seen.append(tuple(l.shape))
        return torch.cat((l / 2 - 25, torch.full_like(l, 10.0)), 1) * self.w


def test_work_shape_keeps_aspect_and_never_enlarges():
    assert work_shape(1000, 2000, 512) == (256, 512)
    assert work_shape(3000, 1000, 512) == (512, 171)
    assert work_shape(100, 80, 512) == (100, 80)
    with pytest.raises(ValueError):
        work_shape(0, 10, 512)


def test_large_input_runs_at_work_size_and_returns_full_size():
    spy = _Spy()
    col = Colorizer(spy, work_size=64)
    l = torch.linspace(0, 100, 300).view(1, 1, 1, -1).expand(1, 1, 150, 300).contiguous()
    ab = col(l)
    assert spy.seen == [(1, 1, 32, 64)]  # one pass, shrunk to the work resolution
    assert ab.shape == (1, 2, 150, 300) and ab.dtype == torch.float32 and not ab.requires_grad
    # A smooth answer survives the shrink / upsample round trip away from the borders.
    want_a = l / 2 - 25
    assert (ab[:, :1, :, 10:-10] - want_a[..., 10:-10]).abs().max() < 1.0
    assert torch.allclose(ab[:, 1], torch.full_like(ab[:, 1], 10.0))


def test_small_input_is_not_resized():
    spy = _Spy()
    ab = Colorizer(spy, work_size=64)(torch.rand(1, 1, 40, 30) * 100)
    assert spy.seen == [(1, 1, 40, 30)] and ab.shape == (1, 2, 40, 30)


def test_real_model_any_size_and_clamped_lightness():
    torch.manual_seed(0)
    col = Colorizer(build("colorizer_unet", channels=(4, 8, 8), blocks=1), work_size=48)
    assert col.work_size == 48 and col.amp is False
    for h, w in [(37, 53), (100, 20)]:
        ab = col(torch.rand(1, 1, h, w) * 120 - 10)  # out-of-range L is clamped, not refused
        assert ab.shape == (1, 2, h, w) and torch.isfinite(ab).all()


def test_bad_inputs_are_refused_with_their_shape():
    col = Colorizer(_Spy(), work_size=64)
    with pytest.raises(ValueError, match=r"\(1, 3, 8, 8\)"):
        col(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        col(torch.rand(8, 8))
    with pytest.raises(ValueError, match="dtype"):
        col(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="work size"):
        Colorizer(_Spy(), work_size=4)


def test_upsample_combine_and_shrink_helpers():
    rgb = torch.rand(1, 3, 32, 48)
    lab = rgb_to_lab(rgb)
    assert torch.allclose(combine(lab[:, :1], lab[:, 1:]), rgb, atol=1e-4)
    gray = combine(lab[:, :1], torch.zeros(1, 2, 32, 48))
    assert (gray.max(1).values - gray.min(1).values).max() < 1e-4  # ab = 0 gives neutral gray
    assert upsample_ab(torch.ones(1, 2, 4, 6), (8, 12)).shape == (1, 2, 8, 12)
    assert torch.allclose(upsample_ab(torch.full((1, 2, 4, 6), 7.0), (9, 13)), torch.full((1, 2, 9, 13), 7.0))
    assert shrink_lightness(torch.rand(1, 1, 100, 50), 20).shape == (1, 1, 20, 10)
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 8\)"):  # ab not upsampled to L's size
        combine(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 4, 8))
