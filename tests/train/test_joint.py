"""Joint fine-tuning of the restorer chain: it trains the four (here random, tiny) networks on the final output,
resumes, exports four entries that load together as a Restorer reproducing the trained chain, and refuses bad
names and mixtures."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from oldphoto import registry
from oldphoto.errors import WeightsError
from oldphoto.stages.restore import Restorer
from oldphoto.train import joint
from oldphoto.train.evaluate_restore import EvalConfig, evaluate

from latent_corpus import write_gradient_corpus  # tests/train is on sys.path (pytest rootdir import mode)
from tiny_chain import write_tiny_chain

TINY = dict(crop=32, batch=2, val_n=2, val_size=32, val_every=2, threads=1, val_fraction=0.3, warmup=1,
            vae1="v1-t", mapping="map-t", vae2="v2-t", refiner="ref-t", detector="det-t")
NAMES = "v1-j,map-j,v2-j,ref-j"


@pytest.fixture()
def weights(tmp_path, registry_at):
    return registry_at(write_tiny_chain(tmp_path / "weights", refiner=True))


@pytest.fixture()
def corpus(tmp_path):
    return write_gradient_corpus(tmp_path / "corpus")


def test_chain_matches_the_restorer_it_wraps(weights):
    r = Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-t")
    x, m = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.8).float()
    want = r(x, m)
    chain = joint.Chain(r.encoder, r.mapping, r.decoder, r.refiner).eval()
    with torch.no_grad():
        got = chain(x, m).clamp(0, 1)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(2, 3, 30, 32\)"):
        chain(x[:, :, :30], m[:, :, :30])


def test_frozen_vaes_get_no_gradient(weights):
    r = Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-t")
    chain = joint.Chain(r.encoder, r.mapping, r.decoder, r.refiner, frozen_vaes=True)
    chain(torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)).mean().backward()
    assert all(p.grad is None for p in chain.encoder.parameters())
    assert all(p.grad is None for p in chain.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in chain.mapping.parameters())
    assert {id(p) for p in chain.trainable()} == {id(p) for p in [*chain.mapping.parameters(),
                                                                   *chain.refiner.parameters()]}


def test_run_resume_export_and_load_together(weights, corpus, tmp_path):
    cfg = joint.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "run"), steps=2)
    msgs = []
    assert joint.run(cfg, msgs.append)["step"] == 2
    assert joint.run(dataclasses.replace(cfg, steps=3), msgs.append)["step"] == 3
    assert any("resumed" in m for m in msgs) and any("the chain it started from" in m for m in msgs)
    with pytest.raises(ValueError, match="started from mapping map-t"):
        joint.run(dataclasses.replace(cfg, mapping="v1-t", steps=4), msgs.append)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "total" in r]
    assert len(steps) == 3 and all(abs(r["total"] - r["l1"] - 0.25 * (1 - r["ssim"])) < 1e-4 for r in steps)

    with pytest.raises(ValueError, match="four distinct"):
        joint.export(tmp_path / "run", "v1-j,map-j,v2-j", weights)
    start_v1 = registry.load("v1-t").state_dict()
    joint.export(tmp_path / "run", NAMES, weights, checkpoint="last")
    registry.entries.cache_clear()
    tuned = Restorer.from_registry("v1-j", "map-j", "v2-j", refiner="ref-j")  # the sha256 cross-checks pass
    assert tuned.mask_threshold == 0.6
    last = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model"]
    chain = joint.Chain(tuned.encoder, tuned.mapping, tuned.decoder, tuned.refiner)
    assert all(torch.equal(v, chain.state_dict()[k]) for k, v in last.items())
    v1 = registry.load("v1-j").state_dict()
    assert all(torch.equal(v1[k], start_v1[k]) for k in v1 if k.startswith("decoder."))  # G_RX kept
    assert not all(torch.equal(v1[k], start_v1[k]) for k in v1 if k.startswith("encoder."))  # E_RX tuned
    meta = registry.get("ref-j").meta
    assert meta["mapping"]["sha256"] == registry.get("map-j").sha256 and meta["detector"]["name"] == "det-t"
    assert meta["jointly_tuned"]["steps_trained"] == 3 and "psnr_y" in meta["jointly_tuned"]["validation"]
    assert meta["jointly_tuned"]["tuned_from"]["refiner"]["name"] == "ref-t" and meta["role"] == "fusion"
    summary = evaluate(EvalConfig(n=2, size=32, corpus=str(corpus), val_fraction=0.3, vae1="v1-j", mapping="map-j",
                                  vae2="v2-j", refiner="ref-j", detector="det-t", threads=1, cost_tile=32,
                                  cost_batch=2, record=False, out=str(tmp_path / "eval")), lambda s: None)
    assert "no longer pairs" in registry.get("v2-j").meta["untuned_half"]
    assert summary["ceiling_vae"] == "v2-t" and set(summary["weights"]) == {"v1-j", "map-j", "v2-j", "ref-j"}
    with pytest.raises(WeightsError, match="trained with vae1"):
        Restorer.from_registry("v1-t", "map-j", "v2-j")
    with pytest.raises(WeightsError, match="ref-j was trained with vae1"):
        Restorer.from_registry("v1-t", "map-t", "v2-t", refiner="ref-j")

    # a second phase from the tuned chain: the ceiling and the untuned halves still trace to the pretrained VAEs
    again = dataclasses.replace(cfg, out=str(tmp_path / "run2"), vae1="v1-j", mapping="map-j", vae2="v2-j",
                                refiner="ref-j", steps=2)
    joint.run(again, msgs.append)
    joint.export(tmp_path / "run2", "v1-k,map-k,v2-k,ref-k", weights, checkpoint="last")
    registry.entries.cache_clear()
    Restorer.from_registry("v1-k", "map-k", "v2-k", refiner="ref-k")
    v2k = registry.get("v2-k").meta
    assert v2k["pretrained_as"] == {"name": "v2-t", "sha256": registry.get("v2-t").sha256}
    assert "v2-t's" in v2k["untuned_half"] and "v1-t's" in registry.get("v1-k").meta["untuned_half"]
    phases = registry.get("map-k").meta["earlier_phases"]
    assert [p["tuned_from"]["mapping"]["name"] for p in phases] == ["map-t"]
    assert registry.get("map-k").meta["jointly_tuned"]["tuned_from"]["mapping"]["name"] == "map-j"


def test_frozen_vae_run_keeps_both_vaes(weights, corpus, tmp_path):
    cfg = joint.Config(**TINY, corpus=str(corpus), out=str(tmp_path / "tr"), steps=2, train_vaes=False)
    joint.run(cfg, lambda s: None)
    joint.export(tmp_path / "tr", NAMES, weights)
    registry.entries.cache_clear()
    for tuned, start in (("v1-j", "v1-t"), ("v2-j", "v2-t")):
        a, b = registry.load(tuned).state_dict(), registry.load(start).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "VAEs frozen" in registry.get("map-j").meta["jointly_tuned"]["loss"]


@pytest.mark.parametrize("bad", [dict(p_family=0.6, p_mild=0.6), dict(final_lr=0.0), dict(refiner="")])
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        joint.Config(**bad)
