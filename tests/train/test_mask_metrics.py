import pytest
import torch

from oldphoto.train.mask_metrics import ThresholdSweep, scores_at


def _line(col, h=16, w=16):
    m = torch.zeros(1, 1, h, w)
    m[..., col] = 1
    return m


def test_exact_counts_at_each_threshold():
    truth = _line(5)
    score = truth * 0.8 + _line(10) * 0.3  # true line strong, a false line weak
    sweep = ThresholdSweep([0.2, 0.5])
    sweep.add(score, truth)
    tab = sweep.table()
    assert tab["precision"].tolist() == pytest.approx([0.5, 1.0])
    assert tab["recall"].tolist() == pytest.approx([1.0, 1.0])
    assert tab["iou"].tolist() == pytest.approx([0.5, 1.0])
    best = sweep.best("f1")
    assert best["threshold"] == pytest.approx(0.5) and best["f1"] == pytest.approx(1.0)


def test_one_pixel_shift_counts_only_with_tolerance():
    sweep = ThresholdSweep([0.5], tolerance=1)
    sweep.add(_line(6), _line(5))
    tab = sweep.table()
    assert tab["f1"].item() == 0.0
    assert tab["f1_tol"].item() == pytest.approx(1.0)
    far = ThresholdSweep([0.5], tolerance=1)
    far.add(_line(8), _line(5))
    assert far.table()["f1_tol"].item() == 0.0


def test_accumulates_over_batches_micro_average():
    sweep = ThresholdSweep([0.5])
    sweep.add(_line(3), _line(3))  # 16 true positives
    sweep.add(torch.zeros(1, 1, 16, 16), _line(1) + _line(2))  # 32 missed
    assert sweep.table()["recall"].item() == pytest.approx(16 / 48)


def test_empty_prediction_and_shape_errors():
    sweep = ThresholdSweep([0.5])
    sweep.add(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert sweep.table()["f1"].item() == 0.0
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\) and \(1, 1, 8, 9\)"):
        sweep.add(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(KeyError):
        sweep.best("nope")


def test_scores_at_one_threshold_match_the_sweep_row_and_unswept_ones_are_refused():
    torch.manual_seed(0)
    score = torch.rand(2, 1, 16, 16)
    truth = (torch.rand(2, 1, 16, 16) > 0.8).float()
    sweep = ThresholdSweep([0.3, 0.5, 0.7], tolerance=1)
    sweep.add(score, truth)
    row = {k: float(v[1]) for k, v in sweep.table().items()}
    assert scores_at(score, truth, 0.5) == row == sweep.at(0.5)
    with pytest.raises(KeyError, match="threshold 0.6 was not swept"):
        sweep.at(0.6)
