"""Connected components of defect masks, and per-component features for judging which ones are false alarms.

Masks are (B, 1, H, W) float, > 0.5 = defect; images (B, 1|3, H, W) float in [0, 1]; probabilities (B, 1, H, W)
in [0, 1]. Components are 8-connected and never span two images of a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.color import luma

# Names of the columns component_features returns, in order.
FEATURES = (
    "log_area", "mean_prob", "max_prob", "mean_logit", "log_length", "log_width", "fill", "log_elongation",
    "contrast", "abs_contrast", "contrast_z", "ring_std", "inside_std", "chroma_contrast", "ring_mean",
    "touches_border", "flagged_share", "log_count",
)

_RING = 2  # pixels around a component that stand for the intact surroundings it is compared with


def _check(x: torch.Tensor, channels: tuple[int, ...], what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] not in channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        want = " or ".join(str(c) for c in channels)
        raise ValueError(f"{what}: expected a (B, {want}, H, W) tensor, got {shape}")


def label(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) mask -> (B, 1, H, W) int64 labels: 0 off the mask; each 8-connected component one positive id,
    unique across the batch (1 + the flat index of one of its pixels; ids are not consecutive).

    Max propagation over 3x3 neighbourhoods with pointer jumping (a pixel takes the label of the pixel its label
    names), so long thin scratches converge in a few dozen passes rather than one pass per pixel of length.
    """
    _check(mask, (1,), "label")
    on = mask > 0.5
    n = on.numel()
    # float64 holds every index exactly (max_pool2d has no integer kernel on the CPU)
    index = torch.arange(1, n + 1, dtype=torch.float64).view(on.shape)
    lab = torch.where(on, index, torch.zeros((), dtype=torch.float64))
    flat_on = on.reshape(-1)
    while True:
        grown = torch.where(on, F.max_pool2d(lab, 3, stride=1, padding=1), lab)
        flat = grown.reshape(-1)
        for _ in range(4):  # jump: every label names an on pixel of the same component whose label is >= it
            flat = torch.where(flat_on, flat[(flat.long() - 1).clamp(min=0)], flat)
        grown = flat.view(on.shape)
        if torch.equal(grown, lab):
            return lab.long()
        lab = grown


