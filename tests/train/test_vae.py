"""VAE trainer: a few steps lower the loss, resume continues exactly, export + registry round trip."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.train import loop, vae

TINY = dict(latent=8, width=16, half_width=8, blocks=1, disc_width=8, crop=32, batch=2, val_n=2, val_size=32,
            val_every=2, log_every=1, minutes=0, gan_start=1, threads=1, val_fraction=0.3)


def make_corpus(folder, n=4, seed=0):
    """n small JPEG 'photos' with smooth gradients, edges and texture."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:72, 0:88].astype(np.float32)
    for i in range(n):
        img = np.stack([xx * (1 + i) * 2, yy * 3 + 40 * i, (xx + yy) * 1.5], -1) % 256
        img[20 + 4 * i: 40, 10: 30 + 5 * i] = rng.integers(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"photo{i}.jpg", quality=95)
    return folder


@pytest.fixture()
def corpus(tmp_path):
    return make_corpus(tmp_path / "corpus")


def test_train_step_lowers_reconstruction_loss_on_fixed_batch():
    torch.manual_seed(0)
    cfg = vae.Config(**{**TINY, "lr": 3e-3})
    model = build("vae", **cfg.arch_kwargs)
    disc = build("patch_discriminator", width=cfg.disc_width)
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    images = torch.stack([torch.stack([xx, yy, (xx * yy) ** 0.5]) * s for s in (1.0, 0.6, 0.8, 0.3)])
    first = vae.train_step(cfg, model, disc, None, opt_g, opt_d, images, None, use_gan=False)
    for _ in range(25):
        last = vae.train_step(cfg, model, disc, None, opt_g, opt_d, images, None, use_gan=False)
    assert last["l1"] < 0.5 * first["l1"], (first, last)
    with_gan = vae.train_step(cfg, model, disc, None, opt_g, opt_d, images, None, use_gan=True)
    assert {"g_gan", "d_gan"} <= set(with_gan)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, corpus):
    msgs = []
    straight = vae.Config(**{**TINY, "which": "vae2", "corpus": str(corpus), "out": str(tmp_path / "a"), "steps": 4})
    vae.run(straight, msgs.append)
    split = dataclasses.replace(straight, out=str(tmp_path / "b"), steps=2)
    assert vae.run(split, msgs.append)["step"] == 2
    result = vae.run(dataclasses.replace(split, steps=4), msgs.append)
    assert result["step"] == 4
    assert any("resumed" in m and "step 2" in m for m in msgs)
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in vae.JsonlLog(tmp_path / "b" / "log.jsonl").read() if "l1" in r]
    assert steps == [1, 2, 3, 4]
    assert list((tmp_path / "b" / "samples").glob("step*.png"))


def test_resume_refuses_a_different_architecture(tmp_path, corpus):
    cfg = vae.Config(**{**TINY, "corpus": str(corpus), "out": str(tmp_path / "r"), "steps": 1})
    vae.run(cfg, lambda m: None)
    with pytest.raises(ValueError, match="latent"):
        vae.run(dataclasses.replace(cfg, latent=4, steps=2), lambda m: None)


def test_vae1_uses_the_latent_discriminator_only_with_real_old_photos(tmp_path, corpus):
    real = make_corpus(tmp_path / "real", n=2, seed=5)
    base = vae.Config(**{**TINY, "which": "vae1", "corpus": str(corpus), "steps": 2, "gan_start": 100})
    vae.run(dataclasses.replace(base, out=str(tmp_path / "with"), real_old=str(real)), lambda m: None)
    vae.run(dataclasses.replace(base, out=str(tmp_path / "without")), lambda m: None)
    with_keys = set().union(*[r for r in vae.JsonlLog(tmp_path / "with" / "log.jsonl").read()])
    without_keys = set().union(*[r for r in vae.JsonlLog(tmp_path / "without" / "log.jsonl").read()])
    assert {"g_latent", "d_latent"} <= with_keys
    assert not {"g_latent", "d_latent"} & without_keys


def test_export_registry_round_trip_and_hash_mismatch(tmp_path, corpus, registry_at):
    cfg = vae.Config(**{**TINY, "corpus": str(corpus), "out": str(tmp_path / "run"), "steps": 2})
    vae.run(cfg, lambda m: None)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "MANIFEST.json").write_text(json.dumps({"models": {"other": {"arch": "vae", "arch_kwargs": {},
                                                                               "file": "x.pt", "sha256": "0"}}}))
    path = vae.export(tmp_path / "run", "vae2-test", weights=weights)
    manifest = json.loads((weights / "MANIFEST.json").read_text())["models"]
    assert set(manifest) == {"other", "vae2-test"}  # other entries are kept
    meta = manifest["vae2-test"]["meta"]
    assert meta["steps"] == 2 and meta["config"]["latent"] == 8 and "psnr_rgb" in meta["validation"]
    assert "no real old photos" in meta["data"]["real_old"]

    registry_at(weights)
    model = registry.load("vae2-test")
    ref = build("vae", **cfg.arch_kwargs).eval()
    ref.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True)["state_dict"])
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[0], ref(x)[0])
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(WeightsError, match="sha256"):
        registry.load("vae2-test")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_checkpoints_the_step_and_resume_adds_no_duplicate_records(tmp_path, corpus, monkeypatch,
                                                                               signum, sigint_default):
    straight = vae.Config(**{**TINY, "which": "vae2", "corpus": str(corpus), "out": str(tmp_path / "a"), "steps": 4})
    vae.run(straight, lambda m: None)
    inner, calls = vae.train_step, []

    def stepping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)  # during the third step: it completes and is checkpointed
        return inner(*args, **kwargs)
    monkeypatch.setattr(vae, "train_step", stepping)
    cfg = dataclasses.replace(straight, out=str(tmp_path / "b"), ckpt_minutes=100)
    msgs = []
    if signum == signal.SIGINT:
        with pytest.raises(loop.Stopped, match="at step 3"):
            vae.run(cfg, msgs.append)
    else:
        assert vae.run(cfg, msgs.append)["step"] == 3
    assert any(f"stopped by {signal.Signals(signum).name} at step 3" in m for m in msgs)
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(vae, "train_step", inner)
    assert vae.run(cfg, msgs.append)["step"] == 4
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    vae.run(cfg, msgs.append)  # already finished: nothing is logged again
    records = vae.JsonlLog(tmp_path / "b" / "log.jsonl").read()
    assert [r["step"] for r in records if "l1" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "val" in r] == [2, 4]
