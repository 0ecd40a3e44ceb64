"""Colour conversions in torch: sRGB <-> linear RGB <-> CIE XYZ <-> CIE L*a*b* (D65), and dtype helpers.

Tensors are float with channels at dim -3: (B, 3, H, W) or (3, H, W). sRGB values are in [0, 1].
Lab units: L in [0, 100]; a, b roughly in [-128, 127] for sRGB colours (not clipped).
Conversions keep the input's float dtype; integer tensors are refused (use to_float first).
"""

from __future__ import annotations

import numpy as np
import torch

# IEC 61966-2-1 sRGB primaries to XYZ, D65 white (linear RGB -> XYZ, rows X, Y, Z).
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
# The reference white is the XYZ of linear RGB (1, 1, 1), so every gray maps exactly to a = b = 0.
_WHITE = tuple(sum(row) for row in _RGB_TO_XYZ)  # ≈ (0.95047, 1.0, 1.08883): D65
_XYZ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB_TO_XYZ, dtype=np.float64)).tolist()))

# CIE Lab companding constants: linear segment below (6/29)^3 avoids the infinite slope of the cube root.
_DELTA = 6.0 / 29.0
_DELTA3 = _DELTA**3
_SLOPE = 1.0 / (3.0 * _DELTA**2)
_OFFSET = 4.0 / 29.0

# Rec. 709 / sRGB luminance weights on *linear* RGB (the Y row of the matrix above).
LUMINANCE_WEIGHTS = _RGB_TO_XYZ[1]
# Rec. 601 luma weights on gamma-encoded RGB (the Y' of YCbCr, usual for super-resolution PSNR).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _check3(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{what}: expected a (B, 3, H, W) or (3, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what}: expected a float tensor, got {x.dtype}")


def _mix(x: torch.Tensor, matrix) -> torch.Tensor:
    """Apply a 3x3 matrix over the channel dim (-3)."""
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,...jhw->...ihw", m, x)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light in [0, 1] (any shape)."""
    # Clamping the branch argument keeps pow() away from negatives (NaN values and gradients).
    curve = ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(x <= 0.04045, x / 12.92, curve)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1] (any shape)."""
    curve = 1.055 * x.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055
    return torch.where(x <= 0.0031308, x * 12.92, curve)


def rgb_to_xyz(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> XYZ (B, 3, H, W), Y in [0, 1], D65 white ≈ (0.9505, 1, 1.0888)."""
    _check3(rgb, "rgb_to_xyz")
    return _mix(srgb_to_linear(rgb), _RGB_TO_XYZ)


def xyz_to_rgb(xyz: torch.Tensor) -> torch.Tensor:
    """XYZ (B, 3, H, W) -> sRGB (B, 3, H, W); out-of-gamut values are not clipped."""
    _check3(xyz, "xyz_to_rgb")
    return linear_to_srgb(_mix(xyz, _XYZ_TO_RGB))


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA3, t.clamp(min=_DELTA3) ** (1.0 / 3.0), t * _SLOPE + _OFFSET)


def _f_inv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t**3, (t - _OFFSET) / _SLOPE)


def xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """XYZ (B, 3, H, W) -> Lab (B, 3, H, W): L in [0, 100], a/b about [-128, 127]."""
    _check3(xyz, "xyz_to_lab")
    white = torch.tensor(_WHITE, dtype=xyz.dtype, device=xyz.device).view(3, 1, 1)
    fx, fy, fz = _f(xyz / white).unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    """Lab (B, 3, H, W) -> XYZ (B, 3, H, W)."""
    _check3(lab, "lab_to_xyz")
    l, a, b = lab.unbind(-3)
    fy = (l + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, fy - b / 200.0), dim=-3)
    white = torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device).view(3, 1, 1)
    return _f_inv(f) * white


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> Lab (B, 3, H, W): L in [0, 100], a/b about [-128, 127]. Gray -> a = b = 0."""
    _check3(rgb, "rgb_to_lab")
    return xyz_to_lab(rgb_to_xyz(rgb))


def lab_to_rgb(lab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Lab (B, 3, H, W) -> sRGB (B, 3, H, W); clipped to [0, 1] unless clip=False (out-of-gamut colours)."""
    _check3(lab, "lab_to_rgb")
    # Clamp linear light before the gamma curve: out-of-gamut negatives have no sRGB encoding.
    lin = _mix(lab_to_xyz(lab), _XYZ_TO_RGB)
    rgb = linear_to_srgb(lin.clamp(0.0, 1.0) if clip else lin)
    return rgb.clamp(0.0, 1.0) if clip else rgb


def lightness(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> CIE L* (B, 1, H, W) in [0, 100] (the L channel of rgb_to_lab)."""
    _check3(rgb, "lightness")
    y = (srgb_to_linear(rgb) * torch.tensor(LUMINANCE_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)).sum(
        -3, keepdim=True
    )
    return 116.0 * _f(y / _WHITE[1]) - 16.0


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> relative luminance Y (B, 1, H, W) in [0, 1], linear light."""
    _check3(rgb, "luminance")
    w = torch.tensor(LUMINANCE_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (srgb_to_linear(rgb) * w).sum(-3, keepdim=True)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> Rec. 601 luma Y' (B, 1, H, W) in [0, 1], on the encoded values."""
    _check3(rgb, "luma")
    w = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
    return (rgb * w).sum(-3, keepdim=True)


def l_to_rgb(l: torch.Tensor) -> torch.Tensor:
    """L* (B, 1, H, W) in [0, 100] -> the gray sRGB (B, 3, H, W) in [0, 1] with that lightness."""
    if l.dim() not in (3, 4) or l.shape[-3] != 1:
        raise ValueError(f"l_to_rgb: expected a (B, 1, H, W) or (1, H, W) tensor, got shape {tuple(l.shape)}")
    zeros = torch.zeros_like(l)
    return lab_to_rgb(torch.cat((l, zeros, zeros), dim=-3))


_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_TORCH_INT = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


def to_float(pixels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """uint8 / uint16 pixels (numpy or torch, any shape) -> float32 in [0, 1] of the same kind and shape."""
    if isinstance(pixels, torch.Tensor):
        for np_dtype, t_dtype in _TORCH_INT.items():
            if pixels.dtype == t_dtype:
                return pixels.to(torch.float32) / _MAX[np_dtype]
        raise TypeError(f"to_float: expected uint8 or uint16 pixels, got {pixels.dtype}")
    dtype = np.dtype(pixels.dtype)
    if dtype not in _MAX:
        raise TypeError(f"to_float: expected uint8 or uint16 pixels, got {dtype}")
    return pixels.astype(np.float32) / np.float32(_MAX[dtype])


def from_float(x: np.ndarray | torch.Tensor, dtype) -> np.ndarray:
    """Float values in [0, 1] (numpy or torch, any shape) -> numpy uint8/uint16: round(clip(x, 0, 1) * max)."""
    dtype = np.dtype(dtype)
    if dtype not in _MAX:
        raise TypeError(f"from_float: target dtype must be uint8 or uint16, got {dtype}")
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    return np.rint(np.clip(x, 0.0, 1.0) * np.float32(_MAX[dtype])).astype(dtype)
