"""One parametrized test for every registered architecture: shapes, finiteness, gradients.

Each architecture registers in SMALL_KWARGS: (constructor kwargs kept small, factory of example inputs,
expected output shape(s) as a function of the inputs). An ARCHS entry missing from the table fails.
"""

from __future__ import annotations

import pytest
import torch

from oldphoto.archs import ARCHS, build


def _defects(h: int, w: int) -> torch.Tensor:
    """(2, 1, h, w) mask in {0, 1}: a band of defects in the first sample, none in the second."""
    m = torch.zeros(2, 1, h, w)
    m[0, :, h // 4 : h // 2] = 1
    return m


# name -> (kwargs, inputs(h, w) -> tuple of tensors, expected_shapes(h, w) -> tuple of shapes or one shape)
SMALL_KWARGS: dict[str, tuple[dict, object, object]] = {
    # RGB in [0, 1] -> defect logits at full resolution
    "unet_detector": ({"channels": (4, 8, 8), "blocks": 1}, lambda h, w: (torch.rand(2, 3, h, w),),
                      lambda h, w: (2, 1, h, w)),
    # latent restoration (VAE1/VAE2 at 1/4 resolution, mapping T with partial non-local attention)
    "vae_encoder": ({"latent": 8, "width": 16, "half_width": 8, "blocks": 1}, lambda h, w: (torch.rand(2, 3, h, w),),
                    lambda h, w: ((2, 8, h // 4, w // 4), (2, 8, h // 4, w // 4))),
    "vae_decoder": ({"latent": 8, "width": 16, "half_width": 8, "blocks": 1},
                    lambda h, w: (torch.randn(2, 8, h // 4, w // 4),), lambda h, w: (2, 3, h, w)),
    "vae": ({"latent": 8, "width": 16, "half_width": 8, "blocks": 1}, lambda h, w: (torch.rand(2, 3, h, w),),
            lambda h, w: ((2, 3, h, w), (2, 8, h // 4, w // 4), (2, 8, h // 4, w // 4))),
    "partial_nonlocal": ({"channels": 8}, lambda h, w: (torch.randn(2, 8, h // 4, w // 4), _defects(h // 4, w // 4)),
                         lambda h, w: (2, 8, h // 4, w // 4)),
    "mapping": ({"latent": 8, "width": 16, "blocks_pre": 1, "blocks_post": 1, "context": True},
                lambda h, w: (torch.randn(2, 8, h // 4, w // 4), _defects(h, w)), lambda h, w: (2, 8, h // 4, w // 4)),
    # image-space fusion of the scan, its latent restoration and the mask
    "refiner": ({"width": 4}, lambda h, w: (torch.rand(2, 3, h, w), torch.rand(2, 3, h, w), _defects(h, w)),
                lambda h, w: (2, 3, h, w)),
    "patch_discriminator": ({"width": 8, "layers": 3}, lambda h, w: (torch.rand(2, 3, h, w),),
                            lambda h, w: (2, 1, h // 8, w // 8)),
    "latent_discriminator": ({"latent": 8, "width": 8}, lambda h, w: (torch.randn(2, 8, h // 4, w // 4),),
                             lambda h, w: (2, 1, h // 8, w // 8)),
    # optional stages: chroma from lightness (Lab units), compact super-resolution (x2 head by default)
    "colorizer_unet": ({"channels": (4, 8, 8), "blocks": 1, "in_stride": 2},
                       lambda h, w: (torch.rand(2, 1, h, w) * 100,), lambda h, w: (2, 2, h, w)),
    "upscaler": ({"channels": 8, "layers": 2, "scales": (2, 4)}, lambda h, w: (torch.rand(2, 3, h, w),),
                 lambda h, w: (2, 3, 2 * h, 2 * w)),
    # scan-blend strengths from per-image statistics (the input size does not matter: one row per image)
    "blend_gate": ({"n_features": 5, "hidden": 4}, lambda h, w: (torch.randn(2, 5),), lambda h, w: (2, 2)),
}

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
