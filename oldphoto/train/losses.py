"""Training losses shared by the training loops. Tensors are (B, C, H, W); one scalar per call.

Defect detection: logits (B, 1, H, W) (any real), targets (B, 1, H, W) in [0, 1], 1 = defect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BALANCE_MODES = ("paper", "hed", "hed_batch", "none")


def _check_pair(logits: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if logits.shape != target.shape or logits.dim() != 4:
        raise ValueError(
            f"{what}: expected logits and target of the same (B, C, H, W) shape, "
            f"got {tuple(logits.shape)} and {tuple(target.shape)}"
        )


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, mode: str = "hed", min_share: float = 0.01,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Class-balanced binary cross-entropy with a per-image weight α = share of defect pixels.

    mode "paper": the formula as printed in Wan et al. 2020, defect pixels weighted by α, intact ones by 1 - α.
    mode "hed":   the usual balancing (Xie & Tu 2015), defect pixels weighted by 1 - α, intact ones by α.
    mode "hed_batch": "hed" with one α for the whole batch (its share of defect pixels) and one weighted mean.
                  Per-image α makes the calibration depend on the image: a crop with a single hair (α ~ 0.005)
                  weights its defect pixels ~200x its intact ones, so on sparse damage every doubtful edge is
                  pushed towards "defect" and one global threshold cannot suit both sparse and dense crops.
    mode "none":  plain mean BCE.
    α is clamped to [min_share, 1 - min_share] so a defect-free image still teaches "no defect here" under "hed".
    Each image's loss (the batch's, under "hed_batch") is a weighted mean (divided by its weight total), so the
    scale does not depend on α.
    valid: optional (B, 1, H, W) {0, 1}: pixels at 0 count neither in the loss nor in α (e.g. an ignored band).
    """
    _check_pair(logits, target, "balanced_bce")
    if valid is not None:
        _check_pair(logits, valid, "balanced_bce valid")
    if mode not in BALANCE_MODES:
        raise ValueError(f"balanced_bce: mode must be one of {BALANCE_MODES}, got {mode!r}")
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    v = torch.ones_like(target) if valid is None else valid
    if mode == "none":
        return (v * bce).sum() / v.sum().clamp_min(1)
    if mode == "hed_batch":
        share = (target * v).sum() / v.sum().clamp_min(1)
    else:
        share = ((target * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp_min(1)).view(-1, 1, 1, 1)
    alpha = share.clamp(min_share, 1 - min_share)
    w_pos, w_neg = (alpha, 1 - alpha) if mode == "paper" else (1 - alpha, alpha)
    w = (target * w_pos + (1 - target) * w_neg) * v
    if mode == "hed_batch":
        return (w * bce).sum() / w.sum()
    per_image = (w * bce).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)
    return per_image.mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice between sigmoid(logits) and target, per image then averaged; in [0, 1].

    `smooth` keeps defect-free images well defined (predicting nothing on them costs nothing).
    """
    _check_pair(logits, target, "soft_dice_loss")
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): BCE scaled by (1 - p_true)^gamma, so easy pixels fade out. Mean over pixels."""
    _check_pair(logits, target, "focal_loss")
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_true = p * target + (1 - p) * (1 - target)
    return ((1 - p_true).pow(gamma) * bce).mean()


def hard_negative_bce(logits: torch.Tensor, target: torch.Tensor, share: float = 0.02) -> torch.Tensor:
    """Mean BCE over the hardest intact pixels of the batch: the `share` of target == 0 pixels with the highest
    logits (online hard-example mining, Shrivastava et al. 2016), i.e. the false alarms of the moment, whatever
    content causes them. 0 when the batch has no intact pixel."""
    _check_pair(logits, target, "hard_negative_bce")
    if not 0 < share <= 1:
        raise ValueError(f"hard_negative_bce: share must be in (0, 1], got {share}")
    neg = logits[target < 0.5]
    if neg.numel() == 0:
        return logits.sum() * 0
    k = max(1, round(share * neg.numel()))
    hardest = torch.topk(neg, k).values
    return F.binary_cross_entropy_with_logits(hardest, torch.zeros_like(hardest))


def weighted_negative_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BCE of the intact pixels (target == 0), each weighted by `weight` (B, 1, H, W) >= 0, as a weighted mean;
    e.g. weight = thin structures of the clean photo, so content that looks like a scratch is taught as intact.
    0 when no intact pixel has weight."""
    _check_pair(logits, target, "weighted_negative_bce")
    _check_pair(logits, weight, "weighted_negative_bce weight")
    w = weight * (target < 0.5).to(weight.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (w * bce).sum() / w.sum().clamp_min(1e-6)


# ---------------------------------------------------------------- latent restoration (VAEs, mapping)
# Least-squares GAN (Mao et al. 2017): real scores are pulled to 1, fake ones to 0; any score shape.


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent element, averaged (so β does not scale with the latent size)."""
    if mu.shape != logvar.shape:
        raise ValueError(f"kl_normal: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} differ")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


def lsgan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator side: 0.5 (E[(D(real) - 1)^2] + E[D(fake)^2]); pass detached fakes."""
    return 0.5 * ((real_scores - 1).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator side: E[(D(fake) - 1)^2]."""
    return (fake_scores - 1).pow(2).mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between the discriminator's intermediate features (scores, the last entry, excluded) of real and
    fake inputs; the real side is a fixed target."""
    if len(real_feats) != len(fake_feats) or len(real_feats) < 2:
        raise ValueError(f"feature_matching: need two equal lists of >= 2 tensors, got {len(real_feats)} and "
                         f"{len(fake_feats)}")
    pairs = list(zip(real_feats[:-1], fake_feats[:-1]))
    return sum(F.l1_loss(f, r.detach()) for r, f in pairs) / len(pairs)
