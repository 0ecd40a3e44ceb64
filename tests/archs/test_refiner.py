import pytest
import torch

from oldphoto.archs import build


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


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 1, 32, 32)])
def test_rejects_bad_shapes_with_the_shape_in_the_message(shape):
    model = build("refiner", width=4)
    x = torch.rand(*shape)
    with pytest.raises(ValueError, match=str(tuple(shape))):
        model(x, x, torch.zeros(1, 1, *shape[2:]))
