"""Evaluation in chunks: a network over many crops without holding every activation at once."""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def chunked(fn: Callable[..., torch.Tensor], batch: int, *tensors: torch.Tensor,
            model: torch.nn.Module | None = None) -> torch.Tensor:
    """fn on `batch` rows at a time of the tensors (all (N, ...), sliced alike), results concatenated along dim 0.

    With `model`, it runs in eval mode for the call and gets its training flag back afterwards (validation inside
    a training loop).
    """
    if batch < 1 or not tensors or any(len(t) != len(tensors[0]) for t in tensors):
        raise ValueError(f"chunked: batch >= 1 and tensors of one length needed, got batch {batch}, "
                         f"lengths {[len(t) for t in tensors]}")
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        return torch.cat([fn(*(t[i:i + batch] for t in tensors)) for i in range(0, len(tensors[0]), batch)])
    finally:
        if model is not None:
            model.train(was_training)
