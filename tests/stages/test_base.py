"""Stage contracts and device helpers: the real stage wrappers satisfy the protocols the pipeline relies on."""

from __future__ import annotations

import contextlib

import pytest
import torch

from oldphoto.archs import build
from oldphoto.errors import OldPhotoError
from oldphoto.stages.base import (
    ColorizerStage,
    DetectorStage,
    RestorerStage,
    NonFiniteOutput,
    UpscalerStage,
    check_output,
    configure_cpu_threads,
    fold_batch_norms,
    half_precision,
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
    x, cpu = torch.rand(2, 3, 32, 32), torch.device("cpu")
    prob = run_stage("detector", det, cpu, (2, 1, 32, 32), x)
    assert prob.shape == (2, 1, 32, 32) and prob.dtype == torch.float32
    assert run_stage("restorer", restorer, cpu, (2, 3, 32, 32), x, (prob > 0.5).float()).shape == (2, 3, 32, 32)
    assert run_stage("upscaler", upscaler, cpu, (2, 3, 64, 64), x).shape == (2, 3, 64, 64)
    lightness = torch.rand(1, 1, 24, 40) * 100
    assert run_stage("colorizer", colorizer, cpu, (1, 2, 24, 40), lightness).shape == (1, 2, 24, 40)
    with pytest.raises(ValueError, match=r"upscaler stage returned \(2, 3, 64, 64\), expected \(2, 3, 32, 32\)"):
        run_stage("upscaler", upscaler, cpu, (2, 3, 32, 32), x)


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


class OverflowsInHalf:
    """A stage whose first call overflows (as fp16 might) in the tiles `rows`; later calls do so only when
    `always`."""

    def __init__(self, rows=(0,), always=False, amp=True):
        self.calls, self.rows, self.always, self.amp = 0, list(rows), always, amp

    def __call__(self, x):
        self.calls += 1
        out = x * 2
        if self.calls == 1 or self.always:
            out[self.rows] = float("inf")
        return out


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """The CUDA path of run_stage on CPU tensors: autocast is a no-op here either way."""
    from oldphoto.stages import base

    monkeypatch.setattr(base, "autocast", lambda device, enabled=True: contextlib.nullcontext())
    return torch.device("cuda")


def test_only_a_half_precision_stage_is_worth_running_again():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert half_precision(OverflowsInHalf(), cuda) and not half_precision(OverflowsInHalf(amp=False), cuda)
    assert not half_precision(OverflowsInHalf(), cpu)
    assert half_precision(lambda x: x, cuda)  # .amp defaults to True


def test_an_fp16_overflow_is_computed_again_in_float32(cuda_on_cpu):
    x = torch.ones(3, 3, 2, 2)
    stage = OverflowsInHalf()
    assert torch.equal(run_stage("restorer", stage, cuda_on_cpu, (3, 3, 2, 2), x), x * 2) and stage.calls == 2


@pytest.mark.parametrize("device, stage, calls", [
    ("cpu", OverflowsInHalf(rows=[0, 2]), 1),  # float32 already: nothing to retry
    ("cuda", OverflowsInHalf(rows=[0, 2], amp=False), 1),  # kept in float32 under autocast
    ("cuda", OverflowsInHalf(rows=[0, 2], always=True), 2),  # float32 overflows too
])
def test_non_finite_values_left_name_their_tiles(cuda_on_cpu, device, stage, calls):
    with pytest.raises(NonFiniteOutput, match=r"restorer stage returned non-finite values") as caught:
        run_stage("restorer", stage, torch.device(device), (3, 3, 2, 2), torch.ones(3, 3, 2, 2))
    assert caught.value.rows == [0, 2] and stage.calls == calls


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
