"""Upscaler training: pair synthesis, metrics, a loop that learns, resume, export + registry, throughput."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import WeightsError
from oldphoto.stages.upscale import Upscaler
from oldphoto.train import upscale as U


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """uint8 (h, w, 3): smooth colour field plus sharp edges (stripes and a disc), detail that bicubic blurs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.05, 0.3)
    img = np.stack([0.5 + 0.3 * np.sin(f * xx + c) * np.cos(0.7 * f * yy) for c in (0.0, 1.0, 2.0)], -1)
    img[(xx.astype(int) // int(rng.integers(3, 7))) % 2 == 0] *= 0.6
    img[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2] = rng.random(3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(_texture(rng, 96, 128)).save(root / f"photo{i}.png")
    return root


def _cfg(corpus, out, **kw):
    base = dict(out=str(out), corpus=str(corpus), channels=4, layers=1, pool_side=128, hr_crop=32, batch=2,
                steps=4, val_every=2, val_count=2, val_crop=32, warmup=1, ckpt_minutes=100.0)
    base.update(kw)
    return U.Config(**base)


def test_shrink_enlarge_and_inputs():
    hr = _texture(np.random.default_rng(1), 64, 48).astype(np.float32) / 255
    small = U.shrink(hr, 4)
    assert small.shape == (16, 12, 3) and small.dtype == np.float32
    assert np.allclose(small * 255, np.round(small * 255), atol=1e-3)  # on the 8-bit grid
    for method in ("bicubic", "lanczos"):
        assert U.enlarge(small, 4, method).shape == (64, 48, 3)
    with pytest.raises(ValueError, match="multiple"):
        U.shrink(hr[:63], 2)
    clean = U.make_input(hr, 2, np.random.default_rng(0), None)
    assert np.array_equal(clean, U.shrink(hr, 2))
    always = U.Degradation(p_blur=1.0, p_noise=1.0, p_jpeg=1.0)
    a = U.make_input(hr, 2, np.random.default_rng(5), always)
    b = U.make_input(hr, 2, np.random.default_rng(5), always)
    assert np.array_equal(a, b) and a.shape == clean.shape  # seeded: reproducible
    assert np.abs(a - clean).mean() > 0.005  # and really degraded
    assert a.min() >= 0 and a.max() <= 1


def test_luma_scores_and_baseline():
    x = torch.rand(2, 3, 20, 20)
    same = U.luma_scores(x, x, 2)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    noisy = U.luma_scores((x + 0.05 * torch.randn_like(x)).clamp(0, 1), x, 2)
    assert 15 < noisy["psnr"] < 40 and noisy["ssim"] < 1
    assert U.baseline(torch.rand(3, 3, 8, 10), 4, "lanczos").shape == (3, 3, 32, 40)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    hr = torch.from_numpy(np.stack([_texture(rng, 48, 48) for _ in range(4)]).transpose(0, 3, 1, 2) / 255).float()
    small = F.avg_pool2d(hr, 2)
    model = build("upscaler", channels=16, layers=2, scales=(2,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = F.l1_loss(model(small, 2), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]  # step 0 is exactly bicubic (zero heads), so this beats bicubic


def test_run_resume_export_and_registry_round_trip(corpus, tmp_path, registry_at):
    out = tmp_path / "run"
    first = U.run(_cfg(corpus, out, steps=2), lambda s: None)
    assert first["step"] == 2 and set(first["best"]) >= {"x2_clean", "x4_degraded", "gain"}
    second = U.run(_cfg(corpus, out, steps=4), lambda s: None)
    assert second["step"] == 4
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "sec" in r] == [1, 2, 3, 4]
    assert all({"l1_x2", "l1_x4"} <= set(r) for r in recs if "sec" in r)
    assert (out / "samples" / "step000004.png").is_file()

    wdir = tmp_path / "weights"
    wdir.mkdir()
    registry_at(wdir)
    path = U.export(out, "upscale-test")
    entry = registry.get("upscale-test")
    assert entry.arch == "upscaler" and entry.arch_kwargs["scales"] == [2, 4]
    assert entry.meta["steps_trained"] == 4 and entry.meta["data"]["kernel"] == "Pillow bicubic"
    up = Upscaler.from_registry("upscale-test", 4)
    assert up.entry.sha256 == entry.sha256 and up(torch.rand(2, 3, 8, 8)).shape == (2, 3, 32, 32)
    result = U.evaluate(U.EvalConfig(weights="upscale-test", corpus=str(corpus), size=128, crop=32,
                                     speed_tile=16, threads=1), lambda s: None)
    assert set(result["scores"]) == {"x2_clean", "x2_degraded", "x4_clean", "x4_degraded"}
    row = result["scores"]["x2_clean"]
    assert row["bicubic"]["psnr"] > 10 and row["gain_over_bicubic_db"] == pytest.approx(
        row["model"]["psnr"] - row["bicubic"]["psnr"])
    assert result["throughput"]["x2_mp_per_s"] > 0 and result["params"] > 0
    path.write_bytes(b"\0" + path.read_bytes()[1:])
    with pytest.raises(WeightsError, match="sha256"):
        registry.load("upscale-test")


def test_throughput_and_macs():
    model = build("upscaler", channels=8, layers=2)
    assert U.throughput(model, 2, tile=16, batch=2, repeats=2, threads=1) > 0
    # head 3->8, two 8->8 bodies, tail 8->12 (x2): 9 * (24 + 64 + 64 + 96) MACs per input pixel
    from oldphoto.archs.upscaler import macs_per_input_pixel

    assert macs_per_input_pixel(model, 2) == 9 * (24 + 64 + 64 + 96)
