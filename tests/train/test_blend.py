"""Scan-blend gate trainer on a tiny random chain: the error terms match the blend, the restored crops are cached,
the export records the chain, and the stage refuses the gate beside other networks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from oldphoto import registry
from oldphoto.errors import WeightsError
from oldphoto.ops.blend import blend
from oldphoto.ops.color import luma
from oldphoto.stages.blend import ScanBlend
from oldphoto.train import blend as blend_train

from latent_corpus import write_gradient_corpus  # tests/train is on sys.path (pytest rootdir import mode)
from tiny_chain import write_tiny_chain

TINY = dict(crops=16, crop=32, val_heavy=2, val_family=1, val_second=2, iters=30, threads=1, val_fraction=0.3,
            vae1="v1-t", mapping="map-t", vae2="v2-t", refiner="", detector="det-t")


@pytest.fixture()
def weights(tmp_path, registry_at):
    return registry_at(write_tiny_chain(tmp_path / "weights"))


def test_error_terms_give_the_blends_luma_error():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, 32, 32, generator=g) * 0.5 + 0.25, torch.rand(3, 3, 32, 32, generator=g) * 0.5 + 0.25
    o = x + 0.1 * torch.randn(3, 3, 32, 32, generator=g)
    m = (torch.rand(3, 1, 32, 32, generator=g) > 0.9).float()
    a, b, c = blend_train.error_terms(x, o.clamp(0, 1), m, y)
    for s in ([1.0, 1.0], [0.0, 0.0], [0.3, 0.8]):
        strengths = torch.tensor([s] * 3)
        want = (luma(blend(x, o.clamp(0, 1), m, strengths)) - luma(y)).pow(2).flatten(1).mean(1)
        assert torch.allclose(blend_train.blend_mse(a, b, c, strengths), want, rtol=1e-4, atol=1e-7)


def test_run_caches_restorations_exports_and_the_stage_checks_the_chain(weights, tmp_path):
    corpus = write_gradient_corpus(tmp_path / "corpus")
    cfg = blend_train.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "run"))
    msgs = []
    first = blend_train.run(cfg, msgs.append)
    assert {"heavy", "second", "single_families_mean"} <= set(first["gain_db"])
    assert (tmp_path / "run" / "data.pt").is_file()
    second = blend_train.run(dataclasses.replace(cfg, iters=10), msgs.append)
    assert any("restored crops from" in m for m in msgs) and second["best_iteration"] <= 10
    blend_train.run(dataclasses.replace(cfg, seed=12), msgs.append)  # other crops: restored anew
    assert any("restoring anew" in m for m in msgs)

    blend_train.export(tmp_path / "run", "blend-t", weights)
    registry.entries.cache_clear()
    meta = registry.get("blend-t").meta
    chain = {name: registry.get(name).sha256 for name in ("v1-t", "map-t", "v2-t", "det-t")}
    assert meta["networks"] == {**chain, "restore_threshold": 0.6} and meta["seed"] == 12
    stage = ScanBlend.from_registry("blend-t", {**chain, "restore_threshold": 0.6})
    x = torch.rand(2, 3, 32, 32)
    s = stage.strengths(x, x, torch.zeros(2, 1, 32, 32))
    assert s.shape == (2, 2) and bool(((s >= 0) & (s <= 1)).all())
    with pytest.raises(WeightsError, match="refit it"):
        ScanBlend.from_registry("blend-t", {**chain, "restore_threshold": 0.7})
    with pytest.raises(WeightsError, match="refit it"):
        ScanBlend.from_registry("blend-t", {**chain, "v1-t": "0" * 64, "restore_threshold": 0.6})


@pytest.mark.parametrize("kw, says", [({"crops": 12}, "multiple of 8"), ({"holdout": 1.0}, "0 < holdout < 1"),
                                      ({"penalty": -1.0}, "penalty >= 0")])
def test_bad_settings_are_refused(kw, says):
    with pytest.raises(ValueError, match=says):
        blend_train.Config(**kw)
