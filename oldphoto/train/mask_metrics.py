"""Pixel metrics for defect masks, accumulated over a data set at many thresholds at once.

Scores are (B, 1, H, W) floats (probabilities, or any response where higher = more defect); truth is a
(B, 1, H, W) mask, > 0.5 = defect. Counts are summed over the whole set (micro average), so small crops with
few defect pixels do not dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _grow(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius == 0:
        return mask
    k = 2 * radius + 1
    # Zero padding is right here: outside the image there is no defect to match.
    return F.max_pool2d(mask, k, stride=1, padding=radius)


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1), torch.zeros_like(a))


def _f1(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.where(p + r > 0, 2 * p * r / (p + r).clamp(min=1e-12), torch.zeros_like(p))


@dataclass
class ThresholdSweep:
    """Accumulates TP/FP/FN at every threshold, exact and with a `tolerance`-pixel match.

    With tolerance r, a predicted defect pixel is correct if a true one lies within r pixels (chessboard
    distance), and a true defect pixel is found if a predicted one lies within r pixels.
    """

    thresholds: torch.Tensor  # (T,) float
    tolerance: int = 1

    def __post_init__(self) -> None:
        self.thresholds = torch.as_tensor(self.thresholds, dtype=torch.float64).flatten()
        n = len(self.thresholds)
        self._c = {k: torch.zeros(n, dtype=torch.float64) for k in ("tp", "pred", "true", "tol_tp_pred", "tol_tp_true")}

    def add(self, score: torch.Tensor, truth: torch.Tensor) -> None:
        """score, truth: (B, 1, H, W); truth > 0.5 is a defect."""
        if score.shape != truth.shape or score.dim() != 4 or score.shape[1] != 1:
            raise ValueError(
                f"ThresholdSweep.add: expected score and truth of shape (B, 1, H, W), "
                f"got {tuple(score.shape)} and {tuple(truth.shape)}"
            )
        score = score.detach().float().cpu()
        gt = (truth.detach().float().cpu() > 0.5).float()
        gt_grown = _grow(gt, self.tolerance)
        n_true = gt.sum().double()
        for i, t in enumerate(self.thresholds.tolist()):
            pred = (score > t).float()
            self._c["tp"][i] += (pred * gt).sum().double()
            self._c["pred"][i] += pred.sum().double()
            self._c["true"][i] += n_true
            self._c["tol_tp_pred"][i] += (pred * gt_grown).sum().double()
            self._c["tol_tp_true"][i] += (gt * _grow(pred, self.tolerance)).sum().double()

    def table(self) -> dict[str, torch.Tensor]:
        """Per-threshold metrics, each (T,): precision, recall, f1, iou, and the tolerant precision/recall/f1."""
        c = self._c
        precision = _ratio(c["tp"], c["pred"])
        recall = _ratio(c["tp"], c["true"])
        iou = _ratio(c["tp"], c["pred"] + c["true"] - c["tp"])
        tol_p = _ratio(c["tol_tp_pred"], c["pred"])
        tol_r = _ratio(c["tol_tp_true"], c["true"])
        return {
            "threshold": self.thresholds,
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "iou": iou,
            "precision_tol": tol_p,
            "recall_tol": tol_r,
            "f1_tol": _f1(tol_p, tol_r),
        }

    def at(self, threshold: float) -> dict[str, float]:
        """All metrics at one of the swept thresholds."""
        i = int(torch.argmin((self.thresholds - float(threshold)).abs()))
        if abs(float(self.thresholds[i]) - float(threshold)) > 1e-9:
            raise KeyError(f"threshold {threshold} was not swept; swept: {self.thresholds.tolist()}")
        return {k: float(v[i]) for k, v in self.table().items()}

    def best(self, key: str = "f1_tol") -> dict[str, float]:
        """All metrics at the threshold that maximises `key` (first such threshold on ties)."""
        tab = self.table()
        if key not in tab:
            raise KeyError(f"unknown metric {key!r}; known: {', '.join(tab)}")
        i = int(torch.argmax(tab[key]))
        return {k: float(v[i]) for k, v in tab.items()}


def scores_at(score: torch.Tensor, truth: torch.Tensor, threshold: float, tolerance: int = 1) -> dict[str, float]:
    """Every metric of ThresholdSweep.table() for (B, 1, H, W) `score` against `truth` at one threshold."""
    sweep = ThresholdSweep([threshold], tolerance=tolerance)
    sweep.add(score, truth)
    return sweep.at(threshold)
