import pytest
import torch

from oldphoto.archs.blend_gate import BlendGate
from oldphoto.ops.blend import BLEND_FEATURES
from oldphoto.stages.blend import ScanBlend


def test_strengths_are_the_mean_over_blocks_of_the_gates():
    gate = BlendGate(n_features=len(BLEND_FEATURES))
    with torch.no_grad():
        gate.net.weight.zero_()
        gate.net.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.rand(3, 3, 32, 32)
    s_lo, s_hi = ScanBlend(gate).strengths(x, x, torch.zeros(3, 1, 32, 32))
    assert s_lo == pytest.approx(0.5) and s_hi == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))))


def test_a_gate_for_other_features_is_refused():
    with pytest.raises(ValueError, match=f"takes 5 features, ops.blend has {len(BLEND_FEATURES)}"):
        ScanBlend(BlendGate(n_features=5))
