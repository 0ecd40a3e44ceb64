import pytest

from oldphoto.config import TONE_STRENGTH, RestoreConfig, TileConfig


@pytest.mark.parametrize("kw, message", [
    ({"upscale": 3}, "upscale must be one of"),
    ({"format": "bmp"}, "format must be one of"),
    ({"max_pixels": 0}, "max_pixels must be positive"),
    ({"mask_threshold": 1.0}, "mask threshold must be in"),
    ({"mask_dilate": -1}, "mask dilation must be >= 0"),
    ({"tone": "flat"}, "tone must be one of"),
    ({"jpeg_quality": 0}, "jpeg quality must be in"),
    ({"scope": "some"}, "scope must be one of"),
    ({"scan_blend": "on"}, "scan blend must be one of .*got 'on'"),
    ({"save_mask": True, "only_mask": True}, "only_mask writes it already"),
    ({"scope": "defects", "only_mask": True}, "only_mask changes none"),
    ({"only_mask": True, "colorize": True}, "only_mask changes no pixels; colorize adds colour"),
    ({"only_mask": True, "upscale": 2}, "only_mask writes masks at the scan's size; upscale x2"),
    ({"scope": "defects", "upscale": 2}, "cannot be enlarged by upscale x2: use upscale 1"),
    ({"scope": "defects", "tone": "photo"}, "tone 'photo' would not match"),
])
def test_bad_restore_settings_are_refused_with_the_value(kw, message):
    with pytest.raises(ValueError, match=message):
        RestoreConfig(**kw)


@pytest.mark.parametrize("kw, message", [
    ({"size": 192}, "tile size must be one of"),
    ({"overlap": 129}, "overlap must be in"),
    ({"batch_size": 0}, "batch size must be >= 1"),
    ({"size": 128, "edge_margin": 33}, r"edge margin must be in \[0, 32\], got 33"),
])
def test_bad_tile_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        TileConfig(**kw)


def test_mask_dilation_defaults_to_the_mode():
    assert RestoreConfig().dilate_px == 1  # restoring: cover the soft edges of scratches
    assert RestoreConfig(only_mask=True).dilate_px == 0  # reviewing: the detector's own mask
    assert RestoreConfig(only_mask=True, mask_dilate=2).dilate_px == 2
    assert RestoreConfig(mask_dilate=0).dilate_px == 0


def test_tone_defaults_to_the_scope_and_is_resolved_in_the_output_settings():
    assert RestoreConfig().tone_mode == "photo"
    assert RestoreConfig(scope="defects").tone_mode == "scan"
    assert RestoreConfig(scope="defects", tone="scan").tone_mode == "scan"
    assert RestoreConfig(tone="tile").tone_mode == "tile"
    # the default and the same value given explicitly make the same output, so the same fingerprint
    assert RestoreConfig().output_settings() == RestoreConfig(tone="photo").output_settings()
    assert RestoreConfig().output_settings()["tone"] == "photo"
    assert RestoreConfig(scope="defects").output_settings() != RestoreConfig().output_settings()


def test_tone_strength_applies_to_the_photo_tone_only():
    assert RestoreConfig().tone_share == TONE_STRENGTH
    assert RestoreConfig(tone_strength=0.25).tone_share == 0.25
    assert RestoreConfig(tone="scan").tone_share == 0.0  # the identity curve
    assert RestoreConfig().output_settings() == RestoreConfig(tone_strength=TONE_STRENGTH).output_settings()
    assert RestoreConfig().output_settings() != RestoreConfig(tone_strength=0.9).output_settings()
    assert RestoreConfig(tone="tile").settings()["tone_strength"] is None
    # all of the curve (or none fitted) is what earlier versions did: their outputs keep their fingerprint
    assert "tone_strength" not in RestoreConfig(tone_strength=1.0).output_settings()
    assert "tone_strength" not in RestoreConfig(tone="scan").output_settings()
    assert RestoreConfig(tone_strength=0.5).output_settings()["tone_strength"] == 0.5
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"tone strength must be in \\[0, 1\\], got {bad}"):
            RestoreConfig(tone_strength=bad)
    with pytest.raises(ValueError, match="tone 'scan' has none"):
        RestoreConfig(scope="defects", tone_strength=0.5)  # defects default to the scan's tone
    # ... and refuse tone 'photo': the message must not send the user there
    with pytest.raises(ValueError, match="scope 'defects' keeps the scan's tone.*use it with scope 'all'$"):
        RestoreConfig(scope="defects", tone_strength=0.5)


