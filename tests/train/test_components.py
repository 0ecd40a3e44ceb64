"""Connected components and their features (used to judge the detector's false alarms)."""

from collections import deque

import pytest
import torch

from oldphoto.train.components import FEATURES, component_features, keep_components, label


def _flood_fill(mask: torch.Tensor) -> torch.Tensor:
    """Reference 8-connected labelling by breadth-first search: (B, 1, H, W) -> (B, H, W) int, 0 = off."""
    b, _, h, w = mask.shape
    out = torch.zeros(b, h, w, dtype=torch.long)
    n = 0
    for i in range(b):
        for r in range(h):
            for c in range(w):
                if mask[i, 0, r, c] > 0.5 and out[i, r, c] == 0:
                    n += 1
                    out[i, r, c] = n
                    todo = deque([(r, c)])
                    while todo:
                        y, x = todo.popleft()
                        for v in (y - 1, y, y + 1):
                            for u in (x - 1, x, x + 1):
                                if 0 <= v < h and 0 <= u < w and mask[i, 0, v, u] > 0.5 and out[i, v, u] == 0:
                                    out[i, v, u] = n
                                    todo.append((v, u))
    return out


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6])
def test_label_partitions_like_flood_fill(density):
    mask = (torch.rand(3, 1, 30, 41, generator=torch.Generator().manual_seed(1)) < density).float()
    ours, ref = label(mask)[:, 0], _flood_fill(mask)
    assert torch.equal(ours > 0, ref > 0)
    on = ref > 0
    pairs = set(zip(ours[on].tolist(), ref[on].tolist()))
    # a one-to-one map between the two labellings: the same components
    assert len(pairs) == len(set(ours[on].tolist())) == len(set(ref[on].tolist()))


def test_label_follows_a_long_winding_line_and_keeps_images_apart():
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, 0, 5, :60] = 1
    mask[:, 0, 5:60, 59] = 1
    mask[:, 0, 59, 3:60] = 1  # one U-shaped stroke of ~170 px
    lab = label(mask)
    assert lab[0][mask[0] > 0].unique().numel() == 1
    assert lab[1][mask[1] > 0].unique().numel() == 1
    assert lab[0].max() != lab[1].max()  # the same stroke in two images: two components


def test_features_describe_a_bright_scratch_and_keep_components_selects_pixels():
    image = torch.full((1, 3, 32, 32), 0.3)
    mask = torch.zeros(1, 1, 32, 32)
    mask[0, 0, 10, 4:28] = 1  # a 24 x 1 bright line
    mask[0, 0, 20:23, 20:23] = 1  # a 3 x 3 speck, no contrast
    image[:, :, 10, 4:28] = 0.9
    prob = mask * 0.9
    lab, ids, feats = component_features(mask, prob, image)
    assert feats.shape == (2, len(FEATURES))
    col = {name: feats[:, i] for i, name in enumerate(FEATURES)}
    line = int(torch.argmax(col["log_area"]))
    assert torch.exp(col["log_area"][line]) == pytest.approx(24)
    assert torch.exp(col["log_length"][line]) == pytest.approx(24, rel=0.05)
    assert torch.exp(col["log_width"][line]) == pytest.approx(1, rel=0.05)
    assert col["contrast"][line] == pytest.approx(0.6, abs=1e-5)
    assert col["contrast"][1 - line] == pytest.approx(0.0, abs=1e-5)
    assert col["mean_prob"][line] == pytest.approx(0.9, abs=1e-5)
    keep = torch.zeros(2, dtype=torch.bool)
    keep[line] = True
    kept = keep_components(lab, ids, keep)
    assert torch.equal(kept[0, 0, 10, 4:28], torch.ones(24, dtype=torch.bool))
    assert int(kept.sum()) == 24


def test_no_components_and_bad_shapes():
    lab, ids, feats = component_features(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 8, 8))
    assert ids.numel() == 0 and feats.shape == (0, len(FEATURES))
    assert not keep_components(lab, ids, torch.zeros(0, dtype=torch.bool)).any()
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        label(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="share batch and size"):
        component_features(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 9, 8))
