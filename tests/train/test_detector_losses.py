import math

import pytest
import torch
import torch.nn.functional as F

from oldphoto.train.losses import (balanced_bce, focal_loss, hard_negative_bce, soft_dice_loss,
                                   weighted_negative_bce)


def _case():
    target = torch.zeros(1, 1, 10, 10)
    target[..., 0, :] = 1  # 10 % defect pixels
    logits = torch.zeros(1, 1, 10, 10)  # p = 0.5 everywhere: every pixel costs log 2
    logits[..., 5:, :] = 2.0  # intact pixels wrongly leaning to "defect": cost softplus(2)
    return logits, target


def test_hed_weights_defects_by_intact_share_and_paper_the_other_way():
    logits, target = _case()
    a = 0.1
    c_pos, c_neg_0, c_neg_2 = math.log(2), math.log(2), F.softplus(torch.tensor(2.0)).item()
    neg = 40 * c_neg_0 + 50 * c_neg_2
    hed = ((1 - a) * 10 * c_pos + a * neg) / ((1 - a) * 10 + a * 90)
    paper = (a * 10 * c_pos + (1 - a) * neg) / (a * 10 + (1 - a) * 90)
    assert balanced_bce(logits, target, "hed").item() == pytest.approx(hed, rel=1e-5)
    assert balanced_bce(logits, target, "paper").item() == pytest.approx(paper, rel=1e-5)
    assert balanced_bce(logits, target, "none").item() == pytest.approx((10 * c_pos + neg) / 100, rel=1e-5)


def test_clean_image_still_penalises_false_alarms_under_hed():
    target = torch.zeros(1, 1, 8, 8)
    assert balanced_bce(torch.full((1, 1, 8, 8), 3.0), target, "hed") > balanced_bce(
        torch.full((1, 1, 8, 8), -3.0), target, "hed")


def test_dice_and_focal_are_small_for_good_predictions():
    _, target = _case()
    good = target * 20 - 10
    assert soft_dice_loss(good, target).item() < 1e-3
    assert soft_dice_loss(-good, target).item() > 0.9
    bce = F.binary_cross_entropy_with_logits(good * 0.1, target)
    assert focal_loss(good * 0.1, target).item() < bce.item()


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\) and \(1, 1, 4, 5\)"):
        balanced_bce(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="mode"):
        balanced_bce(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), "median")


def test_hed_batch_uses_one_alpha_for_the_batch():
    logits, target = _case()
    sparse = torch.zeros_like(target)
    sparse[..., 0, 0] = 1  # 1 % defects in the second image
    lg = torch.cat([logits, logits])
    lg[1, :, 0, 0] = -6.0  # the sparse image's lone defect is missed
    tg = torch.cat([target, sparse])
    a = tg.mean().item()  # 5.5 %
    bce = F.binary_cross_entropy_with_logits(lg, tg, reduction="none")
    w = tg * (1 - a) + (1 - tg) * a
    assert balanced_bce(lg, tg, "hed_batch").item() == pytest.approx((w * bce).sum().item() / w.sum().item(), rel=1e-5)
    # per-image "hed" weights the sparse image's lone missed defect far more than the batch α does
    assert balanced_bce(lg, tg, "hed").item() > 1.5 * balanced_bce(lg, tg, "hed_batch").item()
    # a single image: both modes agree
    assert balanced_bce(logits, target, "hed_batch").item() == pytest.approx(balanced_bce(logits, target, "hed").item())


@pytest.mark.parametrize("mode", ["hed", "hed_batch", "paper", "none"])
def test_balanced_bce_leaves_out_invalid_pixels(mode):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 6, 6, generator=g)
    target = (torch.rand(2, 1, 6, 6, generator=g) > 0.7).float()
    valid = torch.ones_like(target)
    assert balanced_bce(logits, target, mode, valid=valid).item() == pytest.approx(
        balanced_bce(logits, target, mode).item(), rel=1e-6)
    valid[:, :, :, 3:] = 0  # the right half does not count: changing it changes nothing
    other = logits.clone()
    other[:, :, :, 3:] = torch.randn(2, 1, 6, 3, generator=g) * 5
    a = balanced_bce(logits, target, mode, valid=valid).item()
    assert balanced_bce(other, target, mode, valid=valid).item() == pytest.approx(a, rel=1e-6)
    assert a != pytest.approx(balanced_bce(logits, target, mode).item(), rel=1e-3)


