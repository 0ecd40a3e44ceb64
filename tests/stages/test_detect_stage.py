import pytest
import torch

from oldphoto.archs import build
from oldphoto.stages.detect import (HALF_WEIGHT, TWO_SCALE_RESTORE_THRESHOLD, TWO_SCALE_THRESHOLD, Detector,
                                   TwoScaleDetector)
from oldphoto.stages.restore import restore_threshold


def _detector(threshold=0.4):
    torch.manual_seed(0)
    return Detector(build("unet_detector", channels=(4, 8, 8), blocks=1), threshold)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_probabilities_per_tile_any_batch(batch):
    det = _detector()
    tiles = torch.rand(batch, 3, 32, 32)
    prob = det(tiles)
    assert prob.shape == (batch, 1, 32, 32)
    assert prob.dtype == torch.float32
    assert (prob >= 0).all() and (prob <= 1).all()
    assert not prob.requires_grad


def test_each_tile_is_independent_of_its_batch():
    det = _detector()
    tiles = torch.rand(4, 3, 32, 32)
    assert torch.allclose(det(tiles)[2:3], det(tiles[2:3]), atol=1e-6)


def test_threshold_and_binarize():
    det = _detector(0.4)
    assert det.threshold == 0.4 and det.entry is None
    prob = torch.tensor([0.1, 0.4, 0.41, 0.9]).view(1, 1, 2, 2)
    assert det.binarize(prob).flatten().tolist() == [0, 0, 1, 1]
    assert det.binarize(prob, 0.05).sum() == 4


def test_bad_inputs_are_refused_with_their_shape():
    det = _detector()
    with pytest.raises(ValueError, match=r"expected tiles \(B, 1 or 3, T, T\).*\(3, 32, 32\)"):
        det(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="dtype"):
        det(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="threshold"):
        Detector(build("unet_detector", channels=(4, 8), blocks=1), 1.5)


def test_same_probabilities_as_the_plain_model():
    torch.manual_seed(0)
    model = build("unet_detector", channels=(4, 8, 8), blocks=1).eval()
    tiles = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        want = torch.sigmoid(model(tiles))
    assert torch.allclose(Detector(model, 0.5)(tiles), want, atol=1e-5)


def test_from_registry_takes_the_tuned_threshold_from_the_meta(tmp_path, registry_at):
    from oldphoto.train.run_files import export_weights

    torch.manual_seed(0)
    kwargs = {"channels": [4, 8], "blocks": 1}
    export_weights(build("unet_detector", **kwargs).state_dict(), "det-tiny", "unet_detector", kwargs,
                   {"threshold": 0.35}, tmp_path)
    registry_at(tmp_path)
    det = Detector.from_registry("det-tiny")
    assert det.threshold == 0.35 and det.entry.name == "det-tiny" and len(det.entry.sha256) == 64
    assert Detector.from_registry("det-tiny", threshold=0.6).threshold == 0.6
    assert det(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)


def test_from_registry_refuses_the_name_of_another_kind_of_network(tmp_path, registry_at):
    """A VAE's name gave a Detector that failed at its first tile (sigmoid of the VAE's tuple)."""
    from oldphoto.errors import WeightsError
    from oldphoto.train.run_files import export_weights

    kwargs = {"latent": 8, "width": 16, "half_width": 8, "blocks": 1}
    export_weights(build("vae", **kwargs).state_dict(), "vae-tiny", "vae", kwargs, {}, tmp_path)
    registry_at(tmp_path)
    with pytest.raises(WeightsError, match="model 'vae-tiny' is a 'vae' network, not the 'unet_detector'"):
        Detector.from_registry("vae-tiny")


class _BySize:
    """A stand-in detector: probability 0.5 on full-size tiles, `half` on tiles of half that size, and a record
    of the sizes it was shown."""

    entry = None

    def __init__(self, size: int, half: float):
        self.size, self.half, self.seen = size, half, []

    def __call__(self, tiles):
        self.seen.append(tuple(tiles.shape))
        value = 0.5 if tiles.shape[-1] == self.size else self.half
        return torch.full((len(tiles), 1, *tiles.shape[-2:]), value)


def test_two_scales_combine_both_passes_as_a_noisy_or_with_the_half_pass_weighted():
    inner = _BySize(32, half=0.2)
    two = TwoScaleDetector(inner)
    prob = two(torch.rand(2, 3, 32, 32))
    assert inner.seen == [(2, 3, 32, 32), (2, 3, 16, 16)]  # the tile as is, then shrunk to half size
    expected = 1 - 0.5 * (1 - HALF_WEIGHT * 0.2)
    assert tuple(prob.shape) == (2, 1, 32, 32) and torch.allclose(prob, torch.full_like(prob, expected))
    assert (two.threshold, two.restore_threshold, two.scales) == (TWO_SCALE_THRESHOLD, TWO_SCALE_RESTORE_THRESHOLD, 2)
    assert torch.allclose(TwoScaleDetector(inner, half_weight=1.0)(torch.rand(1, 3, 32, 32)), torch.tensor(0.6))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"half_weight must be in \\(0, 1\\], got {bad}"):
            TwoScaleDetector(inner, half_weight=bad)
    with pytest.raises(ValueError, match=r"T even.*\(1, 3, 31, 31\)"):
        two(torch.rand(1, 3, 31, 31))


def test_two_scales_mark_at_least_what_either_pass_marks_and_set_the_restore_threshold():
    det = _detector()
    two = TwoScaleDetector(det)
    tiles = torch.rand(2, 3, 32, 32)
    prob = two(tiles)
    assert (prob >= det(tiles) - 1e-6).all() and prob.max() <= 1
    assert two.entry is det.entry and two.device == det.device

    class Restorer:
        mask_threshold = 0.8

    assert restore_threshold(Restorer(), det) == 0.8  # one pass: the threshold the restorer was tuned with
    assert restore_threshold(Restorer(), two) == TWO_SCALE_RESTORE_THRESHOLD  # two: the detector's own


@pytest.mark.parametrize("tiles, says", [(torch.rand(1, 2, 32, 32), r"\(B, 1 or 3, T, T\).*\(1, 2, 32, 32\)"),
                                         (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "dtype torch.uint8")])
def test_two_scales_refuse_tiles_the_detector_cannot_take_in_their_own_name(tiles, says):
    # were passed on: a stand-in detector that does not check took them; a Detector's error named only itself
    inner = _BySize(32, half=0.2)
    with pytest.raises(ValueError, match="^TwoScaleDetector: .*" + says):
        TwoScaleDetector(inner)(tiles)
    assert inner.seen == []
