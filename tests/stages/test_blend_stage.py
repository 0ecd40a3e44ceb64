import pytest
import torch

from oldphoto.archs.blend_gate import BlendGate
from oldphoto.ops.blend import BLEND_FEATURES
from oldphoto.stages.blend import ScanBlend


def test_strengths_are_the_gates_per_block():
    gate = BlendGate(n_features=len(BLEND_FEATURES))
    with torch.no_grad():
        gate.net.weight.zero_()
        gate.net.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.rand(3, 3, 32, 32)
    s = ScanBlend(gate).strengths(x, x, torch.zeros(3, 1, 32, 32))
    assert s.shape == (3, 2)
    assert torch.allclose(s, torch.tensor([0.5, float(torch.sigmoid(torch.tensor(1.0)))]).expand(3, 2))


def test_a_gate_for_other_features_is_refused():
    with pytest.raises(ValueError, match=f"takes 5 features, ops.blend has {len(BLEND_FEATURES)}"):
        ScanBlend(BlendGate(n_features=5))
