"""The models the pipeline ships with: every WEIGHT_NAMES entry is in weights/, passes its sha256 check, and the
default restore runs end to end on them (the scan blend included), so a stage added to the pipeline without its
published weights fails here, not on a user's machine."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from oldphoto import pipeline, registry
from oldphoto.config import RestoreConfig
from oldphoto.stages.detect import HALF_WEIGHT, TWO_SCALE_RESTORE_THRESHOLD, TWO_SCALE_THRESHOLD


def test_every_pipeline_weight_is_published_and_loads():
    for key, name in pipeline.WEIGHT_NAMES.items():
        entry = registry.get(name)
        assert registry.sha256_file(entry.path) == entry.sha256, f"{key}: {name}"
    models = pipeline.load_models(RestoreConfig(device="cpu"), "cpu")
    described = models.describe()
    assert {"detector", "restorer", "blend"} <= set(described)
    assert described["blend"]["name"] == pipeline.WEIGHT_NAMES["blend"]


@pytest.mark.parametrize("layout, size", [("RGB", (96, 80)), ("L;16", (70, 90)), ("RGBA", (64, 64)), ("RGB", (6, 40))])
def test_default_restore_runs_on_the_shipped_models(tmp_path, layout, size):
    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    scan = 0.4 + 0.3 * (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] + 0.03 * rng.standard_normal((h, w, 3))
    scan[h // 2:h // 2 + 2, 2:w - 2] = 0.95  # a bright scratch
    src = tmp_path / ("scan.tif" if layout == "L;16" else "scan.png")
    if layout == "L;16":  # a 16-bit gray scan stays 16-bit gray
        tifffile.imwrite(src, np.rint(np.clip(scan[..., 0], 0, 1) * 65535).astype(np.uint16))
    else:
        pixels = np.rint(np.clip(scan, 0, 1) * 255).astype(np.uint8)
        if layout == "RGBA":
            pixels = np.concatenate([pixels, np.full((h, w, 1), 200, np.uint8)], axis=2)
        Image.fromarray(pixels).save(src)
    cfg = RestoreConfig(device="cpu")
    outcome = pipeline.process_file(src, tmp_path / "out" / "scan", cfg, pipeline.load_models(cfg, "cpu"))
    restored = tifffile.imread(outcome.outputs[0]) if layout == "L;16" else np.asarray(Image.open(outcome.outputs[0]))
    want = {"RGB": (h, w, 3), "L;16": (h, w), "RGBA": (h, w, 4)}[layout]
    assert restored.shape == want and restored.dtype == (np.uint16 if layout == "L;16" else np.uint8)
    if min(h, w) < 8:
        assert outcome.scan_blend is None  # too small to judge: left as restored
    else:
        assert outcome.scan_blend is not None and all(0 <= s <= 1 for s in outcome.scan_blend)


def test_colorize_gets_the_blended_gray_restoration(tmp_path):
    yy, xx = np.mgrid[0:64, 0:72]
    gray = np.rint(np.clip(0.5 + 0.3 * np.sin(xx / 7.0) * np.cos(yy / 11.0), 0, 1) * 255).astype(np.uint8)
    src = tmp_path / "gray.png"
    Image.fromarray(gray).save(src)
    cfg = RestoreConfig(device="cpu", colorize=True)
    outcome = pipeline.process_file(src, tmp_path / "out" / "gray", cfg, pipeline.load_models(cfg, "cpu"))
    assert np.asarray(Image.open(outcome.outputs[0])).shape == (64, 72, 3)
    assert outcome.scan_blend is not None


def test_two_scale_detection_runs_on_the_shipped_models_and_is_recorded(tmp_path):
    rng = np.random.default_rng(1)
    scan = np.clip(0.5 + 0.05 * rng.standard_normal((80, 96, 3)), 0, 1)
    scan[30:36, 4:90] = 0.95  # a wide bright scratch
    src = tmp_path / "scan.png"
    Image.fromarray(np.rint(scan * 255).astype(np.uint8)).save(src)
    for only_mask in (False, True):
        cfg = RestoreConfig(device="cpu", detect_scales=2, only_mask=only_mask)
        models = pipeline.load_models(cfg, "cpu")
        described = models.describe()["detector"]
        assert (described["scales"], described["half_weight"]) == (2, HALF_WEIGHT)
        thresholds = (described["threshold"], described["restore_threshold"])
        assert thresholds == (TWO_SCALE_THRESHOLD, TWO_SCALE_RESTORE_THRESHOLD)
        outcome = pipeline.process_file(src, tmp_path / str(only_mask) / "scan", cfg, models)
        assert outcome.mask_coverage is not None and outcome.mask_coverage > 0
    assert RestoreConfig(detect_scales=2).settings()["detect_scales"] == 2 == RestoreConfig().scales
    assert "detect_scales" not in RestoreConfig(only_mask=True).settings()  # absent at 1: older outputs current
    with pytest.raises(ValueError, match="detect scales must be one of"):
        RestoreConfig(detect_scales=3)
