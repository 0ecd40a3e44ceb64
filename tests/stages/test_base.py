"""Stage contracts and device helpers: the real stage wrappers satisfy the protocols the pipeline relies on."""

from __future__ import annotations

import pytest
import torch

from oldphoto.archs import build
from oldphoto.errors import OldPhotoError
from oldphoto.stages.base import (
    ColorizerStage,
    DetectorStage,
    RestorerStage,
    UpscalerStage,
    check_output,
    configure_cpu_threads,
    fold_batch_norms,
    run_stage,
    timed,
    usable_cpus,
)
from oldphoto.stages.colorize import Colorizer
from oldphoto.stages.detect import Detector
from oldphoto.stages.restore import Restorer
from oldphoto.stages.upscale import Upscaler


def small_stages():
    torch.manual_seed(0)
    det = Detector(build("unet_detector", channels=(4, 8, 8), blocks=1), 0.5)
    enc = build("vae_encoder", latent=8, width=16, half_width=8, blocks=1)
    dec = build("vae_decoder", latent=8, width=16, half_width=8, blocks=1)
    mapping = build("mapping", latent=8, width=16, blocks_pre=1, blocks_post=1)
    restorer = Restorer(enc, mapping, dec)
    upscaler = Upscaler(build("upscaler", channels=8, layers=2, scales=(2, 4)), 2)
    colorizer = Colorizer(build("colorizer_unet", channels=(4, 8, 8), blocks=1), 64)
    return det, restorer, upscaler, colorizer


def test_real_stage_wrappers_satisfy_the_protocols():
    det, restorer, upscaler, colorizer = small_stages()
    assert isinstance(det, DetectorStage)
    assert isinstance(restorer, RestorerStage)
    assert isinstance(upscaler, UpscalerStage)
    assert isinstance(colorizer, ColorizerStage)
    assert not isinstance(restorer, UpscalerStage)  # no .scale
    x = torch.rand(2, 3, 32, 32)
    prob = run_stage(det, torch.device("cpu"), x)
    assert prob.shape == (2, 1, 32, 32) and prob.dtype == torch.float32
    assert run_stage(restorer, torch.device("cpu"), x, (prob > 0.5).float()).shape == (2, 3, 32, 32)
    assert run_stage(upscaler, torch.device("cpu"), x).shape == (2, 3, 64, 64)
    assert run_stage(colorizer, torch.device("cpu"), torch.rand(1, 1, 24, 40) * 100).shape == (1, 2, 24, 40)


def test_check_output_names_stage_and_shape():
    assert check_output("detector", torch.zeros(2, 1, 8, 8, dtype=torch.float16), (2, 1, 8, 8)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"upscaler stage returned \(2, 3, 8, 8\), expected \(2, 3, 16, 16\)"):
        check_output("upscaler", torch.zeros(2, 3, 8, 8), (2, 3, 16, 16))
    with pytest.raises(ValueError, match="returned tuple"):
        check_output("restorer", (torch.zeros(1),), (1,))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_output_refuses_non_finite_values(bad):
    out = torch.zeros(1, 3, 4, 4)
    out[0, 1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"restorer stage returned non-finite values \(NaN or inf\)"):
        check_output("restorer", out, (1, 3, 4, 4))


def test_an_fp16_overflow_is_computed_again_in_float32(monkeypatch):
    import contextlib

    from oldphoto.stages import base

    calls = []

    class OverflowsInHalf:
        amp = True

        def __call__(self, x):
            calls.append(1)
            return x * float("inf") if len(calls) == 1 else x * 2

    monkeypatch.setattr(base, "autocast", lambda device, enabled=True: contextlib.nullcontext())
    x = torch.ones(1, 3, 2, 2)
    assert torch.equal(run_stage(OverflowsInHalf(), torch.device("cuda"), x), x * 2) and len(calls) == 2
    calls.clear()
    out = run_stage(OverflowsInHalf(), torch.device("cpu"), x)  # float32 already: nothing to retry
    assert len(calls) == 1 and not torch.isfinite(out).any()


def test_cpu_threads_follow_the_machine_unless_the_user_set_them(monkeypatch):
    before = torch.get_num_threads()
    try:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OLDPHOTO_THREADS"):
            monkeypatch.delenv(key, raising=False)
        torch.set_num_threads(1)
        assert configure_cpu_threads() == usable_cpus() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert configure_cpu_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OLDPHOTO_THREADS", "3")  # oldphoto's own variable is applied, not just respected
        assert configure_cpu_threads() == 3 == torch.get_num_threads()
        monkeypatch.setenv("OLDPHOTO_THREADS", "many")
        with pytest.raises(OldPhotoError, match="OLDPHOTO_THREADS"):
            configure_cpu_threads()
    finally:
        torch.set_num_threads(before)


def test_timed_accumulates_and_keeps_time_on_errors():
    seconds: dict[str, float] = {}
    for _ in range(2):
        with timed(seconds, "detect", torch.device("cpu")):
            torch.ones(10).sum()
    assert seconds["detect"] > 0
    first = seconds["detect"]
    with pytest.raises(RuntimeError):
        with timed(seconds, "detect", torch.device("cpu")):
            raise RuntimeError("x")
    assert seconds["detect"] >= first


def _with_running_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, as training would."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def test_fold_batch_norms_keeps_the_function_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = _with_running_stats(build("unet_detector", channels=(4, 8, 8), blocks=2))
    x = torch.rand(2, 3, 32, 32)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        want = model(x)
        folded = fold_batch_norms(model)
        got = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert norms > 0 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == norms
    assert torch.allclose(got, want, atol=1e-5)


def test_fold_batch_norms_returns_models_without_pairs_as_they_are():
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    lone = torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.Conv2d(2, 2, 1))  # BatchNorm before the conv
    assert fold_batch_norms(plain) is plain
    assert fold_batch_norms(lone) is lone
