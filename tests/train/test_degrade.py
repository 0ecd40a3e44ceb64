import math
from dataclasses import replace

import numpy as np
import pytest

from oldphoto.train import degrade_structured as ds
from oldphoto.train import degrade_unstructured as du
from oldphoto.train.degrade import (FAMILIES, WITHIN_STEP, DegradeConfig, Degraded, degrade, family_recipe,
                                    scaled_recipe, sharp_recipe, structured_defects)

# every random op off: a baseline to switch single ops on
NOTHING = DegradeConfig(
    p_fade=0, p_color_cast=0, p_desaturate=0, p_bw=0, p_toned=0, p_stain=0, p_exposure=0, p_grain=0,
    p_halftone=0, p_structured=0, p_damage_after_scan=0, p_scratch=0, p_dust=0, p_hair=0, p_crease=0, p_tear=0,
    p_blotch=0, p_texture=0, p_blur=0, p_noise=0, p_resample=0, p_jpeg=0,
)
PAINTER_FLAGS = [name for name, _ in ds.PAINTERS + ds.AGEING_PAINTERS]


def photo(h=96, w=128, seed=0):
    """A photo-like test image: smooth colour gradients, a few edges and some texture, in [0.05, 0.95]."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 9 + yy / 13)], 2)
    edges = ((xx // 24 + yy // 20) % 2)[..., None] * 0.25
    tex = 0.05 * r.standard_normal((h, w, 3)).astype(np.float32)
    return np.clip(0.1 + 0.6 * base + edges + tex, 0.05, 0.95).astype(np.float32)


def hf(x):
    """High-frequency energy: mean squared difference of neighbours."""
    return float(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2))


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- degrade() contract

def test_reproducible_from_seed():
    x = photo()
    for s in range(6):
        a, b = degrade(x, rng(s)), degrade(x, rng(s))
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.gray == b.gray
    assert not np.array_equal(degrade(x, rng(1)).image, degrade(x, rng(2)).image)


def test_output_shapes_types_ranges_and_input_untouched():
    x = photo(48, 80)
    x0 = x.copy()
    grays = set()
    for s in range(25):
        d = degrade(x, rng(s))
        assert isinstance(d, Degraded)
        assert d.image.shape == (48, 80, 3) and d.image.dtype == np.float32
        assert d.mask.shape == (48, 80) and d.mask.dtype == np.float32
        assert 0.0 <= d.image.min() and d.image.max() <= 1.0
        assert set(np.unique(d.mask)) <= {0.0, 1.0}
        assert isinstance(d.gray, bool)
        grays.add(d.gray)
    assert grays == {True, False}  # the default recipe makes both colour and mono prints
    assert np.array_equal(x, x0)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((32, 32), np.float32), "(32, 32)"),
    (np.zeros((32, 32, 4), np.float32), "(32, 32, 4)"),
    (np.zeros((32, 32, 3), np.uint8), "uint8"),
    (np.full((32, 32, 3), 1.5, np.float32), "[0, 1]"),
    (np.zeros((8, 32, 3), np.float32), "(8, 32, 3)"),
])
def test_rejects_bad_input_with_its_shape(bad, words):
    with pytest.raises(ValueError, match=r".*" + words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        degrade(bad, rng())
    with pytest.raises(ValueError):
        structured_defects(bad, rng(), DegradeConfig())


def test_config_validation():
    with pytest.raises(ValueError, match="p_blur"):
        DegradeConfig(p_blur=1.5)
    with pytest.raises(ValueError, match="scratch_width"):
        DegradeConfig(scratch_width=(5.0, 2.0))
    with pytest.raises(ValueError, match="p_bw"):
        DegradeConfig(p_bw=0.7, p_toned=0.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradeConfig(jpeg_quality=(0, 90))


def test_all_ops_off_is_identity():
    x = photo()
    d = degrade(x, rng(3), NOTHING)
    assert np.array_equal(d.image, x) and not d.mask.any() and d.gray is False


def test_no_family_is_the_identity_and_keeps_the_within_step_choices():
    clean = family_recipe()
    assert clean == replace(NOTHING, **{f: getattr(DegradeConfig(), f) for f in WITHIN_STEP})
    x = photo()
    assert np.array_equal(degrade(x, rng(5), clean).image, x)


def test_scaled_recipe_scales_only_the_step_probabilities():
    base, half = DegradeConfig(), scaled_recipe(0.5)
    assert half.p_fade == base.p_fade * 0.5 and half.p_structured == base.p_structured * 0.5
    assert half.p_scratch_bright == base.p_scratch_bright and half.scratch_width == base.scratch_width
    assert scaled_recipe(2.0, half) == base


def test_sharp_recipe_keeps_the_damage_and_thins_out_the_rest():
    base, sharp = DegradeConfig(), sharp_recipe(0.0)
    assert sharp.p_structured == base.p_structured and sharp.p_scratch == base.p_scratch
    assert sharp.p_hair == base.p_hair and sharp.p_texture == base.p_texture
    assert sharp.p_blur == sharp.p_noise == sharp.p_fade == sharp.p_jpeg == 0
    assert sharp_recipe(0.5).p_blur == base.p_blur * 0.5
    x = photo()
    assert np.array_equal(degrade(x, rng(1), replace(sharp, p_structured=0.0)).image, x)  # nothing else is left
    assert any(degrade(x, rng(s), sharp).mask.any() for s in range(4))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_alone_switches_on_exactly_its_steps(name):
    cfg = family_recipe(name)
    on = {f for f in vars(cfg) if f.startswith("p_") and f not in WITHIN_STEP and getattr(cfg, f) > 0}
    assert on == set(FAMILIES[name])
    x = photo()
    changed = [not np.array_equal(degrade(x, rng(s), cfg).image, x) for s in range(3)]
    assert any(changed)


def test_unknown_family_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown degradation families.*'jpeg'"):
        family_recipe("jpeg", "sepia")


# ---------------------------------------------------------------- mask

def test_mask_nonempty_when_defects_forced():
    cfg = replace(DegradeConfig(), p_structured=1.0, p_scratch=1.0, p_blotch=1.0)
    for s in range(8):
        assert degrade(photo(), rng(s), cfg).mask.sum() > 0


def test_mask_empty_when_structured_disabled():
    cfg = replace(DegradeConfig(), p_structured=0.0)
    for s in range(15):
        assert not degrade(photo(), rng(s), cfg).mask.any()


@pytest.mark.parametrize("flag", [f for f in PAINTER_FLAGS if f != "p_texture"])
def test_each_defect_kind_alone_marks_changed_pixels(flag):
    cfg = replace(NOTHING, **{flag: 1.0})
    x = photo()
    for s in range(3):
        out, m = structured_defects(x, rng(s), cfg)
        assert m.sum() > 0, flag
        if flag == "p_crease":  # its core's change counts over the shaded fold (test_degrade_mask_rule.py)
            continue
        changed = np.abs(out - x).max(axis=2)
        # the documented rule: every mask pixel changed by more than visible_delta
        assert (changed[m > 0] > cfg.visible_delta).all()


def test_textures_change_the_image_and_paper_texture_stays_out_of_the_mask():
    cfg = replace(NOTHING, p_texture=1.0)
    x = photo()
    n_masked = 0
    for s in range(10):
        out, m = structured_defects(x, rng(s), cfg)
        assert np.abs(out - x).max() > 0.02
        n_masked += m.sum() > 0
    assert 0 < n_masked < 10  # scratch textures (sometimes) in the mask, paper textures never


def test_mask_is_carried_through_a_later_blur():
    a = np.zeros((64, 64), np.float32)
    a[:, 30:32] = 1.0
    cfg = replace(NOTHING, p_blur=1.0, blur_kind_weights=(1.0, 0.0, 0.0), blur_sigma=(2.0, 2.0))
    img, a2 = du.scan(photo(64, 64), a.copy(), rng(), cfg)
    assert a2.shape == a.shape
    assert a2.max() < 0.5  # a 2 px line blurred by sigma 2 fades ...
    assert a2[:, 28].mean() > 0.1  # ... and spreads
    assert a2.sum() == pytest.approx(a.sum(), rel=1e-3)


def test_scratch_widths_span_the_configured_range():
    def widths(lo, hi, seeds):
        cfg = replace(NOTHING, p_scratch=1.0, scratch_count=(1, 1), scratch_width=(lo, hi), p_scratch_soft=0.0,
                      p_scratch_straight=1.0, p_scratch_bright=1.0, scratch_opacity=(1.0, 1.0))
        gray = np.full((160, 160, 3), 0.4, np.float32)
        out = []
        for s in seeds:
            _, m = structured_defects(gray, rng(s), cfg)
            yx = np.argwhere(m > 0).astype(np.float64)
            if len(yx) < 20:
                continue
            c = yx - yx.mean(0)
            _, _, vt = np.linalg.svd(c, full_matrices=False)
            along, across = c @ vt[0], c @ vt[1]
            bins = np.round(along).astype(int)
            # cross-section: mask pixels per unit length, median over positions along the scratch
            counts = np.bincount(bins - bins.min())
            spread = np.array([np.ptp(across[bins == b]) + 1 for b in np.unique(bins)])
            out.append(float(np.median(np.minimum(counts[counts > 0], spread))))
        return np.array(out)

    w = widths(1.0, 15.0, range(40))
    assert len(w) >= 30
    assert w.min() <= 2.5 and w.max() >= 11.0
    narrow = widths(3.0, 6.0, range(12))
    assert narrow.min() >= 2.0 and narrow.max() <= 8.0


# ---------------------------------------------------------------- toning / gray flag

def test_bw_print_is_gray_with_equal_channels():
    cfg = replace(NOTHING, p_bw=1.0)
    d = degrade(photo(), rng(), cfg)
    assert d.gray is True
    assert np.allclose(d.image[..., 0], d.image[..., 1]) and np.allclose(d.image[..., 1], d.image[..., 2])


def test_toned_print_is_gray_and_channels_follow_the_luma():
    x = photo()
    for s in range(5):
        d = degrade(x, rng(s), replace(NOTHING, p_toned=1.0))
        assert d.gray is True
        assert np.abs(d.image[..., 0] - d.image[..., 2]).max() > 0.02  # tinted, not plain gray
        order = np.argsort(du.luma(x).ravel(), kind="stable")
        for c in range(3):  # every channel is an increasing function of the luma
            assert (np.diff(d.image[..., c].ravel()[order]) >= -1e-6).all()


def test_colour_recipe_never_sets_gray():
    cfg = replace(DegradeConfig(), p_bw=0.0, p_toned=0.0)
    assert not any(degrade(photo(), rng(s), cfg).gray for s in range(10))


def test_tone_channels_equal_up_to_the_tone():
    x = photo()
    gam = du.TONES["sepia"]
    t = du.tone(x, gam)
    back = np.stack([t[..., c] ** (1 / gam[c]) for c in range(3)], 2)
    assert np.allclose(back[..., 0], back[..., 1], atol=1e-4) and np.allclose(back[..., 1], back[..., 2], atol=1e-4)
    assert np.allclose(back[..., 0], du.luma(x), atol=1e-4)


# ---------------------------------------------------------------- individual ops

@pytest.mark.parametrize("op", [
    lambda x: du.gaussian_blur(x, 1.5),
    lambda x: du.defocus_blur(x, 2.5),
    lambda x: du.motion_blur(x, 7, 0.6),
    lambda x: du.resample(x, 0.4, "area", "bilinear"),
    lambda x: du.resample(x, 0.5, "bicubic", "nearest"),
])
def test_blur_and_resampling_lower_high_frequencies(op):
    x = photo()
    y = op(x)
    assert y.shape == x.shape
    assert hf(y) < 0.7 * hf(x)
    assert abs(float(y.mean() - x.mean())) < 0.01  # energy preserving


def test_blur_kernels_are_normalised_and_keep_flat_images_flat():
    for k in (du.disk_kernel(2.3), du.motion_kernel(8.0, 1.1), du.gaussian_kernel_1d(1.7)):
        assert k.sum() == pytest.approx(1.0, abs=1e-5) and k.min() >= 0
    flat = np.full((20, 24, 3), 0.37, np.float32)
    assert np.allclose(du.defocus_blur(flat, 3.0), 0.37, atol=1e-5)
    assert np.allclose(du.motion_blur(flat, 9.0, 0.3), 0.37, atol=1e-5)


def test_motion_blur_follows_its_direction():
    x = photo()
    h = du.motion_blur(x, 9.0, 0.0)  # horizontal streak
    dx = np.mean(np.diff(h, axis=1) ** 2) / np.mean(np.diff(x, axis=1) ** 2)
    dy = np.mean(np.diff(h, axis=0) ** 2) / np.mean(np.diff(x, axis=0) ** 2)
    assert dx < 0.5 * dy


@pytest.mark.parametrize("op", [
    lambda x, r: du.gaussian_noise(x, r, 0.05, mono=False),
    lambda x, r: du.gaussian_noise(x, r, 0.05, mono=True),
    lambda x, r: du.speckle_noise(x, r, 0.15),
    lambda x, r: du.salt_pepper_noise(x, r, 0.01),
    lambda x, r: du.film_grain(x, r, 0.05, 0.8, mono=True),
])
def test_noise_raises_high_frequencies(op):
    x = du.gaussian_blur(photo(), 1.0)
    y = op(x, rng())
    assert y.shape == x.shape and y.dtype == np.float32
    assert 0 <= y.min() and y.max() <= 1
    assert hf(y) > 1.5 * hf(x)


def test_salt_and_pepper_amount():
    y = du.salt_pepper_noise(np.full((100, 100, 3), 0.5, np.float32), rng(), 0.02)
    hit = (y != 0.5).any(axis=2).mean()
    assert 0.012 < hit < 0.028


def test_grain_is_strongest_in_the_midtones():
    def std_at(v):
        return float(du.film_grain(np.full((64, 64, 3), v, np.float32), rng(), 0.04, 1.0, mono=True).std())
    assert std_at(0.5) > 2 * std_at(0.97)


def test_jpeg_quality_orders_the_error():
    x = photo()
    err = [float(np.mean((du.jpeg(x, q, 2) - x) ** 2)) for q in (30, 60, 95)]
    assert err[0] > err[1] > err[2] > 0
    assert err[0] < 0.01  # still the same picture


def test_fade_lowers_contrast_and_lifts_blacks():
    x = photo()
    y = du.fade(x, contrast=0.6, gamma=1.0, black=0.15, white=0.9)
    assert y.std() < 0.7 * x.std()
    assert y.min() >= 0.15 - 1e-6 and y.max() <= 0.9 + 1e-6


def test_desaturate_and_colour_cast():
    x = photo()
    y = du.desaturate(x, 0.3)
    chroma = lambda im: float((im - du.luma(im)[..., None]).std())  # noqa: E731
    assert chroma(y) < 0.4 * chroma(x)
    assert np.allclose(du.luma(y), du.luma(x), atol=1e-5)
    c = du.color_cast(x, np.array([1.15, 1.0, 0.8]), np.zeros(3))
    assert c[..., 0].mean() > x[..., 0].mean() and c[..., 2].mean() < x[..., 2].mean()
    assert np.allclose(c[..., 1], x[..., 1])


def test_exposure_gain_darkens_corners():
    g = du.exposure_gain(50, 70, vignette=0.4, gradient=0.0, angle=0.0)
    assert g[25, 35] == pytest.approx(1.0, abs=0.01)
    assert g[0, 0] == pytest.approx(0.6, abs=0.01)
    ramp = du.exposure_gain(50, 70, vignette=0.0, gradient=0.2, angle=0.0)
    assert ramp[25, -1] > ramp[25, 0]


def test_stain_only_where_the_field_is():
    x = photo()
    field = np.zeros(x.shape[:2], np.float32)
    field[:, :40] = 1.0
    y = du.stain(x, field, np.array([1.0, 0.8, 0.5]), 0.5)
    assert np.array_equal(y[:, 40:], x[:, 40:])
    assert y[:, :40, 2].mean() < x[:, :40, 2].mean() - 0.05


def test_smooth_field_is_low_frequency_and_normalised():
    f = du.smooth_field(rng(), 80, 120, 5)
    assert f.shape == (80, 120) and f.min() == pytest.approx(0) and f.max() == pytest.approx(1)
    assert hf(f) < 0.01 * hf(rng().random((80, 120)))


def test_halftone_is_nearly_binary_and_keeps_the_tone():
    x = du.gaussian_blur(photo(), 2.0)
    y = du.halftone(x, 5.0, (0.3, 1.3, 0.0), mono=False)
    assert ((y < 0.1) | (y > 0.9)).mean() > 0.6
    assert abs(float(y.mean() - x.mean())) < 0.08
    g = du.halftone(x, 4.0, (0.5, 0.5, 0.5), mono=True)
    assert np.array_equal(g[..., 0], g[..., 2])


@pytest.mark.parametrize("mode, brighter", [("add", True), ("lighten", True), ("screen", True), ("multiply", False)])
def test_blend_modes(mode, brighter):
    x = photo()
    layer = np.zeros(x.shape[:2], np.float32)
    layer[10:20] = 0.8
    y = ds.blend(x, layer, mode, 0.7)
    assert np.allclose(y[30:], x[30:], atol=1e-6)  # untouched where the layer is 0
    d = float((y[10:20] - x[10:20]).mean())
    assert d > 0.05 if brighter else d < -0.05
    with pytest.raises(ValueError, match="blend mode"):
        ds.blend(x, layer, "overlay", 0.5)


def test_at_scale_reads_ranges_logarithmically():
    assert ds.at_scale((1.0, 16.0), 0.0) == pytest.approx(1.0)
    assert ds.at_scale((1.0, 16.0), 0.5) == pytest.approx(4.0)
    assert ds.at_scale((1.0, 16.0), 1.7) == pytest.approx(16.0)
    assert math.isclose(ds.at_scale((2.0, 2.0), 0.3), 2.0)


def test_ageing_kinds_off_draw_no_random_numbers(monkeypatch):
    """The ageing kinds default to 0 and then leave the random stream alone: fixed evaluation sets stay the same."""
    cfg = DegradeConfig()
    assert (cfg.p_crazing, cfg.p_foxing, cfg.p_flaking) == (0.0, 0.0, 0.0)
    before = degrade(photo(), rng(3), cfg)
    monkeypatch.setattr(ds, "AGEING_PAINTERS", ())
    after = degrade(photo(), rng(3), cfg)
    assert np.array_equal(before.image, after.image) and np.array_equal(before.mask, after.mask)


def test_sharp_recipe_keeps_the_ageing_kinds():
    base = replace(DegradeConfig(), p_crazing=0.3, p_foxing=0.2, p_flaking=0.1)
    sharp = sharp_recipe(0.25, base)
    assert (sharp.p_crazing, sharp.p_foxing, sharp.p_flaking) == (0.3, 0.2, 0.1)
    assert sharp.p_blur == pytest.approx(0.25 * base.p_blur)
