import pytest
import torch

from oldphoto.archs.blend_gate import BlendGate


def test_untrained_gate_keeps_most_of_the_restoration_and_standardises():
    gate = BlendGate(n_features=3)
    f = torch.randn(16, 3) * torch.tensor([1.0, 100.0, 0.01]) + torch.tensor([0.0, 50.0, 3.0])
    s = gate(f)
    assert s.shape == (16, 2) and ((s >= 0) & (s <= 1)).all()
    gate.set_standardisation(f)
    assert torch.allclose(gate.mean, f.mean(0)) and torch.allclose(gate.std, f.std(0))
    with torch.no_grad():
        gate.net.weight.zero_()
    assert torch.allclose(gate(f), torch.sigmoid(torch.tensor(2.0)).expand(16, 2))
    assert set(gate.state_dict()) >= {"mean", "std"}  # the statistics travel with the weights


def test_gate_rejects_wrong_feature_count():
    with pytest.raises(ValueError, match=r"\(B, 3\), got \(4, 5\)"):
        BlendGate(n_features=3)(torch.zeros(4, 5))
