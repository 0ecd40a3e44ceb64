"""Partial non-local attention: defects never act as sources; intact cells and defect-free tiles cost nothing."""

from __future__ import annotations

import re

import pytest
import torch

from oldphoto.archs import build


def _setup():
    torch.manual_seed(0)
    block = build("partial_nonlocal", channels=8).eval()
    x = torch.randn(1, 8, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:4, :] = 1  # two defect rows (one pooled key row)
    m[..., 6, 5] = 1
    return block, x, m


def test_defect_features_never_reach_the_output():
    block, x, m = _setup()
    with torch.no_grad():
        out = block(x, m)
        changed = x + 10 * torch.randn_like(x) * m  # rewrite every defect position except the query itself
        query = (0, slice(None), 2, 3)
        changed[query] = x[query]
        out2 = block(changed, m)
    assert torch.allclose(out[query], out2[query], atol=1e-5)
    assert torch.count_nonzero(out * (1 - m)) == 0  # intact positions are not computed


def test_intact_features_do_reach_defects_and_attention_is_a_weighted_mean():
    block, x, m = _setup()
    with torch.no_grad():
        out = block(x, m)
        out2 = block(x + (1 - m) * torch.randn_like(x), m)
    assert not torch.allclose(out[..., 2, 3], out2[..., 2, 3])
    # constant intact features -> every defect receives out(g(constant)) whatever the weights
    const = torch.ones(1, 8, 8, 8) * torch.arange(8.0).view(1, 8, 1, 1)
    with torch.no_grad():
        res = block(const, m)
        expected = block.out(block.g(const)[0, :, 0, 0])
    assert torch.allclose(res[0, :, 2, 0], expected, atol=1e-5)


def test_no_defect_means_zeros_and_no_work():
    block, x, _ = _setup()
    calls = []
    handle = block.phi.register_forward_hook(lambda *a: calls.append(1))
    out = block(x, torch.zeros(1, 1, 8, 8))
    handle.remove()
    assert torch.count_nonzero(out) == 0 and not calls


def test_mapping_keeps_intact_cells_local_when_global_branch_is_off():
    torch.manual_seed(0)
    t = build("mapping", latent=8, width=16, blocks_pre=1, blocks_post=0).eval()
    z = torch.randn(1, 8, 8, 8)
    m = torch.zeros(1, 1, 32, 32)
    m[..., 0:4, 0:4] = 1  # one defect cell at (0, 0)
    with torch.no_grad():
        on = t(z, m)
        t.use_global = False
        off = t(z, m)
    assert not torch.allclose(on[..., 0, 0], off[..., 0, 0])
    # with no post blocks, only the fused cell (and conv_out's 3x3 neighbourhood) can differ
    assert torch.allclose(on[..., 3:, 3:], off[..., 3:, 3:], atol=1e-6)


@pytest.mark.parametrize("defects", [False, True])
def test_features_of_another_width_are_refused_with_or_without_defects(defects):
    # without defects the block used to return zeros of the wrong width instead of failing
    block, _, m = _setup()
    x = torch.randn(1, 5, 8, 8)
    with pytest.raises(ValueError, match=re.escape("(B, 8, h, w)") + ".*" + re.escape("got (1, 5, 8, 8)")):
        block(x, m if defects else torch.zeros_like(m))


def test_mask_of_another_size_is_refused_with_its_shape():
    block, x, _ = _setup()
    with pytest.raises(ValueError, match=re.escape("got (1, 8, 8, 8) and (1, 1, 4, 4)")):
        block(x, torch.ones(1, 1, 4, 4))
