"""Tile-wide context of the mapping: identity at start, driven by intact cells only, safe on all-defect tiles."""

from __future__ import annotations

import re

import pytest
import torch

from oldphoto.archs.global_context import GlobalContext


def test_starts_as_identity():
    gamma, beta = GlobalContext(8)(torch.randn(2, 8, 6, 6), torch.zeros(2, 1, 6, 6))
    assert gamma.shape == beta.shape == (2, 8, 1, 1)
    assert torch.count_nonzero(gamma) == 0 and torch.count_nonzero(beta) == 0


def test_statistics_ignore_defect_cells():
    torch.manual_seed(0)
    ctx = GlobalContext(8)
    torch.nn.init.normal_(ctx.mlp[-1].weight)
    f = torch.randn(1, 8, 6, 6)
    m = torch.zeros(1, 1, 6, 6)
    m[..., :2, :] = 1
    with torch.no_grad():
        ref = ctx(f, m)
        defects_changed = ctx(f + 50 * m * torch.randn_like(f), m)
        intact_changed = ctx(f + (1 - m) * torch.randn_like(f), m)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref, defects_changed))
    assert not torch.allclose(ref[0], intact_changed[0])


def test_all_defect_tile_uses_every_cell():
    ctx = GlobalContext(4)
    torch.nn.init.normal_(ctx.mlp[-1].weight)
    gamma, beta = ctx(torch.randn(1, 4, 5, 5), torch.ones(1, 1, 5, 5))
    assert torch.isfinite(gamma).all() and torch.isfinite(beta).all()


@pytest.mark.parametrize("f_shape, m_shape", [
    ((2, 8, 6, 6), (2, 1, 1, 1)),  # would broadcast: every cell weighed by one value
    ((2, 8, 6, 6), (2, 1, 3, 3)),
    ((2, 4, 6, 6), (2, 1, 6, 6)),  # channels other than the module's
    ((8, 6, 6), (1, 6, 6)),
])
def test_rejects_mismatched_inputs_with_their_shapes(f_shape, m_shape):
    with pytest.raises(ValueError, match=re.escape(f"got {f_shape} and {m_shape}")):
        GlobalContext(8)(torch.randn(*f_shape), torch.zeros(*m_shape))
