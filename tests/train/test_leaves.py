import numpy as np
import pytest
from PIL import Image

from oldphoto.train.content import ContentMix, clean_crop, rotated_crop
from oldphoto.train.data import PhotoPool
from oldphoto.train.leaves import _power_law_radius, leaves_crop


def _pool(root, name, img):
    Image.fromarray(img.astype(np.uint8)).save(root / name)
    return PhotoPool([root / name], max_side=256)


@pytest.fixture(scope="module")
def colour_pool(tmp_path_factory):
    """A smooth colour photo: a diagonal ramp from dark red to light blue (no edges of its own)."""
    yy, xx = np.mgrid[0:160, 0:200] / 360.0
    t = (yy + xx)[..., None]
    img = (1 - t) * np.array([120, 20, 10]) + t * np.array([60, 140, 230])
    return _pool(tmp_path_factory.mktemp("colour"), "ramp.png", img)


@pytest.fixture(scope="module")
def gray_pool(tmp_path_factory):
    """A grey photo: noise on a ramp."""
    rng = np.random.default_rng(0)
    g = np.clip(np.mgrid[0:160, 0:200][1] + rng.normal(0, 20, (160, 200)), 0, 255)
    return _pool(tmp_path_factory.mktemp("gray"), "gray.png", np.repeat(g[..., None], 3, -1))


def test_collage_is_a_reproducible_float_image_with_edges_the_photo_lacks(colour_pool):
    a = leaves_crop(colour_pool, np.random.default_rng(3), 96, (0.5, 1.0))
    b = leaves_crop(colour_pool, np.random.default_rng(3), 96, (0.5, 1.0))
    assert a.shape == (96, 96, 3) and a.dtype == np.float32 and a.flags.c_contiguous
    assert 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    photo = colour_pool.random_crop(np.random.default_rng(3), 96, (0.5, 1.0))
    # the ramp's neighbouring pixels differ by ~1/255; occluding shapes make steps far larger
    step = lambda im: np.abs(np.diff(im.mean(-1), axis=1)).max()  # noqa: E731
    assert step(photo) < 0.01 and step(a) > 0.05
    assert not np.array_equal(a, leaves_crop(colour_pool, np.random.default_rng(4), 96, (0.5, 1.0)))


def test_grey_photos_give_grey_collages(gray_pool):
    for seed in range(4):
        crop = leaves_crop(gray_pool, np.random.default_rng(seed), 64, (0.5, 1.0))
        assert np.abs(crop - crop[..., :1]).max() < 1.5 / 255


def test_radii_follow_a_power_law_within_their_bounds():
    rng = np.random.default_rng(0)
    r = np.array([_power_law_radius(rng, 2.0, 100.0) for _ in range(20000)])
    assert r.min() >= 2.0 and r.max() <= 100.0
    # density ~ r^-3: P(r > 2k) = (1/k^2 - 1/2500) / (1 - 1/2500) for a lower bound of 2
    for k in (2, 4):
        assert abs((r > 2 * k).mean() - (k ** -2 - 1 / 2500) / (1 - 1 / 2500)) < 0.01


def test_content_mix_draws_collages_and_keeps_older_streams(colour_pool):
    with pytest.raises(ValueError, match="p_leaves must be in"):
        ContentMix(p_leaves=1.5)
    crop = clean_crop(colour_pool, np.random.default_rng(1), 64, (0.5, 1.0), ContentMix(p_leaves=1.0))
    rng = np.random.default_rng(1)
    rng.random()  # the draw that chose the collage
    np.testing.assert_array_equal(crop, leaves_crop(colour_pool, rng, 64, (0.5, 1.0)))
    # p_leaves 0 draws nothing: a rotation-only mix takes the same stream as before the collages existed
    crop = clean_crop(colour_pool, np.random.default_rng(2), 64, (0.5, 1.0), ContentMix(p_rotate=1.0))
    rng = np.random.default_rng(2)
    rng.random()
    angle = float(rng.uniform(0, 360))
    np.testing.assert_array_equal(crop, rotated_crop(colour_pool, rng, 64, (0.5, 1.0), angle))
