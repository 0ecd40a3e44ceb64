from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oldphoto.errors import ImageError, SettingsError
from oldphoto.train.data import (PhotoPool, corpus_dir, list_photos, make_pair, split_corpus, to_gray,
                                 validation_set)
from oldphoto.train.degrade import DegradeConfig
from oldphoto.train.synth import write_examples


NOTHING = DegradeConfig(
    p_fade=0, p_color_cast=0, p_desaturate=0, p_bw=0, p_toned=0, p_stain=0, p_exposure=0, p_grain=0,
    p_halftone=0, p_structured=0, p_damage_after_scan=0, p_scratch=0, p_dust=0, p_hair=0, p_crease=0, p_tear=0,
    p_blotch=0, p_texture=0, p_blur=0, p_noise=0, p_resample=0, p_jpeg=0,
)


def save_photo(path: Path, h: int, w: int, seed: int) -> Path:
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full((h, w), r.integers(256))], 2)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


def fake_corpus(root: Path, n: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = [save_photo(root / f"photo_{i:02d}{'.jpg' if i % 2 else '.png'}", 30 + i, 40, i) for i in range(n)]
    (root / "SOURCES.tsv").write_text("name\tlicence\n")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "sub").mkdir()
    return paths


def test_corpus_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("OLDPHOTO_CORPUS", str(tmp_path))
    assert corpus_dir() == tmp_path
    monkeypatch.delenv("OLDPHOTO_CORPUS")
    assert corpus_dir() == Path.home() / ".cache" / "oldphoto" / "corpus"


def test_list_photos_skips_other_files(tmp_path):
    paths = fake_corpus(tmp_path, 5)
    assert list_photos(tmp_path) == sorted(paths)
    with pytest.raises(SettingsError, match="nowhere.*photo folder does not exist"):
        list_photos(tmp_path / "nowhere")


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    paths = fake_corpus(tmp_path / "c", 40)
    train, val = split_corpus(tmp_path / "c", 0.25, seed=0)
    assert (train, val) == split_corpus(tmp_path / "c", 0.25, seed=0)
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(paths)
    assert 3 <= len(val) <= 20
    assert train == sorted(train) and val == sorted(val)
    assert split_corpus(tmp_path / "c", 0.25, seed=1) != (train, val)


def test_split_is_stable_when_photos_are_added(tmp_path):
    fake_corpus(tmp_path, 20)
    train, val = split_corpus(tmp_path)
    for i in range(20, 30):
        save_photo(tmp_path / f"photo_{i:02d}.png", 20, 20, i)
    train2, val2 = split_corpus(tmp_path)
    assert set(val) <= set(val2) and set(train) <= set(train2)


