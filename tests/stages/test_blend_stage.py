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


def test_a_two_scale_detector_is_judged_by_the_one_pass_it_wraps():
    from types import SimpleNamespace

    from oldphoto.stages.blend import fitted_chain
    from oldphoto.stages.detect import TwoScaleDetector

    entry = SimpleNamespace(name="det", sha256="d" * 64)
    one = SimpleNamespace(entry=entry, threshold=0.5, device=torch.device("cpu"))
    restorer = SimpleNamespace(entries=[SimpleNamespace(name="vae", sha256="v" * 64)], mask_threshold=0.8)
    chain = fitted_chain(restorer, one)
    assert chain == {"vae": "v" * 64, "det": "d" * 64, "restore_threshold": 0.8}
    assert fitted_chain(restorer, TwoScaleDetector(one)) == chain  # not its own restore threshold
