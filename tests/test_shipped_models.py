"""The models the pipeline ships with: every WEIGHT_NAMES entry is in weights/, passes its sha256 check, and the
default restore runs end to end on them (the scan blend included), so a stage added to the pipeline without its
published weights fails here, not on a user's machine."""

from __future__ import annotations

import numpy as np
from PIL import Image

from oldphoto import pipeline, registry
from oldphoto.config import RestoreConfig


def test_every_pipeline_weight_is_published_and_loads():
    for key, name in pipeline.WEIGHT_NAMES.items():
        entry = registry.get(name)
        assert registry.sha256_file(entry.path) == entry.sha256, f"{key}: {name}"
    models = pipeline.load_models(RestoreConfig(device="cpu"), "cpu")
    described = models.describe()
    assert {"detector", "restorer", "blend"} <= set(described)
    assert described["blend"]["name"] == pipeline.WEIGHT_NAMES["blend"]


def test_default_restore_runs_on_the_shipped_models(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80]
    scan = 0.4 + 0.3 * (np.sin(xx / 9.0) * np.cos(yy / 13.0))[..., None] + 0.03 * rng.standard_normal((96, 80, 3))
    scan[40:42, 5:75] = 0.95  # a bright scratch
    src = tmp_path / "scan.png"
    Image.fromarray(np.rint(np.clip(scan, 0, 1) * 255).astype(np.uint8)).save(src)
    cfg = RestoreConfig(device="cpu")
    models = pipeline.load_models(cfg, "cpu")
    outcome = pipeline.process_file(src, tmp_path / "out" / "scan", cfg, models)
    restored = np.asarray(Image.open(outcome.outputs[0]))
    assert restored.shape == (96, 80, 3)
    assert outcome.scan_blend is not None and all(0 <= s <= 1 for s in outcome.scan_blend)
