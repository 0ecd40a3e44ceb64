"""Learning-rate schedules shared by the training loops."""

from __future__ import annotations

import pytest

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
