from dataclasses import replace

import numpy as np
import pytest

from oldphoto.train import degrade_second as d2
from oldphoto.train.degrade_second import KINDS, STEPS, SecondConfig, degrade_second



def photo(h=96, w=128):
    """Smooth colour ramps with a few hard edges, in [0.1, 0.9]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.cos(xx / 11)], 2) * 0.6 + 0.15
    img[h // 3: h // 2] += 0.15
    return np.clip(img, 0.1, 0.9).astype(np.float32)

# no ageing and no scan steps: the damage alone on the clean photo
QUIET = SecondConfig(**{p: 0.0 for p in STEPS})
KIND_FLAGS = [name for name, _ in KINDS]


def only(flag: str, base: SecondConfig = QUIET) -> SecondConfig:
    return replace(base, p_damage=1.0, **{f: (1.0 if f == flag else 0.0) for f in KIND_FLAGS})


def test_reproducible_from_seed_and_well_formed():
    x = photo(64, 80)
    a = degrade_second(x, np.random.default_rng(5))
    b = degrade_second(x, np.random.default_rng(5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.gray == b.gray
    assert a.image.shape == (64, 80, 3) and a.image.dtype == np.float32
    assert a.mask.shape == (64, 80) and set(np.unique(a.mask)) <= {0.0, 1.0}
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0


@pytest.mark.parametrize("flag", KIND_FLAGS)
def test_each_kind_alone_is_labelled_where_it_visibly_changed_the_photo(flag):
    x = photo(96, 128)
    marked = 0
    for s in range(3):
        d = degrade_second(x, np.random.default_rng(s), only(flag))
        change = np.abs(d.image - x).max(axis=2)
        # with nothing after the damage, the label is exactly the visible change
        assert np.array_equal(d.mask > 0, change > QUIET.visible), flag
        marked += int(d.mask.sum())
    assert marked > 0, flag


def test_noise_and_jpeg_never_enter_the_label():
    cfg = replace(SecondConfig(), p_damage=0.0, p_noise=1.0, p_banding=1.0, p_jpeg=1.0)
    for s in range(3):
        d = degrade_second(photo(), np.random.default_rng(s), cfg)
        assert not d.mask.any()
        assert np.abs(d.image - photo()).max() > 0.02  # the scan did change the image


def test_label_follows_the_damage_through_blur_and_veiling():
    cfg = replace(only("p_scratch", SecondConfig()), p_blur=1.0, p_box_blur=0.0, blur_sigma=(2.0, 2.0),
                  p_veil=1.0, p_damage_on_print=1.0, p_noise=0, p_banding=0, p_jpeg=0, p_mono=0)
    x = photo(96, 128)
    sharp = [degrade_second(x, np.random.default_rng(s), only("p_scratch")).mask.sum() for s in range(4)]
    soft = [degrade_second(x, np.random.default_rng(s), cfg).mask.sum() for s in range(4)]
    assert sum(soft) < sum(sharp)  # a veiled, blurred scratch shows less: less of it is labelled


def test_mono_prints_are_gray_unless_toned():
    cfg = replace(SecondConfig(), p_mono=1.0, p_duotone=0.0, p_damage=0.0, p_noise=0, p_banding=0, p_jpeg=0)
    d = degrade_second(photo(), np.random.default_rng(0), cfg)
    assert d.gray
    assert np.array_equal(d.image[..., 0], d.image[..., 1]) and np.array_equal(d.image[..., 1], d.image[..., 2])
    toned = degrade_second(photo(), np.random.default_rng(0), replace(cfg, p_duotone=1.0))
    assert toned.gray and np.abs(toned.image[..., 0] - toned.image[..., 2]).mean() > 0.02


def test_some_kind_fires_whenever_damage_is_drawn():
    cfg = replace(QUIET, p_damage=1.0, **{f: 0.0 for f in KIND_FLAGS})
    assert all(degrade_second(photo(), np.random.default_rng(s), cfg).mask.any() for s in range(4))


def test_bad_input_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        degrade_second(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="must be an"):
        degrade_second(np.zeros((32, 32), np.float32), np.random.default_rng(0))


def test_supersampled_strokes_give_fractional_coverage_for_thin_lines():
    layer = d2._Layer(16, 16)
    layer.line(np.array([[0.0, 8.0], [16.0, 8.0]]), 0.5)
    cov = layer.coverage()
    assert 0 < cov.max() < 1  # a half-pixel line covers part of a pixel
