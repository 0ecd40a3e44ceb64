"""Classical baseline pieces: inpainting fills from the surroundings, bilateral keeps edges, stretch spans [0, 1]."""

from __future__ import annotations

import torch

from oldphoto.train.baseline import BaselineConfig, bilateral, classical_restore, contrast_stretch, inpaint


def test_inpaint_fills_holes_from_intact_pixels_only():
    x = torch.full((2, 3, 32, 32), 0.3)
    x[1] = 0.7
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 10:20, 5:25] = 1
    damaged = torch.where(mask > 0, torch.ones_like(x), x)  # white blotch
    out = inpaint(damaged, mask)
    assert torch.allclose(out, x, atol=1e-5)
    # a linear ramp is harmonic: the diffusion must keep the hole close to it
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    filled = inpaint(torch.where(mask[:1] > 0, torch.zeros_like(ramp), ramp), mask[:1], diffusion_iters=200)
    assert (filled - ramp).abs().max() < 0.08


def test_inpaint_leaves_an_all_defect_image_alone():
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(inpaint(x, torch.ones(1, 1, 8, 8)), x)


def test_bilateral_smooths_noise_but_keeps_a_step_edge():
    torch.manual_seed(0)
    clean = torch.zeros(1, 3, 32, 32)
    clean[..., 16:] = 1.0
    noisy = clean + 0.03 * torch.randn_like(clean)
    out = bilateral(noisy, 2, 1.5, 0.15)
    assert (out - clean).pow(2).mean() < 0.5 * (noisy - clean).pow(2).mean()
    assert out[..., 15].mean() < 0.1 and out[..., 16].mean() > 0.9


def test_contrast_stretch_spans_the_range_per_channel():
    x = torch.rand(1, 3, 16, 16) * 0.4 + torch.tensor([0.1, 0.3, 0.5]).view(1, 3, 1, 1)
    out = contrast_stretch(x, 0.0, 1.0)
    assert torch.allclose(out.amin((2, 3)), torch.zeros(1, 3), atol=1e-5)
    assert torch.allclose(out.amax((2, 3)), torch.ones(1, 3), atol=1e-5)


def test_classical_restore_removes_a_thin_scratch():
    x = torch.full((1, 3, 48, 48), 0.5)
    x[..., 24, :] = 1.0  # one-pixel white scratch
    out, mask = classical_restore(x, BaselineConfig(stretch=False))
    assert mask[0, 0, 24].mean() > 0.9 and mask[0, 0, :20].sum() == 0
    assert (out - 0.5).abs().max() < 0.02