def test_scan_blend_applies_only_where_it_can_and_off_keeps_earlier_outputs_current():
    assert RestoreConfig().scan_blend_mode == "auto"
    assert RestoreConfig(tone="scan").scan_blend_mode == "auto"
    for kw in ({"tone": "tile"}, {"scope": "defects"}, {"upscale": 2}, {"only_mask": True}, {"scan_blend": "off"}):
        cfg = RestoreConfig(**kw)
        assert cfg.scan_blend_mode == "off" and "scan_blend" not in cfg.output_settings(), kw
    assert RestoreConfig().output_settings()["scan_blend"] == "auto"


def test_settings_that_cannot_change_the_outputs_keep_their_fingerprint():
    same = RestoreConfig().output_settings
    only_default = RestoreConfig(only_mask=True).output_settings(None, "PNG")
    # jpeg quality shapes JPEG (and WebP) outputs and the --only-mask overlay, not a PNG or TIFF restoration
    for fmt in ("png", "tiff"):
        png_or_tiff = RestoreConfig(format=fmt).output_settings()
        assert RestoreConfig(format=fmt, jpeg_quality=80).output_settings() == png_or_tiff, fmt
    for kw in ({"format": "jpeg"}, {"format": "keep"}, {"only_mask": True}):
        assert RestoreConfig(**kw, jpeg_quality=80).output_settings() != RestoreConfig(**kw).output_settings(), kw
    # --format keep: one photo's output format decides
    for written, differ in (("PNG", False), ("TIFF", False), ("JPEG", True), ("WEBP", True), (None, True)):
        q80 = RestoreConfig(jpeg_quality=80).output_settings(None, written)
        assert (q80 != RestoreConfig().output_settings(None, written)) is differ, written
    assert RestoreConfig(only_mask=True, jpeg_quality=80).output_settings(None, "PNG") != only_default  # overlay
    # the WebP output of a lossless WebP master is lossless whatever the quality; a lossy master's is not
    assert RestoreConfig(jpeg_quality=80).output_settings(None, "WEBP", True) == same(None, "WEBP", True)
    assert RestoreConfig(jpeg_quality=80).output_settings(None, "JPEG", True) != same(None, "JPEG", True)
    assert RestoreConfig(only_mask=True, jpeg_quality=80).output_settings(None, "PNG", True) != only_default
    # --only-mask always writes NAME.mask.png + NAME.overlay.jpg
    only = RestoreConfig(only_mask=True).output_settings()
    assert RestoreConfig(only_mask=True, format="png").output_settings() == only
    # a threshold equal to the one the models would use anyway
    assert RestoreConfig(mask_threshold=0.9).output_settings(0.9) == same(0.9) == same()
    assert RestoreConfig(mask_threshold=0.8).output_settings(0.9) != same(0.9)
    assert RestoreConfig(mask_threshold=0.9).output_settings() != same()  # the default unknown: it counts


def test_only_mask_outputs_do_not_depend_on_the_tone():
    """--only-mask restores nothing, so --tone and --tone-strength (accepted with it) change no mask or overlay:
    a rerun with one of them given must redo nothing (it redid every mask and overlay)."""
    only = RestoreConfig(only_mask=True).output_settings()
    for kw in ({"tone": "scan"}, {"tone": "tile"}, {"tone": "photo"}, {"tone_strength": 0.5}):
        assert RestoreConfig(only_mask=True, **kw).output_settings() == only, kw
    assert RestoreConfig(tone="scan").output_settings() != RestoreConfig().output_settings()  # restoring: it counts



def test_edge_margin_counts_in_the_fingerprint_only_when_used():
    plain = RestoreConfig().output_settings()
    assert "edge_margin" not in plain["tile"]  # outputs made before the option existed stay current
    grown = RestoreConfig(tile=TileConfig(edge_margin=16)).output_settings()
    assert grown["tile"]["edge_margin"] == 16 and grown != plain