def test_split_of_a_tiny_corpus_keeps_a_validation_photo(tmp_path):
    fake_corpus(tmp_path, 2)
    train, val = split_corpus(tmp_path, 0.15)
    assert len(train) == 1 and len(val) == 1
    assert split_corpus(tmp_path, 0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_corpus(tmp_path, 1.0)


@pytest.mark.parametrize("photos, says", [(0, "no photos in the corpus folder"), (1, "1 photo.s. cannot be split")])
def test_an_empty_or_one_photo_corpus_is_a_settings_error_naming_the_folder(tmp_path, photos, says):
    fake_corpus(tmp_path, photos)
    with pytest.raises(SettingsError, match=f"{tmp_path}: {says}"):
        split_corpus(tmp_path, 0.15)


def test_pool_downscales_and_applies_exif_orientation(tmp_path):
    big = save_photo(tmp_path / "big.png", 200, 300, 0)
    rot = tmp_path / "rot.jpg"
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # stored landscape ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... displayed rotated 90 degrees: portrait
    im.save(rot, exif=exif.tobytes())
    pool = PhotoPool([big, rot], max_side=100)
    assert len(pool) == 2
    assert pool.photos[0].shape == (67, 100, 3) and pool.photos[0].dtype == np.uint8
    assert pool.photos[1].shape == (40, 20, 3)


def test_pool_reports_unreadable_files(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageError, match="broken.jpg"):
        PhotoPool([bad])
    with pytest.raises(ValueError, match="empty"):
        PhotoPool([])


def test_random_crop_shape_range_reproducibility_and_upscaling(tmp_path):
    pool = PhotoPool([save_photo(tmp_path / "a.png", 120, 160, 0), save_photo(tmp_path / "small.png", 20, 30, 1)])
    for s in range(10):
        c = pool.random_crop(np.random.default_rng(s), 48)
        assert c.shape == (48, 48, 3) and c.dtype == np.float32
        assert 0 <= c.min() and c.max() <= 1
        assert np.array_equal(c, pool.random_crop(np.random.default_rng(s), 48))
    small = pool.random_crop(np.random.default_rng(0), 64, index=1)  # photo smaller than the crop: upscaled
    assert small.shape == (64, 64, 3)
    a, b = (pool.random_crop(np.random.default_rng(s), 48) for s in (1, 2))
    assert not np.array_equal(a, b)


def test_random_crop_flips_left_right_only(tmp_path):
    # red grows to the right, green grows downward in the test photo
    pool = PhotoPool([save_photo(tmp_path / "g.png", 100, 100, 0)])
    lr = set()
    for s in range(20):
        c = pool.random_crop(np.random.default_rng(s), 32, scale_range=(0.5, 1.0))
        lr.add(bool(c[:, -1, 0].mean() > c[:, 0, 0].mean()))
        assert c[-1, :, 1].mean() > c[0, :, 1].mean()
    assert lr == {True, False}


def test_random_crop_scale_range(tmp_path):
    pool = PhotoPool([save_photo(tmp_path / "g.png", 200, 200, 0)])
    # the red ramp spans 255 over 200 px: a crop of 40 px at scale 1 spans ~51 levels, at 0.25 ~204
    c1 = pool.random_crop(np.random.default_rng(0), 40, scale_range=(1.0, 1.0))
    c4 = pool.random_crop(np.random.default_rng(0), 40, scale_range=(0.25, 0.25))
    span = lambda c: abs(float(c[20, -1, 0] - c[20, 0, 0]))  # noqa: E731
    assert span(c1) == pytest.approx(51 / 255, abs=0.03)
    assert span(c4) == pytest.approx(204 / 255, abs=0.05)


def test_make_pair_identity_and_gray_target(tmp_path):
    pool = PhotoPool([save_photo(tmp_path / "a.png", 80, 90, 3)])
    x, y, m = make_pair(pool, np.random.default_rng(0), 32, NOTHING)
    assert x.shape == y.shape == (32, 32, 3) and m.shape == (32, 32)
    assert np.array_equal(x, y) and not m.any()
    x, y, m = make_pair(pool, np.random.default_rng(0), 32, replace(NOTHING, p_bw=1.0))
    assert np.allclose(y[..., 0], y[..., 1]) and np.allclose(y[..., 1], y[..., 2])
    assert np.allclose(x, y, atol=1e-5)  # only the B&W conversion happened: target and input agree
    x, y, m = make_pair(pool, np.random.default_rng(0), 32, replace(NOTHING, p_structured=1.0, p_tear=1.0))
    assert m.any() and np.abs(y[..., 0] - y[..., 2]).max() > 0.1  # colour target kept


def test_to_gray_uses_luma():
    x = np.zeros((2, 2, 3), np.float32)
    x[..., 1] = 1.0
    assert np.allclose(to_gray(x), 0.587)


def test_validation_set_is_fixed_and_uses_every_photo(tmp_path):
    paths = fake_corpus(tmp_path, 3)
    a = validation_set(paths, 6, 32, seed=5, max_side=64)
    b = validation_set(list(reversed(paths)), 6, 32, seed=5, max_side=64)
    assert len(a) == 6
    for (x1, y1, m1), (x2, y2, m2) in zip(a, b):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and np.array_equal(m1, m2)
        assert x1.shape == (32, 32, 3) and m1.shape == (32, 32)
    c = validation_set(paths, 6, 32, seed=6, max_side=64)
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    # the blue level identifies the photo (constant per test photo): three different photos appear
    blues = {round(float(y[..., 2].mean()), 2) for _, y, _ in validation_set(paths, 3, 16, 0, NOTHING, 64)}
    assert len(blues) == 3


def test_write_examples_writes_images_masks_and_targets(tmp_path):
    fake_corpus(tmp_path / "corpus", 8)
    out = write_examples(tmp_path / "out", 3, seed=1, size=32, corpus=tmp_path / "corpus")
    assert len(out) == 9 and all(p.is_file() for p in out)
    names = sorted(p.name for p in out)
    assert "synth_1_0000.png" in names and "synth_1_0000.mask.png" in names and "synth_1_0000.clean.png" in names
    for p in out:
        with Image.open(p) as im:
            assert im.size == (32, 32)
            if p.name.endswith(".mask.png"):
                assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}
            else:
                assert im.mode == "RGB"
    again = write_examples(tmp_path / "out2", 3, seed=1, size=32, corpus=tmp_path / "corpus")
    for p, q in zip(out, again):
        assert p.read_bytes() == q.read_bytes()
