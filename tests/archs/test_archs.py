"""One parametrized test for every registered architecture: shapes, finiteness, gradients.

Each architecture registers in SMALL_KWARGS: (constructor kwargs kept small, factory of example inputs,
expected output shape(s) as a function of the inputs). An ARCHS entry missing from the table fails.
"""

from __future__ import annotations

import pytest
import torch

from oldphoto.archs import ARCHS, build

# name -> (kwargs, inputs(h, w) -> tuple of tensors, expected_shapes(h, w) -> tuple of shapes or one shape)
SMALL_KWARGS: dict[str, tuple[dict, object, object]] = {}

SIZES = [(32, 32), (64, 48)]


def test_every_arch_is_in_the_table():
    missing = sorted(set(ARCHS) - set(SMALL_KWARGS))
    assert not missing, f"add these architectures to SMALL_KWARGS: {missing}"


def _flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    return [t for v in out for t in _flatten(v)]


@pytest.mark.parametrize("name", sorted(SMALL_KWARGS))
@pytest.mark.parametrize("hw", SIZES)
def test_arch_shapes_finite_and_trainable(name, hw):
    torch.manual_seed(0)
    kwargs, make_inputs, expected = SMALL_KWARGS[name]
    model = build(name, **kwargs)
    inputs = make_inputs(*hw)
    out = model(*inputs)
    want = expected(*hw)
    got = [tuple(t.shape) for t in _flatten(out)]
    want = [tuple(s) for s in (want if isinstance(want[0], (tuple, list)) else [want])]
    assert got[: len(want)] == want, f"{name}: output shapes {got}, expected {want}"
    tensors = _flatten(out)
    assert all(torch.isfinite(t).all() for t in tensors)
    sum(t.float().mean() for t in tensors).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached"
