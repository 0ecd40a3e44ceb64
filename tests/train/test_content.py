import numpy as np
import pytest
from PIL import Image

from oldphoto.train import detector as D
from oldphoto.train.content import ContentMix, boundary_alpha, clean_crop, rotated_crop
from oldphoto.train.data import PhotoPool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two photos: horizontal stripes in red, vertical stripes in blue (content whose direction and colour show)."""
    root = tmp_path_factory.mktemp("photos")
    yy, xx = np.mgrid[0:200, 0:240]
    zero = np.zeros((200, 240))
    red = np.stack([(yy // 8 % 2) * 200 + 40, zero + 30, zero + 20], -1)
    blue = np.stack([zero + 10, zero + 60, (xx // 8 % 2) * 180 + 50], -1)
    paths = []
    for name, img in (("red.png", red), ("blue.png", blue)):
        Image.fromarray(img.astype(np.uint8)).save(root / name)
        paths.append(root / name)
    return PhotoPool(paths, max_side=240)


def test_no_step_keeps_the_pools_crop_and_random_stream(pool):
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(clean_crop(pool, a, 48, (0.5, 1.0), ContentMix()),
                                  pool.random_crop(b, 48, (0.5, 1.0)))
    assert a.random() == b.random()


@pytest.mark.parametrize("field", ["p_rotate", "p_join", "p_permute", "p_leaves"])
def test_probabilities_outside_0_1_are_refused(field):
    with pytest.raises(ValueError, match=f"{field} must be in"):
        ContentMix(**{field: 1.2})
    with pytest.raises(ValueError, match=f"{field} must be in"):
        D.Config(**{field: -0.1}).content_mix()


def test_quarter_turn_turns_the_stripes(pool):
    crop = rotated_crop(pool, np.random.default_rng(0), 64, (1.0, 1.0), 90.0)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.float32
    assert 0.0 <= crop.min() and crop.max() <= 1.0
    main = int(np.argmax(crop.mean((0, 1))[[0, 2]]))
    stripes = crop[..., 2 * main]
    # turned a quarter, rows of either photo's stripes become columns and columns rows: the variation swaps axes
    row_var, col_var = stripes.mean(1).std(), stripes.mean(0).std()
    assert (row_var > 5 * col_var) if main == 1 else (col_var > 5 * row_var)


def test_boundary_is_two_flat_sides_with_a_narrow_ramp():
    for seed in range(6):
        alpha = boundary_alpha(np.random.default_rng(seed), 96)
        assert alpha.shape == (96, 96) and alpha.dtype == np.float32
        assert alpha.min() >= 0 and alpha.max() <= 1
        ramp = ((alpha > 0.02) & (alpha < 0.98)).mean()
        # about one pixel across a curve: a few rows' worth at most, never a soft blend of the two photos
        assert ramp < 0.08, (seed, ramp)


def test_join_combines_the_two_photos_and_permute_only_reorders_channels(pool):
    mix = ContentMix(p_join=1.0)
    both = 0
    for seed in range(12):
        crop = clean_crop(pool, np.random.default_rng(seed), 64, (1.0, 1.0), mix)
        red = crop[..., 0] > crop[..., 2]
        both += bool(red.mean() > 0.05 and (~red).mean() > 0.05)
    assert both >= 3  # from two photos, the joined crop often holds both

    for seed in range(6):
        a = clean_crop(pool, np.random.default_rng(seed), 64, (1.0, 1.0), ContentMix(p_permute=1.0))
        b = clean_crop(pool, np.random.default_rng(seed), 64, (1.0, 1.0), ContentMix(p_rotate=0.0, p_join=1e-12))
        assert sorted(a.reshape(-1, 3).T.tolist()) == sorted(b.reshape(-1, 3).T.tolist())


def test_detector_batches_use_the_content_steps(pool):
    cfg = D.Config(crop=32, batch=3, p_rotate=1.0, p_join=1.0, p_permute=1.0)
    x, y, _ = D.sample_batch(pool, np.random.default_rng(0), cfg)
    assert tuple(x.shape) == (3, 3, 32, 32) and tuple(y.shape) == (3, 1, 32, 32)
    x0, _, _ = D.sample_batch(pool, np.random.default_rng(0), D.Config(crop=32, batch=3))
    assert not np.allclose(x.numpy(), x0.numpy())
