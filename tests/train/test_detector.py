import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.train import detector as D
from oldphoto.train.degrade import DegradeConfig
from oldphoto.train.loop import load_run_best
from oldphoto.stages.detect import HALF_WEIGHT, TWO_SCALE_THRESHOLD


def _photo(rng, h, w):
    """A smooth synthetic 'photo': gradients and a few soft discs."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.3 * xx * yy], -1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1, 3) * [1, 1, 0.3]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r + 0.05) ** 2))
        img += 0.2 * blob[..., None] * rng.uniform(-1, 1, 3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(_photo(rng, 120, 160)).save(root / f"p{i}.png")
    return root


def _cfg(corpus, out, steps):
    return D.Config(out=str(out), corpus=str(corpus), base=4, levels=2, blocks=1, crop=32, batch=2, steps=steps,
                    val_every=2, val_count=2, val_size=32, warmup=2)


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "det"
    first = D.run(_cfg(corpus, out, 3), lambda m: None)
    return out, first


def test_a_few_steps_on_a_fixed_batch_lower_the_loss():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 0.3 + 0.35
    y = torch.zeros(4, 1, 32, 32)
    for i, col in enumerate((4, 11, 19, 27)):
        y[i, :, :, col] = 1
        x[i, :, :, col] = 0.95 if i % 2 else 0.05  # bright and dark scratches
    model = build(D.ARCH, channels=(8, 16), blocks=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cfg = D.Config(dice_weight=0.5)
    losses = []
    for _ in range(30):
        terms = D.detector_loss(model(x), y, cfg)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        losses.append(terms["total"].item())
    assert set(terms) == {"bce", "dice", "total"}
    assert losses[-1] < 0.5 * losses[0]


def test_run_writes_logs_checkpoints_and_samples(tiny_run):
    out, res = tiny_run
    assert res["step"] == 3
    for name in ("ckpt.pt", "best.pt", "config.json", "log.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "samples" / "step000002.png").is_file()
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "total" in r] == [1, 2, 3]
    assert any("val" in r and 0 <= r["val"]["f1_tol"] <= 1 for r in recs)


def test_resume_continues_the_step_count(tiny_run, corpus):
    out, _ = tiny_run
    messages = []
    res = D.run(_cfg(corpus, out, 5), messages.append)
    assert res["step"] == 5
    assert any("resumed" in m and "step 3" in m for m in messages)
    recs = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "total" in r] == [1, 2, 3, 4, 5]
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 5


def test_export_then_registry_load_round_trip_and_hash_check(tiny_run, corpus, tmp_path, registry_at):
    out, _ = tiny_run
    wdir = tmp_path / "weights"
    path = D.export(out, "det-test", weights_dir=wdir,
                    eval_cfg=D.EvalConfig(corpus=str(corpus), count=2, size=32, undamaged=0, second=0))
    entry = json.loads((wdir / "MANIFEST.json").read_text())["models"]["det-test"]
    assert entry["arch"] == D.ARCH and entry["file"] == path.name
    meta = entry["meta"]
    assert 0 < meta["threshold"] < 1
    assert {"learned", "classical"} <= set(meta["metrics"]) and "size" in meta["metrics"]["classical"]
    assert meta["config"]["base"] == 4 and meta["steps"] >= 2 and meta["data"]["split_seed"] == 0

    registry_at(wdir)
    loaded = registry.load("det-test")
    model, _ = load_run_best(out, D.ARCH)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    # a recorded evaluation lands in the meta, with the threshold it tuned (what the pipeline then uses)
    res = D.evaluate(D.EvalConfig(weights="det-test", corpus=str(corpus), count=2, size=32, seed=7,
                                  record=True, undamaged=3, second=3), lambda m: None)
    meta = registry.get("det-test").meta
    assert meta["evaluation"]["learned"] == res["learned"] and meta["evaluation"]["config"]["seed"] == 7
    assert meta["threshold"] == res["learned"]["threshold"]
    alarms = meta["evaluation"]["false_alarms"]  # flagged share on undamaged crops, both detectors
    assert alarms["crops"] == 3 and 0 <= alarms["learned"] <= 1 and 0 <= alarms["classical"] <= 1
    second = meta["evaluation"]["second_generator"]  # the never-trained-on generator, at the tuned thresholds
    assert second["crops"] == 3 and 0 < second["defect_share"] < 1
    assert all(0 <= second[k]["f1_tol"] <= 1 for k in ("learned", "classical"))
    two = meta["evaluation"]["two_scale"]  # --detect-scales 2, at its own fixed threshold
    assert (two["threshold"], two["half_weight"]) == (TWO_SCALE_THRESHOLD, HALF_WEIGHT)
    assert all(0 <= two[k]["f1_tol"] <= 1 for k in ("enlarged", "second_generator"))
    assert 0 <= two["f1_tol"] <= 1
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        registry.load("det-test")


def test_classical_baseline_finds_clear_scratches():
    x = torch.full((2, 3, 48, 48), 0.5)
    y = torch.zeros(2, 1, 48, 48)
    x[0, :, 20, :] = 0.9
    y[0, :, 20, :] = 1
    x[1, :, :, 30:32] = 0.1
    y[1, :, :, 30:32] = 1
    best = D.score_classical(x, y)
    assert best["f1_tol"] > 0.95 and best["size"] >= 3


def test_validation_curve_and_notes_reach_the_manifest(tiny_run, corpus, tmp_path):
    out, _ = tiny_run
    curve = D.validation_curve(out)
    assert 2 in curve and all(0 <= v <= 1 for v in curve.values())
    (out / "notes.json").write_text(json.dumps({"loss_comparison": {"hed": curve}}))
    try:
        D.export(out, "det-notes", weights_dir=tmp_path,
                 eval_cfg=D.EvalConfig(corpus=str(corpus), count=2, size=32, undamaged=0, second=0))
    finally:
        (out / "notes.json").unlink()
    meta = json.loads((tmp_path / "MANIFEST.json").read_text())["models"]["det-notes"]["meta"]
    assert meta["notes"]["loss_comparison"]["hed"] == {str(k): v for k, v in curve.items()}
    assert meta["history"] and meta["history"][0]["from_step"] == 0


def test_chroma_run_starts_exactly_from_a_luma_detector(tiny_run, corpus, tmp_path):
    out, _ = tiny_run
    messages = []
    wide = tmp_path / "wide"
    cfg = _cfg(corpus, wide, 1)
    D.run(D.Config(**{**cfg.__dict__, "chroma": True, "init_from": str(out), "lr": 0.0}), messages.append)
    assert any("started from" in m for m in messages)
    luma_model, _ = load_run_best(out, D.ARCH)
    wide_model, _ = load_run_best(wide, D.ARCH)
    assert wide_model.chroma and json.loads((wide / "config.json").read_text())["arch_kwargs"]["chroma"] is True
    luma_params, wide_params = dict(luma_model.named_parameters()), dict(wide_model.named_parameters())
    first = wide_params.pop("enc.0.0.weight")  # lr 0: the parameters are where they started (BN statistics move)
    assert torch.equal(first[:, :1], luma_params.pop("enc.0.0.weight")) and not first[:, 1:].any()
    assert all(torch.equal(v, luma_params[k]) for k, v in wide_params.items())


def test_wider_run_starts_from_a_narrower_detector(tiny_run, corpus, tmp_path):
    out, _ = tiny_run
    cfg = _cfg(corpus, tmp_path / "wider", 1)
    narrow_model, _ = load_run_best(out, D.ARCH)
    wider = D.Config(**{**cfg.__dict__, "base": cfg.base + 2, "init_from": str(out), "lr": 0.0})
    D.run(wider, lambda m: None)
    wide_model, _ = load_run_best(tmp_path / "wider", D.ARCH)
    assert wide_model.channels[0] == narrow_model.channels[0] + 2
    w_old, w_new = narrow_model.enc[0][0].weight, wide_model.enc[0][0].weight  # lr 0: where it started
    assert torch.equal(w_new[: w_old.shape[0]], w_old)
    nxt_old = narrow_model.enc[1][0].weight  # the next level's conv: its old channels ignore the new ones
    assert not wide_model.enc[1][0].weight[: nxt_old.shape[0], w_old.shape[0]:].any()


def test_widths_set_every_level_and_a_run_widens_coarse_levels_only(tiny_run, corpus, tmp_path):
    assert D.Config(widths=(4, 10)).arch_kwargs()["channels"] == [4, 10]
    assert D.Config(base=4, levels=2).arch_kwargs()["channels"] == [4, 8]
    out, _ = tiny_run
    cfg = D.Config(**{**_cfg(corpus, tmp_path / "coarse", 1).__dict__, "widths": (4, 12), "init_from": str(out),
                      "lr": 0.0})
    D.run(cfg, lambda m: None)
    narrow, _ = load_run_best(out, D.ARCH)
    wide, _ = load_run_best(tmp_path / "coarse", D.ARCH)
    assert list(wide.channels) == [4, 12] and list(narrow.channels) == [4, 8]
    assert torch.equal(wide.enc[0][0].weight, narrow.enc[0][0].weight)  # the full-resolution level is unchanged


def test_batch_stream_draws_each_worker_from_seed_start_step_and_index(corpus):
    from oldphoto.train.data import PhotoPool

    cfg = _cfg(corpus, "unused", 1)
    pool = PhotoPool(sorted(corpus.glob("*.png")), max_side=cfg.max_side)
    x, y, _ = next(iter(D.BatchStream(pool, cfg, start_step=7)))  # in this process: worker index 0
    x0, y0, _ = D.sample_batch(pool, np.random.default_rng([cfg.seed, 7, 0]), cfg)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    x1, _, _ = next(iter(D.BatchStream(pool, cfg, start_step=8)))  # a resumed run does not replay the stream
    assert not torch.equal(x, x1)


def test_a_run_with_synthesis_workers_trains_and_resumes(corpus, tmp_path):
    cfg = D.Config(**{**_cfg(corpus, tmp_path / "w", 2).__dict__, "workers": 2})
    assert D.run(cfg, lambda m: None)["step"] == 2
    assert D.run(replace(cfg, steps=3), lambda m: None)["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "w" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "sec_data" in r] == [1, 2, 3]


@pytest.mark.parametrize("change, message", [
    ({"workers": -1}, "workers >= 0"),
    ({"decay_minutes": 2.0, "max_minutes": 1.0}, "decay_minutes <= max_minutes"),
    ({"decay_minutes": 1.0}, "decay_minutes <= max_minutes")])
def test_bad_worker_and_time_settings_are_refused(corpus, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        D.run(D.Config(**{**_cfg(corpus, tmp_path / "x", 1).__dict__, **change}), lambda m: None)


def test_sharp_share_out_of_range_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="p_sharp and sharp_scale must be in"):
        D.run(D.Config(**{**_cfg(corpus, tmp_path / "x", 1).__dict__, "p_sharp": 1.5}), lambda m: None)


def test_ageing_share_out_of_range_is_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="p_ageing must be in"):
        D.run(D.Config(**{**_cfg(corpus, tmp_path / "x", 1).__dict__, "p_ageing": -0.1}), lambda m: None)


def test_training_recipe_switches_on_the_ageing_kinds_only_when_asked():
    assert D.training_recipe(D.Config()) == DegradeConfig()
    recipe = D.training_recipe(D.Config(p_ageing=0.2))
    assert (recipe.p_crazing, recipe.p_foxing, recipe.p_flaking) == (0.2, 0.2, 0.2)
    assert replace(recipe, p_crazing=0.0, p_foxing=0.0, p_flaking=0.0) == DegradeConfig()


def test_export_of_the_last_state_publishes_ckpt_weights(tiny_run, corpus, tmp_path):
    out, _ = tiny_run
    wdir = tmp_path / "weights"
    ecfg = D.EvalConfig(corpus=str(corpus), count=2, size=32, undamaged=0, second=0)
    path = D.export(out, "det-last", weights_dir=wdir, eval_cfg=ecfg, checkpoint="last")
    last = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    published = torch.load(path, map_location="cpu", weights_only=True)
    assert published.keys() == last["model"].keys()
    assert all(torch.equal(published[k].float(), last["model"][k].float()) for k in published)
    meta = json.loads((wdir / "MANIFEST.json").read_text())["models"]["det-last"]["meta"]
    assert meta["checkpoint"] == "last" and meta["steps"] == last["step"]
    with pytest.raises(ValueError, match="checkpoint must be 'best' or 'last'"):
        D.export(out, "det-x", weights_dir=wdir, eval_cfg=ecfg, checkpoint="newest")


def test_sets_from_the_training_photos_come_from_those_photos_only(corpus):
    train, val = D._split(str(corpus), 0)
    assert train and val
    xt, mt = D.load_validation(str(corpus), 0, 3, 32, 1, training_photos=True)
    xv, _ = D.load_validation(str(corpus), 0, 3, 32, 1)
    assert tuple(xt.shape) == (3, 3, 32, 32) and tuple(mt.shape) == (3, 1, 32, 32)
    assert not torch.equal(xt, xv)
    # the same set, made directly from the training photos
    from oldphoto.train import data
    items = data.validation_set(train, 3, 32, 1)
    assert torch.equal(xt, torch.stack([D._to_tensor(x) for x, _, _ in items]))


def test_content_edges_mark_thin_lines_of_the_clean_crop_and_come_with_each_batch(corpus):
    from oldphoto.train.data import PhotoPool

    clean = np.full((32, 32, 3), 0.5, np.float32)
    clean[10, :] = 0.1  # a dark line one pixel thin: a plank gap, a wire
    e = D.content_edges(clean, D.Config(edge_weight=1.0, edge_level=0.3))
    assert e.dtype == np.float32 and e.shape == (32, 32)
    assert e[10].min() == pytest.approx(1.0) and e[:8].max() == 0 and e[13:].max() == 0
    cfg = D.Config(corpus=str(corpus), crop=32, batch=3, edge_weight=1.0)
    pool = PhotoPool(sorted(corpus.glob("*.png")), max_side=cfg.max_side)
    x, y, edges = D.sample_batch(pool, np.random.default_rng(5), cfg)
    assert tuple(edges.shape) == (3, 1, 32, 32) and 0 <= float(edges.min()) <= float(edges.max()) <= 1
    x0, y0, none = D.sample_batch(pool, np.random.default_rng(5), D.Config(corpus=str(corpus), crop=32, batch=3))
    assert none is None and torch.equal(x, x0) and torch.equal(y, y0)  # the edges draw nothing from the stream


def test_enlarge_keeps_a_defect_where_it_was_at_the_new_scale():
    mask = np.zeros((16, 16), np.float32)
    mask[4:8, 10:12] = 1
    big = D.enlarge(mask, 32, binary=True)
    assert big.dtype == np.float32 and set(np.unique(big)) == {0.0, 1.0}
    assert big[8:16, 20:24].min() == 1 and big.sum() == pytest.approx(4 * mask.sum(), abs=8)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    out = D.enlarge(img, 48)
    assert out.shape == (48, 48, 3) and 0 <= out.min() and out.max() <= 1
    assert D.enlarge(mask, (32, 48), binary=True).shape == (32, 48)  # a photo needs not be square


def test_upscanned_crops_come_from_smaller_crops_with_their_masks_enlarged(corpus):
    from oldphoto.train.data import PhotoPool

    base = D.Config(corpus=str(corpus), crop=32, batch=3)
    pool = PhotoPool(sorted(corpus.glob("*.png")), max_side=base.max_side)
    x0, y0, _ = D.sample_batch(pool, np.random.default_rng(5), replace(base, p_upscan=0.0))
    x1, y1, _ = D.sample_batch(pool, np.random.default_rng(5), base)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)  # p_upscan 0 draws nothing: older streams stay the same
    x, y, _ = D.sample_batch(pool, np.random.default_rng(5), replace(base, p_upscan=1.0, upscan_range=(2.0, 2.0)))
    assert tuple(x.shape) == (3, 3, 32, 32) and set(torch.unique(y).tolist()) <= {0.0, 1.0}
    # made at 16 px and enlarged twice: neighbouring pixels differ far less than in crops made at 32 px
    step = lambda t: float((t[..., 1:] - t[..., :-1]).abs().mean())  # noqa: E731
    assert step(x) < 0.7 * step(x0)
    with pytest.raises(ValueError, match="upscan_range"):
        D.run(replace(_cfg(corpus, "unused", 1), p_upscan=0.5, upscan_range=(0.5, 2.0)), lambda m: None)


def test_enlarged_scores_the_same_crops_at_a_finer_scan_resolution():
    class Edges(torch.nn.Module):  # "defect" wherever the crop is bright, at any resolution
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return 50 * (x[:, :1] - 0.5) * self.w

    images = torch.zeros(2, 3, 16, 16)
    images[:, :, 4:12, 6:9] = 1
    masks = (images[:, :1] > 0.5).float()
    res = D.enlarged(Edges(), images, masks, threshold=0.5, factor=2, batch=1)
    assert res["factor"] == 2 and res["f1_tol"] == pytest.approx(1.0)
    res = D.enlarged(Edges(), images, torch.roll(masks, 5, dims=-1), threshold=0.5, factor=2)
    assert res["f1_tol"] < 0.5  # scored against the masks given, on the crop's own grid
    res = D.enlarged(Edges(), images, masks, threshold=0.5, factor=2, two_scale=True)  # both passes find it
    assert res["f1_tol"] == pytest.approx(1.0)


def test_synthesis_workers_leave_stop_signals_to_the_main_process():
    import multiprocessing
    import signal

    def child(q):
        D.ignore_stop_signals(0)
        q.put((signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN))

    ctx = multiprocessing.get_context("fork")  # as the DataLoader starts them
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    assert q.get(timeout=30) == (True, True)
    p.join(30)