def test_detector_loss_ignore_ring_frees_the_band_around_defects():
    from oldphoto.train.detector import Config, detector_loss

    target = torch.zeros(1, 1, 9, 9)
    target[:, :, 4, 2:7] = 1  # a short scratch
    logits = torch.full((1, 1, 9, 9), -4.0, requires_grad=True)
    detector_loss(logits, target, Config(balance="hed_batch", ignore_ring=1))["total"].backward()
    ring = (torch.nn.functional.max_pool2d(target, 3, 1, 1) - target)[0, 0] > 0
    assert (logits.grad[0, 0][ring] == 0).all()  # the band just outside the scratch is not taught
    grad, inside = logits.grad[0, 0], target[0, 0] > 0
    assert (grad[inside] < 0).all() and (grad[~ring & ~inside] > 0).all()


def test_hard_negative_bce_takes_only_the_worst_false_alarms():
    logits, target = _case()  # 50 intact pixels at logit 2, 40 at 0
    worst = F.softplus(torch.tensor(2.0)).item()
    assert hard_negative_bce(logits, target, 0.5).item() == pytest.approx(worst, rel=1e-5)  # 45 of 90: all at 2
    mixed = (50 * worst + 40 * math.log(2)) / 90
    assert hard_negative_bce(logits, target, 1.0).item() == pytest.approx(mixed, rel=1e-5)
    logits = logits.clone().requires_grad_(True)
    hard_negative_bce(logits, target, 0.1).backward()  # 9 pixels: only some of the logit-2 ones get a gradient
    assert int((logits.grad != 0).sum()) == 9 and bool((logits.grad[target < 0.5][logits[target < 0.5] < 1] == 0).all())
    assert hard_negative_bce(logits, torch.ones_like(target)).item() == 0  # nothing intact: no term
    with pytest.raises(ValueError, match="share"):
        hard_negative_bce(logits, target, 0.0)


def test_weighted_negative_bce_ignores_defects_and_unweighted_pixels():
    logits, target = _case()
    weight = torch.zeros_like(target)
    weight[..., 0, :] = 5.0  # on the defect row: must not count
    weight[..., 5, :] = 1.0  # one intact row at logit 2
    assert weighted_negative_bce(logits, target, weight).item() == pytest.approx(F.softplus(torch.tensor(2.0)).item())
    weight[..., 1, :] = 1.0  # plus one intact row at logit 0: the weighted mean of the two
    both = (F.softplus(torch.tensor(2.0)).item() + math.log(2)) / 2
    assert weighted_negative_bce(logits, target, weight).item() == pytest.approx(both, rel=1e-5)
    assert weighted_negative_bce(logits, target, torch.zeros_like(target)).item() == 0
    with pytest.raises(ValueError, match="weight"):
        weighted_negative_bce(logits, target, weight[..., :5, :])


def test_detector_loss_adds_the_hard_and_edge_terms_only_when_asked():
    from oldphoto.train.detector import Config, detector_loss

    logits, target = _case()
    edges = torch.rand_like(target)
    plain = detector_loss(logits, target, Config(balance="hed_batch"))
    assert set(plain) == {"bce", "total"}
    both = detector_loss(logits, target, Config(balance="hed_batch", hard_weight=0.5, edge_weight=2.0), edges)
    assert both["total"].item() == pytest.approx(
        (plain["bce"] + 0.5 * both["hard"] + 2.0 * both["edge"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="edges"):
        detector_loss(logits, target, Config(edge_weight=1.0))
