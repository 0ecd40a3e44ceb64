"""Colour conversions: published D65 Lab values, round trips, gray, dtype helpers, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oldphoto.ops import color

# sRGB (0-1) -> CIE Lab (D65), values as published by e.g. Lindbloom / colormine.
KNOWN = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ((1.0, 1.0, 0.0), (97.14, -21.55, 94.48)),
    ((128 / 255, 128 / 255, 128 / 255), (53.59, 0.0, 0.0)),
]


def _pixels(values) -> torch.Tensor:
    """List of 3-tuples -> (1, 3, N, 1) tensor."""
    return torch.tensor(values, dtype=torch.float32).T.reshape(1, 3, len(values), 1)


def test_known_lab_values():
    lab = color.rgb_to_lab(_pixels([rgb for rgb, _ in KNOWN]))[0, :, :, 0].T
    want = torch.tensor([l for _, l in KNOWN])
    assert torch.allclose(lab, want, atol=0.02), (lab, want)


def test_known_values_back_to_rgb():
    rgb = color.lab_to_rgb(_pixels([l for _, l in KNOWN]))[0, :, :, 0].T
    want = torch.tensor([c for c, _ in KNOWN])
    assert torch.allclose(rgb, want, atol=1.5e-3)  # published Lab values carry 2 decimals


def test_round_trip_random_batch():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 17, 23, generator=g)
    rgb[0, :, 0, :3] = torch.tensor([0.0, 1e-4, 1.0])[:, None]  # near-black values hit the linear segments
    back = color.lab_to_rgb(color.rgb_to_lab(rgb))
    assert (back - rgb).abs().max().item() < 1e-4


def test_round_trip_through_every_space():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(color.linear_to_srgb(color.srgb_to_linear(rgb)), rgb, atol=1e-10)
    assert torch.allclose(color.xyz_to_rgb(color.rgb_to_xyz(rgb)), rgb, atol=1e-10)
    xyz = color.rgb_to_xyz(rgb)
    assert torch.allclose(color.lab_to_xyz(color.xyz_to_lab(xyz)), xyz, atol=1e-10)
    assert color.rgb_to_lab(rgb).dtype == torch.float64


def test_gray_has_no_chroma_and_matches_lightness():
    v = torch.linspace(0, 1, 101)
    gray = v.view(1, 1, 1, -1).expand(1, 3, 2, -1).contiguous()
    lab = color.rgb_to_lab(gray)
    assert lab[:, 1:].abs().max() < 1e-3
    assert torch.all(lab[0, 0, 0, 1:] > lab[0, 0, 0, :-1])  # L is monotonic in gray level
    assert torch.allclose(color.lightness(gray), lab[:, :1], atol=1e-4)
    assert torch.allclose(color.l_to_rgb(lab[:, :1]), gray, atol=1e-4)


def test_unbatched_input_and_gradients():
    rgb = torch.rand(3, 5, 5, requires_grad=True)
    lab = color.rgb_to_lab(rgb)
    assert lab.shape == (3, 5, 5)
    lab.sum().backward()
    assert torch.isfinite(rgb.grad).all()
    # Gradients stay finite at exact zeros (branch clamping), which a naive pow would turn to NaN.
    z = torch.zeros(1, 3, 2, 2, requires_grad=True)
    color.rgb_to_lab(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_lab_to_rgb_clips_out_of_gamut_only_when_asked():
    lab = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)  # far outside sRGB
    clipped = color.lab_to_rgb(lab)
    raw = color.lab_to_rgb(lab, clip=False)
    assert clipped.min() >= 0 and clipped.max() <= 1
    assert raw.min() < 0 or raw.max() > 1


def test_luminance_and_luma():
    rgb = _pixels([(1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.5, 0.5, 0.5)])
    y = color.luminance(rgb)[0, 0, :, 0]
    assert torch.allclose(y, torch.tensor([1.0, 0.2126729, 0.7151522, 0.2140411]), atol=1e-5)
    yp = color.luma(rgb)[0, 0, :, 0]
    assert torch.allclose(yp, torch.tensor([1.0, 0.299, 0.587, 0.5]), atol=1e-6)


@pytest.mark.parametrize("bad", [torch.rand(1, 4, 5, 5), torch.rand(5, 5), torch.rand(2, 1, 3, 3)])
def test_wrong_shapes_name_the_shape(bad):
    with pytest.raises(ValueError, match=str(tuple(bad.shape)).replace("(", r"\(").replace(")", r"\)")):
        color.rgb_to_lab(bad)


def test_integer_tensor_refused():
    with pytest.raises(TypeError, match="float"):
        color.rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
def test_to_float_from_float_exact_round_trip(dtype, top):
    px = np.arange(0, top + 1, max(1, top // 1000), dtype=dtype).reshape(-1, 1, 1)
    px = np.concatenate([px, np.full((1, 1, 1), top, dtype)])
    f = color.to_float(px)
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() == 1.0
    assert np.array_equal(color.from_float(f, dtype), px)
    t = color.to_float(torch.from_numpy(px.astype(np.int64)).to(torch.uint8 if dtype == np.uint8 else torch.uint16))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(f))
    assert np.array_equal(color.from_float(t, dtype), px)


def test_from_float_clips_and_rounds():
    x = np.array([-0.5, 0.0, 0.51 / 255, 0.49 / 255, 1.2], dtype=np.float32)
    assert color.from_float(x, np.uint8).tolist() == [0, 0, 1, 0, 255]


def test_dtype_helpers_refuse_other_dtypes():
    with pytest.raises(TypeError, match="float64"):
        color.to_float(np.zeros(3))
    with pytest.raises(TypeError, match="int32"):
        color.from_float(np.zeros(3), np.int32)
