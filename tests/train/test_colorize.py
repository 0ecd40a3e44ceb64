"""Colorizer training: loss terms, rarity weights, colour statistics, a loop that learns, resume, export."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.ops.color import rgb_to_lab
from oldphoto.stages.colorize import Colorizer
from oldphoto.train import colorize as C


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A landscape-like uint8 (h, w, 3): bright blue sky above dark textured green ground, random horizon."""
    img = np.empty((h, w, 3), np.float32)
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    img[:horizon] = (0.45, 0.65, 0.95)
    img[horizon:] = (0.15, 0.45, 0.12)
    img[horizon:] *= 0.8 + 0.4 * rng.random((h - horizon, w, 1))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(_scene(rng, 72, 96)).save(root / f"photo{i}.jpg", quality=95)
    return root


def _cfg(corpus, out, **kw):
    base = dict(out=str(out), corpus=str(corpus), base=4, levels=3, max_width=8, blocks=1, work_size=64, crop=32,
                batch=2, val_size=32, steps=4, val_every=2, warmup=1, ckpt_minutes=100.0)
    base.update(kw)
    return C.Config(**base)


def test_colorfulness_and_ab_error():
    gray = torch.rand(2, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.allclose(C.colorfulness(gray), torch.zeros(2), atol=1e-3)
    dull = torch.full((1, 3, 8, 8), 0.5)
    dull[..., ::2] = torch.tensor([0.55, 0.5, 0.45]).view(3, 1, 1)
    vivid = torch.zeros(1, 3, 8, 8)
    vivid[:, 0, :, ::2] = 1.0
    vivid[:, 2, :, 1::2] = 1.0
    assert C.colorfulness(vivid) > 5 * C.colorfulness(dull) > 0
    a = torch.zeros(1, 2, 4, 4)
    b = a.clone()
    b[:, 0] = 3.0
    b[:, 1] = 4.0
    assert torch.allclose(C.ab_error(a, b), torch.tensor([5.0]))
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 4\)"):
        C.ab_error(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


def test_rarity_weights_favour_rare_colours():
    cfg = C.Config()
    ab = torch.zeros(1, 2, 10, 10)  # 90 gray pixels, 10 strongly red ones
    ab[:, 0, 0, :] = 60.0
    ab[:, 1, 0, :] = 40.0
    w = C.rarity_weights([ab], cfg)
    idx_gray = C._bin_index(torch.zeros(1, 2, 1, 1), cfg).item()
    idx_red = C._bin_index(ab[:, :, :1, :1], cfg).item()
    assert w[idx_red] > 3 * w[idx_gray]
    # Without smoothing the expected weight over the data is exactly 1, and rare still outweighs common.
    sharp = C.rarity_weights([ab], C.Config(hist_sigma=0.0))
    assert sharp[C._bin_index(ab, cfg)].mean().item() == pytest.approx(1.0, rel=1e-4)
    assert sharp[idx_red] > 2 * sharp[idx_gray]
    plain = C.rarity_weights([ab], C.Config(rebalance=1.0))  # uniform prior only: every seen bin the same
    assert torch.isclose(plain[idx_red], plain[idx_gray])


def test_loss_terms_and_chroma_term_punishes_gray():
    cfg = C.Config()
    true = torch.randn(2, 2, 8, 8) * 30
    w = torch.ones(C._bins(cfg) ** 2)
    same = C.colorize_loss(true.clone(), true, w, cfg)
    assert same["total"].item() == pytest.approx(0.0, abs=1e-4)
    gray = C.colorize_loss(torch.zeros_like(true), true, w, cfg)
    assert gray["chroma"] > 0.1 and gray["total"] > gray["l1"]
    assert "chroma" not in C.colorize_loss(true, true, w, C.Config(chroma_weight=0.0))


def test_tone_jitter_keeps_range_and_order():
    l = torch.linspace(0, 100, 50).view(1, 1, 5, 10).repeat(4, 1, 1, 1)
    out = C.tone_jitter(l, np.random.default_rng(0), C.Config(p_tone=1.0))
    assert out.min() >= 0 and out.max() <= 100
    assert not torch.allclose(out, l)
    flat = out.flatten(1)
    assert (flat[:, 1:] >= flat[:, :-1]).all()  # a gamma never reverses tones


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    rgb = torch.from_numpy(np.stack([_scene(rng, 32, 32) for _ in range(4)]).transpose(0, 3, 1, 2) / 255.0).float()
    lab = rgb_to_lab(rgb)
    cfg = C.Config()
    weights = C.rarity_weights([lab[:, 1:]], cfg)
    model = build("colorizer_unet", channels=(8, 16, 16), blocks=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = C.colorize_loss(model(lab[:, :1]), lab[:, 1:], weights, cfg)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    m = C.score(model(lab[:, :1]).detach(), lab)
    assert m["ab_err"] < 0.7 * m["gray_ab_err"]


def test_run_resume_export_and_registry_round_trip(corpus, tmp_path, registry_at):
    out = tmp_path / "run"
    first = C.run(_cfg(corpus, out, steps=2), lambda s: None)
    assert first["step"] == 2 and first["best"]["step"] == 2
    second = C.run(_cfg(corpus, out, steps=4), lambda s: None)  # resumes: only steps 3 and 4 run
    assert second["step"] == 4
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "sec" in r]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step000002.png", "step000004.png"]
    assert json.loads((out / "config.json").read_text())["config"]["crop"] == 32

    wdir = tmp_path / "weights"
    wdir.mkdir()
    registry_at(wdir)
    path = C.export(out, "colorize-test")
    entry = registry.get("colorize-test")
    assert entry.arch == "colorizer_unet" and entry.meta["work_size"] == 64
    assert entry.meta["steps_trained"] == 4 and "ab_err" in entry.meta["validation"]
    assert entry.meta["config"]["seed"] == 1 and entry.meta["data"]["train_photos"] >= 1
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    col = Colorizer.from_registry("colorize-test")
    assert col.work_size == 64 and col.entry.sha256 == entry.sha256
    assert col(torch.rand(1, 1, 30, 40) * 100).shape == (1, 2, 30, 40)
    result = C.evaluate(C.EvalConfig(weights="colorize-test", corpus=str(corpus), size=48), lambda s: None)
    assert result["photos"] >= 1 and result["gray_ab_err"] > 0 and result["colorfulness_true"] > 0
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(WeightsError, match="sha256"):
        registry.load("colorize-test")