def _per_component(values: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    return torch.zeros(count, dtype=torch.float64).index_add_(0, index, values.double())


def component_features(mask: torch.Tensor, prob: torch.Tensor, image: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Describe every component of a binarised detector output.

    mask (B, 1, H, W) > 0.5 = flagged; prob (B, 1, H, W) the detector's probabilities; image (B, 1|3, H, W) in
    [0, 1]. Returns (labels (B, 1, H, W) int64 as `label` gives them, ids (K,) int64 sorted, features (K, F)
    float32 with columns FEATURES). Contrasts compare the component's luma (and colour difference) with a
    2-pixel ring of unflagged pixels around it: a scratch differs from its surroundings, content that the
    detector mistakes for one often continues into them.
    """
    _check(mask, (1,), "component_features mask")
    _check(prob, (1,), "component_features prob")
    _check(image, (1, 3), "component_features image")
    if prob.shape != mask.shape or image.shape[0] != mask.shape[0] or image.shape[2:] != mask.shape[2:]:
        raise ValueError(f"component_features: mask {tuple(mask.shape)}, prob {tuple(prob.shape)} and image "
                         f"{tuple(image.shape)} must share batch and size")
    lab = label(mask)
    b, _, h, w = mask.shape
    on = lab > 0
    ids, inv = torch.unique(lab[on], return_inverse=True)
    k = ids.numel()
    if k == 0:
        return lab, ids, torch.zeros(0, len(FEATURES))
    y = luma(image) if image.shape[1] == 3 else image
    diff = (image[:, [2, 0]] - y) if image.shape[1] == 3 else torch.zeros_like(y).expand(-1, 2, -1, -1)
    img = torch.arange(b).view(b, 1, 1, 1).expand_as(lab)[on]
    yy = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1).expand_as(lab)[on]
    xx = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w).expand_as(lab)[on]

    area = _per_component(torch.ones_like(yy), inv, k)
    p = prob[on].double().clamp(1e-6, 1 - 1e-6)
    mean_prob = _per_component(p, inv, k) / area
    max_prob = torch.zeros(k, dtype=torch.float64).scatter_reduce_(0, inv, p, "amax")
    mean_logit = _per_component(torch.log(p / (1 - p)), inv, k) / area
    # second moments -> principal axes: length along the major axis, width = area / length
    my, mx = _per_component(yy, inv, k) / area, _per_component(xx, inv, k) / area
    dy, dx = yy - my[inv], xx - mx[inv]
    syy, sxx, sxy = (_per_component(v, inv, k) / area for v in (dy * dy, dx * dx, dy * dx))
    half_tr, det = (syy + sxx) / 2, syy * sxx - sxy * sxy
    root = (half_tr * half_tr - det).clamp(min=0).sqrt()
    major, minor = half_tr + root, (half_tr - root).clamp(min=0)
    length = torch.sqrt(12 * major + 1)  # a uniform bar of length L has variance L^2 / 12 along it
    width = area / length
    elongation = torch.sqrt((major + 1 / 12) / (minor + 1 / 12))
    lo_y = torch.full((k,), float(h), dtype=torch.float64).scatter_reduce_(0, inv, yy, "amin")
    hi_y = torch.zeros(k, dtype=torch.float64).scatter_reduce_(0, inv, yy, "amax")
    lo_x = torch.full((k,), float(w), dtype=torch.float64).scatter_reduce_(0, inv, xx, "amin")
    hi_x = torch.zeros(k, dtype=torch.float64).scatter_reduce_(0, inv, xx, "amax")
    fill = area / ((hi_y - lo_y + 1) * (hi_x - lo_x + 1))
    border = ((lo_y == 0) | (lo_x == 0) | (hi_y == h - 1) | (hi_x == w - 1)).double()

    lum = y[on].double()
    inside_mean = _per_component(lum, inv, k) / area
    inside_std = (_per_component(lum * lum, inv, k) / area - inside_mean ** 2).clamp(min=0).sqrt()
    chroma_in = [_per_component(diff[:, c:c + 1][on], inv, k) / area for c in range(2)]
    # ring: unflagged pixels within _RING of a component, given to the component with the largest id nearby
    near = F.max_pool2d(lab.double(), 2 * _RING + 1, stride=1, padding=_RING).long()
    ring = (~on) & (near > 0)
    rinv = torch.searchsorted(ids, near[ring])
    ring_n = _per_component(torch.ones_like(rinv, dtype=torch.float64), rinv, k)
    safe_n = ring_n.clamp(min=1)
    rlum = y[ring].double()
    ring_mean = _per_component(rlum, rinv, k) / safe_n
    ring_std = (_per_component(rlum * rlum, rinv, k) / safe_n - ring_mean ** 2).clamp(min=0).sqrt()
    ring_mean = torch.where(ring_n > 0, ring_mean, inside_mean)  # a component filling its crop: no contrast
    chroma_ring = [torch.where(ring_n > 0, _per_component(diff[:, c:c + 1][ring], rinv, k) / safe_n, chroma_in[c])
                   for c in range(2)]
    contrast = inside_mean - ring_mean
    chroma_contrast = torch.sqrt(sum((a - r) ** 2 for a, r in zip(chroma_in, chroma_ring)))

    per_img_area = torch.zeros(b, dtype=torch.float64).index_add_(0, img, torch.ones_like(yy))
    image_of = torch.zeros(k, dtype=torch.long).scatter_reduce_(0, inv, img, "amax")  # the image each lies in
    per_img_count = torch.zeros(b, dtype=torch.float64).index_add_(0, image_of, torch.ones(k, dtype=torch.float64))
    cols = {
        "log_area": area.log(), "mean_prob": mean_prob, "max_prob": max_prob, "mean_logit": mean_logit,
        "log_length": length.log(), "log_width": width.log(), "fill": fill, "log_elongation": elongation.log(),
        "contrast": contrast, "abs_contrast": contrast.abs(), "contrast_z": contrast.abs() / (ring_std + 0.01),
        "ring_std": ring_std, "inside_std": inside_std, "chroma_contrast": chroma_contrast, "ring_mean": ring_mean,
        "touches_border": border, "flagged_share": per_img_area[image_of] / (h * w),
        "log_count": per_img_count[image_of].log(),
    }
    return lab, ids, torch.stack([cols[name] for name in FEATURES], 1).float()


def keep_components(labels: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) labels, (K,) sorted ids, (K,) bool -> (B, 1, H, W) bool: the pixels of the kept components."""
    if ids.numel() == 0:
        return torch.zeros_like(labels, dtype=torch.bool)
    on = labels > 0
    out = torch.zeros_like(labels, dtype=torch.bool)
    out[on] = keep[torch.searchsorted(ids, labels[on])]
    return out
