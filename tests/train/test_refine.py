"""Refiner trainer: it learns on top of frozen (here random, tiny) restoration networks, resumes, exports with the
sha256 of those networks, and the Restorer runs it and refuses it beside other networks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.stages.restore import Restorer
from oldphoto.train import degrade, refine
from oldphoto.train.evaluate_restore import EvalConfig, evaluate
from oldphoto.train.run_files import export_weights

from latent_corpus import write_gradient_corpus  # tests/train is on sys.path (pytest rootdir import mode)
from tiny_chain import SMALL_MAP, write_tiny_chain

TINY = dict(width=4, crop=32, batch=2, buffer=4, fresh=1, val_n=2, val_size=32, val_every=2, threads=1,
            val_fraction=0.3, warmup=1, decay_steps=1, vae1="v1-t", mapping="map-t", vae2="v2-t", detector="det-t")


@pytest.fixture()
def weights(tmp_path, registry_at):
    return registry_at(write_tiny_chain(tmp_path / "weights", refiner=False))


@pytest.fixture()
def corpus(tmp_path):
    return write_gradient_corpus(tmp_path / "corpus")


def test_restorer_masks_mix_detector_and_ground_truth(weights):
    restorer = Restorer.from_registry("v1-t", "map-t", "v2-t")
    detector = refine.Detector.from_registry("det-t")
    x = torch.rand(2, 3, 32, 32)
    m_gt = torch.zeros(2, 1, 32, 32)
    m_gt[:, :, 4:6] = 1
    m = refine.restorer_masks(restorer, detector, x, m_gt, torch.tensor([True, False]), 1)
    assert torch.equal(m[1], m_gt[1])
    prob = detector(x[:1])
    want = refine.dilate(detector.binarize(prob, 0.6), 1)  # the mapping's restore threshold, not the detector's
    assert torch.equal(m[:1], want)


def test_run_resume_export_and_restorer(weights, corpus, tmp_path, monkeypatch):
    cfg = refine.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "run"), steps=2)
    msgs = []
    assert refine.run(cfg, msgs.append)["step"] == 2
    assert refine.run(dataclasses.replace(cfg, steps=3), msgs.append)["step"] == 3
    assert any("resumed" in m for m in msgs)
    with pytest.raises(ValueError, match="started on mapping map-t"):
        refine.run(dataclasses.replace(cfg, mapping="v1-t", steps=4), msgs.append)
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["networks"]["mapping"]["sha256"] == registry.get("map-t").sha256

    refine.export(tmp_path / "run", "ref-t", weights, checkpoint="last")
    registry.entries.cache_clear()
    meta = registry.get("ref-t").meta
    assert meta["step"] == 3 and meta["checkpoint"] == "last" and "psnr_y" in meta["validation"]
    last = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(v, registry.load("ref-t").state_dict()[k]) for k, v in last.items())
    refine.export(tmp_path / "run", "ref-t", weights)
    registry.entries.cache_clear()
    meta = registry.get("ref-t").meta
    assert meta["mapping"]["sha256"] == registry.get("map-t").sha256 and meta["steps_trained"] == 3
    plain = Restorer.from_registry("v1-t", "map-t", "v2-t")
    refined = Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-t")
    assert [e.name for e in refined.entries] == ["v1-t", "map-t", "v2-t", "ref-t"]
    x, m = torch.rand(2, 3, 30, 34), torch.zeros(2, 1, 30, 34)  # not multiples of 4: padded and cropped back
    r, out = plain(x, m), refined(x, m)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    ref = refined.refiner
    assert not torch.equal(out, r)
    gray = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    g = refined(gray, m)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])

    monkeypatch.setattr(EvalConfig, "_check_standard_set", lambda self: None)  # record this tiny set anyway
    summary = evaluate(EvalConfig(n=2, size=32, corpus=str(corpus), val_fraction=0.3, vae1="v1-t", mapping="map-t",
                                  vae2="v2-t", refiner="ref-t", detector="det-t", threads=1, cost_tile=32,
                                  cost_batch=2, out=str(tmp_path / "eval"), record=True), lambda s: None)
    assert {"full", "no_refiner"} <= set(summary["variants"]) and "refiner" in summary["cost"]["params"]
    assert registry.get("ref-t").meta["evaluation"]["gains"] == summary["gains"]
    assert refined.refiner is ref  # the ablation put it back

    # the mapping re-published: the refiner was trained on another one's outputs and is refused
    export_weights(build("mapping", **SMALL_MAP).state_dict(), "map-t", "mapping", SMALL_MAP, {}, weights, replace=True)
    registry.entries.cache_clear()
    with pytest.raises(WeightsError, match="trained with mapping"):
        Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-t")


def test_mild_pairs_and_warm_start(weights, corpus, tmp_path):
    first = refine.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "a"), steps=2)
    refine.run(first, lambda s: None)
    msgs = []
    second = dataclasses.replace(first, out=str(tmp_path / "b"), init_from=str(tmp_path / "a"), p_mild=1.0)
    refine.run(second, msgs.append)
    assert any("started from" in m for m in msgs)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["p_mild"] == 1.0


def test_banded_refiner_on_family_pairs_exports_and_runs(weights, corpus, tmp_path):
    cfg = refine.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "bands"), steps=2, bands=True, p_family=1.0,
                        ssim_weight=0.5)
    refine.run(cfg, lambda s: None)
    info = json.loads((tmp_path / "bands" / "config.json").read_text())
    assert info["data"]["p_family"] == 1.0 and set(info["data"]["families"]) == {"", *degrade.FAMILIES}
    assert "0.5 (1 - SSIM on luma)" in info["loss"]
    steps = [json.loads(line) for line in (tmp_path / "bands" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "total" in r]
    assert all(abs(r["total"] - r["l1"] - 0.5 * (1 - r["ssim"])) < 1e-4 for r in steps)
    for checkpoint in ("last", "best"):
        refine.export(tmp_path / "bands", "ref-b", weights, checkpoint=checkpoint)
        registry.entries.cache_clear()
        assert registry.get("ref-b").arch_kwargs == {"width": 4, "bands": True}
        assert "a_lo low(x - r)" in registry.get("ref-b").meta["role"]
        refined = Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-b")
        assert refined.refiner.bands
        x, m = torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
        assert refined(x, m).shape == x.shape


@pytest.mark.parametrize("bad, says", [(dict(p_family=1.5), "p_mild \\+ p_family"),
                                       (dict(p_family=0.6, p_mild=0.6), "p_mild \\+ p_family"),
                                       (dict(p_family=-0.1), "p_mild \\+ p_family"),
                                       (dict(ssim_weight=-1.0), "ssim_weight >= 0")])
def test_recipe_shares_and_loss_weights_are_validated(bad, says):
    with pytest.raises(ValueError, match=says):
        refine.Config(**bad)
