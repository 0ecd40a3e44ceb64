"""Learning-rate schedules shared by the training loops."""

from __future__ import annotations

import json

import pytest
import torch

from oldphoto.train.run_files import cosine_lr, time_decay, warmup_linear_lr


def test_warmup_linear_lr_warms_up_holds_then_decays_to_its_floor():
    lr = [warmup_linear_lr(s, 1.0, warmup=4, steps=20, decay_steps=10, final_fraction=0.02) for s in range(25)]
    assert lr[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr[4:11] == [1.0] * 7  # constant until the decay starts at step 20 - 10
    assert all(a > b for a, b in zip(lr[10:20], lr[11:21]))  # strictly falling through the decay
    assert lr[15] == pytest.approx(1 - 0.98 * 0.5)
    assert lr[20:] == pytest.approx([0.02] * 5)  # the floor holds past `steps`


def test_warmup_linear_lr_without_decay_stays_at_base():
    assert [warmup_linear_lr(s, 3e-4, 0, 100, 0, 0.1) for s in (0, 50, 99, 500)] == [3e-4] * 4


def test_cosine_lr_ends_at_its_fraction():
    assert cosine_lr(2.0, 0.05, 0.0) == pytest.approx(2.0)
    assert cosine_lr(2.0, 0.05, 0.5) == pytest.approx(2.0 * (0.05 + 0.95 * 0.5))
    assert cosine_lr(2.0, 0.05, 3.0) == pytest.approx(0.1)


def test_time_decay_holds_then_falls_linearly_to_its_floor_when_time_runs_out():
    assert time_decay(600, 300, 0.02) == 1.0 and time_decay(300, 300, 0.02) == 1.0
    assert time_decay(150, 300, 0.02) == pytest.approx(0.51)
    assert time_decay(0, 300, 0.02) == pytest.approx(0.02) and time_decay(-5, 300, 0.02) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="decay_seconds must be positive"):
        time_decay(10, 0, 0.02)


@pytest.mark.parametrize("bad", ["", "../escaped", "a/b", "Detector-V2", "x y", "-v1", "v1-", "a--b"])
def test_export_refuses_names_that_are_not_plain_entry_names(tmp_path, bad):
    from oldphoto.errors import SettingsError
    from oldphoto.train.run_files import export_weights

    model = torch.nn.Conv2d(3, 1, 1)
    with pytest.raises(SettingsError, match="invalid weights name"):
        export_weights(model.state_dict(), bad, "blend_gate", {}, {}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_export_never_replaces_an_entry_with_other_weights(tmp_path):
    from oldphoto.archs import build
    from oldphoto.errors import SettingsError
    from oldphoto.train.run_files import export_weights

    torch.manual_seed(0)
    first, second = build("blend_gate").state_dict(), build("blend_gate").state_dict()
    path = export_weights(first, "gate-v1", "blend_gate", {}, {"n": 1}, tmp_path)
    before = path.read_bytes()
    export_weights(first, "gate-v1", "blend_gate", {}, {"n": 2}, tmp_path)  # the same weights: fine
    with pytest.raises(SettingsError, match=r"gate-v1.pt: weights entry 'gate-v1' already holds other weights"):
        export_weights(second, "gate-v1", "blend_gate", {}, {"n": 3}, tmp_path)
    assert path.read_bytes() == before
    assert json.loads((tmp_path / "MANIFEST.json").read_text())["models"]["gate-v1"]["meta"] == {"n": 2}
