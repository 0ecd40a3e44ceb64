"""Mapping trainer: a few steps lower the loss, resume continues, export publishes T with its own VAEs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import SettingsError, WeightsError
from oldphoto.stages.restore import Restorer
from oldphoto.train import mapping, run_files, vae
from oldphoto.train.evaluate_restore import EvalConfig, evaluate
from oldphoto.train.run_files import export_weights

from latent_corpus import write_gradient_corpus  # tests/train is on sys.path (pytest rootdir import mode)

VAE_TINY = dict(latent=8, width=16, half_width=8, blocks=1, disc_width=8, crop=32, batch=2, val_n=2, val_size=32,
                val_every=2, log_every=1, minutes=0, threads=1, val_fraction=0.3, steps=1)
MAP_TINY = dict(width=16, blocks_pre=1, blocks_post=1, disc_width=8, crop=32, batch=2, buffer=6, fresh=1, val_n=2,
                val_size=32, val_every=2, log_every=1, gan_start=1, threads=1, val_fraction=0.3)


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    corpus = write_gradient_corpus(root / "corpus")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    for which in ("vae1", "vae2"):
        vae.run(vae.Config(**VAE_TINY, which=which, corpus=str(corpus), out=str(root / which)), lambda m: None)
    torch.set_num_threads(before)
    return root


@pytest.mark.parametrize("bf16", [False, True])
def test_train_step_lowers_loss_on_fixed_batch(bf16):
    torch.manual_seed(0)
    cfg = mapping.Config(**{**MAP_TINY, "lr": 2e-3, "bf16": bf16})
    small = dict(latent=8, width=16, half_width=8, blocks=1)
    vae1, vae2 = mapping.freeze(build("vae", **small)), mapping.freeze(build("vae", **small))
    t = build("mapping", latent=8, width=16, blocks_pre=1, blocks_post=1)
    disc = build("latent_discriminator", latent=8, width=8)
    opt_g, opt_d = torch.optim.Adam(t.parameters(), lr=cfg.lr), torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    y = torch.rand(4, 3, 32, 32)
    m = torch.zeros(4, 1, 32, 32)
    m[:, :, 8:12] = 1
    x = torch.where(m > 0, torch.ones_like(y), y * 0.7 + 0.1)
    frozen = [p.clone() for p in vae1.parameters()] + [p.clone() for p in vae2.parameters()]
    z_x, z_y, y, m, _ = mapping.encode_pairs(vae1, vae2, x, y, m)
    first = mapping.train_step(cfg, t, disc, vae2.decoder, opt_g, opt_d, z_x, z_y, y, m, use_gan=False)
    for _ in range(25):
        last = mapping.train_step(cfg, t, disc, vae2.decoder, opt_g, opt_d, z_x, z_y, y, m, use_gan=False)
    total = lambda p: cfg.lambda_latent * p["latent_l1"] + cfg.w_image * p["image_l1"]  # noqa: E731
    # an untrained G_Y cannot render y, so the image term moves little; the latent term must fall
    assert last["latent_l1"] < 0.5 * first["latent_l1"] and total(last) < total(first), (first, last)
    gan = mapping.train_step(cfg, t, disc, vae2.decoder, opt_g, opt_d, z_x, z_y, y, m, use_gan=True)
    assert {"g_gan", "fm", "d_gan"} <= set(gan)
    assert all(p.dtype == torch.float32 for p in list(t.parameters()) + list(disc.parameters()))
    now = list(vae1.parameters()) + list(vae2.parameters())
    assert all(torch.equal(a, b) for a, b in zip(frozen, now)), "the VAEs must stay frozen"


def test_pair_buffer_rotates_fresh_pairs_in():
    counter = iter(range(1000))
    make = lambda k: (torch.tensor([[float(next(counter))] for _ in range(k)]),)  # noqa: E731
    buf = mapping.PairBuffer(10, make, np.random.default_rng(0), chunk=4)
    buf.refresh(3)
    assert sorted(buf.items[0].flatten().tolist()) == list(range(10))
    buf.refresh(3)
    values = buf.items[0].flatten().tolist()
    assert len(values) == 10 and sum(v >= 10 for v in values) == 3 and len(set(values)) == 10
    (sample,) = buf.sample(4)
    assert sample.shape == (4, 1) and set(sample.flatten().tolist()) <= set(values)


def test_run_resume_export_and_restorer(vae_runs, tmp_path, monkeypatch, registry_at):
    corpus = vae_runs / "corpus"
    cfg = mapping.Config(**MAP_TINY, corpus=str(corpus), out=str(tmp_path / "map"), steps=2,
                         vae1=str(vae_runs / "vae1"), vae2=str(vae_runs / "vae2"))
    msgs = []
    assert mapping.run(cfg, msgs.append)["step"] == 2
    assert mapping.run(dataclasses.replace(cfg, steps=3), msgs.append)["step"] == 3
    assert any("resumed" in m for m in msgs)
    records = mapping.JsonlLog(tmp_path / "map" / "log.jsonl").read()
    assert [r["step"] for r in records if "latent_l1" in r] == [1, 2, 3]
    assert any("val" in r for r in records)
    # warm start: a run's weights fit the same mapping; a mapping without the context module is refused
    small = dict(latent=8, width=16, blocks_pre=1, blocks_post=1)
    mapping.warm_start(build("mapping", **small, context=True), tmp_path / "map", msgs.append)
    with pytest.raises(ValueError, match="unexpected"):
        mapping.warm_start(build("mapping", **small, context=False), tmp_path / "map", msgs.append)
    # a deeper mapping starts as the source: its extra residual blocks are the identity
    src = build("mapping", **small, context=True).eval()
    mapping.warm_start(src, tmp_path / "map", msgs.append)
    deeper = build("mapping", **{**small, "blocks_pre": 2, "blocks_post": 3}, context=True).eval()
    mapping.warm_start(deeper, tmp_path / "map", msgs.append)
    z, m = torch.randn(2, 8, 6, 6), (torch.rand(2, 1, 24, 24) > 0.8).float()
    with torch.no_grad():
        assert torch.allclose(src(z, m), deeper(z, m), atol=1e-5)
    assert not deeper.post[2].conv2.weight.any() and deeper.post[2].conv1.weight.any()

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "MANIFEST.json").write_text(json.dumps({"models": {}}))
    serialised, real = [], run_files._serialized
    monkeypatch.setattr(run_files, "_serialized", lambda state: serialised.append(1) or real(state))
    mapping.export(tmp_path / "map", "map-t", "v1-t", "v2-t", weights=weights, checkpoint="last")
    assert len(serialised) == 3  # once per entry: checked before the first is written, then written as checked
    models = json.loads((weights / "MANIFEST.json").read_text())["models"]
    assert all(registry.sha256_file(weights / f"{n}.pt") == models[n]["sha256"] for n in ("map-t", "v1-t", "v2-t"))
    assert models["map-t"]["meta"]["steps"] == 3 and models["map-t"]["meta"]["checkpoint"] == "last"
    assert "psnr_y" in models["map-t"]["meta"]["validation"]
    with pytest.raises(SettingsError, match="weights entry 'map-t' already holds other weights"):
        mapping.export(tmp_path / "map", "map-t", "v1-t", "v2-t", weights=weights)  # best.pt is not the last state
    mapping.export(tmp_path / "map", "map-u,v1-t,v2-t", weights=weights)  # the same VAEs may be named again
    models = json.loads((weights / "MANIFEST.json").read_text())["models"]
    assert set(models) == {"map-t", "map-u", "v1-t", "v2-t"}
    meta = models["map-t"]["meta"]
    assert meta["vae1"]["sha256"] == models["v1-t"]["sha256"] and meta["config"]["lambda_latent"] == 60.0
    assert models["v2-t"]["meta"]["config"]["which"] == "vae2"

    registry_at(weights)
    restorer = Restorer.from_registry("v1-t", "map-t", "v2-t")
    assert [e.name for e in restorer.entries] == ["v1-t", "map-t", "v2-t"]
    out = restorer(torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    summary = evaluate(EvalConfig(n=2, size=32, refiner="", corpus=str(corpus), val_fraction=0.3, vae1="v1-t",
                                  mapping="map-t", vae2="v2-t", detector="", threads=1, cost_tile=32, cost_batch=2,
                                  out=str(tmp_path / "eval")), lambda m: None)
    assert {"degraded", "baseline", "vae2_ceiling", "full", "full_tone_tile", "full_tone_scan", "scope_defects",
            "no_global", "no_mask", "full_tone_oracle"} <= set(summary["variants"])
    v = summary["variants"]
    assert v["full_tone_oracle"]["psnr_rgb"] >= v["full"]["psnr_rgb"] - 1e-3  # a least-squares fit never loses
    assert summary["mask"].startswith("ground truth") and summary["cost"]["params_total"] > 0
    assert "evaluation" not in registry.get("map-t").meta  # a 2-crop evaluation is not recorded
    assert (tmp_path / "eval" / "results.json").is_file() and (tmp_path / "eval" / "samples.png").is_file()
    # a VAE re-published on its own no longer matches the mapping: refused, not silently wrong
    other = build("vae", latent=8, width=16, half_width=8, blocks=1)
    export_weights(other.state_dict(), "v2-t", "vae", models["v2-t"]["arch_kwargs"], {}, weights, replace=True)
    with pytest.raises(WeightsError, match="trained with vae2"):
        Restorer.from_registry("v1-t", "map-t", "v2-t")


def test_training_with_detector_masks(vae_runs, tmp_path, registry_at):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "MANIFEST.json").write_text(json.dumps({"models": {}}))
    kwargs = {"channels": (4, 8, 8), "blocks": 1}
    export_weights(build("unet_detector", **kwargs).state_dict(), "det-t", "unet_detector", kwargs,
                   {"threshold": 0.5}, weights)
    registry_at(weights)
    msgs = []
    cfg = mapping.Config(**MAP_TINY, corpus=str(vae_runs / "corpus"), out=str(tmp_path / "map"), steps=2,
                         vae1=str(vae_runs / "vae1"), vae2=str(vae_runs / "vae2"), detector="det-t",
                         detector_threshold=0.7)
    assert mapping.run(cfg, msgs.append)["step"] == 2
    assert any("det-t (threshold 0.7)" in m for m in msgs)
    saved = json.loads((tmp_path / "map" / "detector.json").read_text())
    assert saved["sha256"] == registry.get("det-t").sha256 and saved["threshold"] == 0.7
    mapping.export(tmp_path / "map", "map-t", "v1-t", "v2-t", weights=weights)
    meta = registry.get("map-t").meta
    assert meta["training_masks"]["name"] == "det-t"
    assert meta["mask_threshold"] == 0.7  # restores with the masks it was trained on
    # checkpoint selection: a run's best.pt, its ckpt.pt and a published weights file all load and score
    from oldphoto.train.evaluate_restore import compare_mappings

    cands = {"best": tmp_path / "map" / "best.pt", "last": tmp_path / "map" / "ckpt.pt",
             "published": weights / "map-t.pt"}
    res = compare_mappings(cands, EvalConfig(n=2, size=32, refiner="", seed=3, corpus=str(vae_runs / "corpus"),
                                             val_fraction=0.3, vae1="v1-t", mapping="map-t", vae2="v2-t",
                                             detector="det-t", threads=1))
    assert res["best"] == res["published"]  # export published best.pt
    assert all(set(res[k]) == {"gt_mask", "detector_mask"} for k in cands)
    from oldphoto.train.evaluate_restore import sweep_mask_threshold

    sweep = sweep_mask_threshold([0.2, 0.8], EvalConfig(n=2, size=32, refiner="", seed=3,
                                                       corpus=str(vae_runs / "corpus"), val_fraction=0.3,
                                                       vae1="v1-t", mapping="map-t", vae2="v2-t", detector="det-t",
                                                       threads=1, detect_scales=1, record=False))
    assert sweep[0.2]["mask_coverage_percent"] >= sweep[0.8]["mask_coverage_percent"] and "psnr_y" in sweep[0.8]
    from oldphoto.train.evaluate_restore import select_mapping_and_threshold

    both = select_mapping_and_threshold({"best": cands["best"], "last": cands["last"]}, [0.2, 0.8],
                                        EvalConfig(n=2, size=32, refiner="", seed=3, corpus=str(vae_runs / "corpus"),
                                                   val_fraction=0.3, vae1="v1-t", mapping="map-t", vae2="v2-t",
                                                   detector="det-t", threads=1, detect_scales=1, record=False))
    assert both["chosen"]["candidate"] in ("best", "last") and both["chosen"]["threshold"] in (0.2, 0.8)
    assert both["chosen"]["psnr_y"] == max(q["psnr_y"] for k in ("best", "last") for q in both[k].values())
    assert both["best"][0.8] == sweep[0.8]  # map-t is the run's best.pt: the same pipeline as the sweep


def test_even_tone_crops_is_the_pipelines_pass_on_each_crop():
    from oldphoto.train.evaluate_restore import even_tone_crops

    x = torch.rand(2, 3, 48, 128, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(2, 1, 48, 128)
    m[:, :, 5:8] = 1
    assert (even_tone_crops(x, x, m) - x).abs().max() < 1 / 65535  # nothing changed: nothing to even out
    tile_tone = x.clone()
    tile_tone[:, :, :, 64:] = (tile_tone[:, :, :, 64:] + 0.1).clamp(0, 1)  # half the crop lifted on its own
    evened = even_tone_crops(tile_tone, x, m)
    assert evened.shape == x.shape
    left, right = (evened - x)[..., 16:48].mean(), (evened - x)[..., 80:112].mean()
    assert abs(float(right - left)) < 0.02  # was 0.1: the two halves now share one correction
    filled = tile_tone.clone()
    filled[:, :, 5:8] = 0.5  # what the restorer put into the defect rows
    kept = even_tone_crops(filled, x, m, strength=0.0, defects_only=True)  # --scope defects
    assert (kept - x)[:, :, m[0, 0, :, 0] == 0].abs().max() < 1 / 65535  # elsewhere: the scan, exactly
    assert (kept[:, :, 5:8, :64] - 0.5).abs().mean() < 0.02  # left half: the restorer changed nothing else


def test_mapping_threshold_sweeps_refuse_the_two_scale_detector():
    from oldphoto.train.evaluate_restore import EvalConfig, select_mapping_and_threshold, sweep_mask_threshold

    with pytest.raises(ValueError, match="one detector pass: need detect_scales 1, got 2"):
        sweep_mask_threshold([0.5], EvalConfig(detect_scales=2, record=False))
    with pytest.raises(ValueError, match="one detector pass"):
        select_mapping_and_threshold({}, [0.5], EvalConfig(detect_scales=2, record=False))
    with pytest.raises(ValueError, match=r"detect_scales must be one of \(1, 2\), got 3"):
        EvalConfig(detect_scales=3)
    with pytest.raises(ValueError, match="with detect_scales 1 set record to false"):
        EvalConfig(detect_scales=1, record=True)  # the recorded numbers are the restoring default's


def test_export_refuses_to_replace_other_vae_weights_before_writing_anything(vae_runs, tmp_path):
    cfg = mapping.Config(**{**MAP_TINY, "buffer": 0, "val_every": 1}, corpus=str(vae_runs / "corpus"),
                         out=str(tmp_path / "map"),
                         steps=1, vae1=str(vae_runs / "vae1"), vae2=str(vae_runs / "vae2"))
    mapping.run(cfg, lambda m: None)
    weights = tmp_path / "weights"
    other = build("vae", latent=8, width=16, half_width=8, blocks=1)
    export_weights(other.state_dict(), "vae1-v1", "vae", {"latent": 8, "width": 16, "half_width": 8, "blocks": 1},
                   {}, weights)  # as if shipped with another mapping
    before = (weights / "MANIFEST.json").read_text()
    with pytest.raises(SettingsError, match="'vae1-v1' already holds other weights.*--as mapping-v9,vae1-v9,vae2-v9"):
        mapping.export(tmp_path / "map", "map-d", weights=weights)  # the default VAE names
    assert (weights / "MANIFEST.json").read_text() == before and sorted(p.name for p in weights.glob("*.pt")) == [
        "vae1-v1.pt"]
    with pytest.raises(SettingsError, match="MAPPING or MAPPING,VAE1,VAE2"):
        mapping.export(tmp_path / "map", "map-d,v1-d", weights=weights)
    mapping.export(tmp_path / "map", "map-d,v1-d,v2-d", weights=weights)
    models = json.loads((weights / "MANIFEST.json").read_text())["models"]
    assert set(models) == {"vae1-v1", "map-d", "v1-d", "v2-d"} and models["map-d"]["meta"]["vae1"]["name"] == "v1-d"
    with pytest.raises(SettingsError, match=r"not a mapping run \(its config has no vae1, vae2, blocks_pre\)"):
        mapping.export(vae_runs / "vae1", "map-e,v1-e,v2-e", weights=weights)


def test_eval_restore_records_only_on_request_and_only_the_standard_set():
    assert EvalConfig().record is False  # like eval detector: a tiny evaluation never replaces the recorded one
    EvalConfig(record=True)  # the standard held-out set
    with pytest.raises(ValueError, match="needs the standard set: n=2, size=32 differ"):
        EvalConfig(n=2, size=32, record=True)
