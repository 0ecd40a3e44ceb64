import pytest
import torch

from oldphoto.archs import build
from oldphoto.ops.filters import masked_blur


def test_untrained_refiner_passes_the_restoration_through():
    torch.manual_seed(0)
    model = build("refiner", width=4).eval()
    x, r = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    m = (torch.rand(2, 1, 32, 32) > 0.8).float()
    out = model(x, r, m)
    gate = torch.sigmoid(torch.tensor(-4.0))
    assert torch.allclose(out, r + gate * (x - r), atol=1e-6)


def test_open_gate_returns_the_scan():
    model = build("refiner", width=4).eval()
    with torch.no_grad():
        model.head.bias[0] = 30.0
    x, r = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.allclose(model(x, r, torch.zeros(1, 1, 16, 16)), x, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 1, 32, 32), (3, 32, 32)])
def test_rejects_bad_shapes_with_the_shape_in_the_message(shape):
    model = build("refiner", width=4)
    x = torch.rand(*shape)
    with pytest.raises(ValueError, match=str(tuple(shape))):
        model(x, x, torch.zeros(1, 1, *shape[2:]))


def _set_gates(model, lo: float, hi: float) -> None:
    with torch.no_grad():
        model.head.bias[0], model.head.bias[1] = lo, hi


def test_banded_refiner_starts_near_the_restoration_and_keeps_its_kwargs():
    torch.manual_seed(0)
    model = build("refiner", width=4, bands=True).eval()
    assert model.arch_kwargs() == {"width": 4, "bands": True}
    assert build("refiner", width=4).arch_kwargs() == {"width": 4}  # files of the one-gate refiner load as they were
    x, r = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    out = model(x, r, torch.zeros(2, 1, 32, 32))
    assert (out - r).abs().max() < 2 * 2 * float(torch.sigmoid(torch.tensor(-4.0)))


def test_banded_gates_split_tone_and_detail():
    model = build("refiner", width=4, bands=True).eval()
    x, r, m = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    _set_gates(model, 30.0, 0.0)  # a_lo = 1, a_hi = 2 sigmoid(0) = 1: both bands of the scan
    assert torch.allclose(model(x, r, m), x, atol=1e-5)
    _set_gates(model, 30.0, -30.0)  # the scan's tone, the restoration's detail
    low = masked_blur(x - r, m, model.taps)
    assert torch.allclose(model(x, r, m), r + low, atol=1e-5)
    _set_gates(model, -30.0, 30.0)  # the restoration's tone, the scan's detail twice (undoing a 2x contrast loss)
    assert torch.allclose(model(x, r, m), r + 2 * (x - r - low), atol=1e-5)
