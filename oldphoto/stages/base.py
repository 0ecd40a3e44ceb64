"""What the pipeline expects of a stage, and the device helpers it runs them with (device choice, AMP, OOM).

Stage contracts (tensors float32 unless noted, on the pipeline's device):
- DetectorStage:  tiles (B, 3, T, T) in [0, 1] -> defect probability (B, 1, T, T) in [0, 1]; `.threshold`.
- RestorerStage:  tiles (B, 3, T, T) in [0, 1], mask (B, 1, T, T) in {0, 1} (1 = defect) -> (B, 3, T, T) in [0, 1].
- UpscalerStage:  tiles (B, 3, T, T) in [0, 1] -> (B, 3, sT, sT) in [0, 1]; `.scale` = s.
- ColorizerStage: L (1, 1, h, w) CIE L* in [0, 100] at work resolution (long side <= `.work_size`)
                  -> ab (1, 2, h, w) CIE a*, b* (roughly [-128, 127]).
Optional attributes read for reports: `.entry` (a registry WeightsEntry) or `.entries` (several, e.g. the
restorer's three networks); `.amp` (False keeps a stage in float32 under CUDA autocast; default True).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import time
from typing import Iterator, Protocol, runtime_checkable

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import OldPhotoError


@runtime_checkable
class DetectorStage(Protocol):
    threshold: float

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class RestorerStage(Protocol):
    def __call__(self, tiles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class UpscalerStage(Protocol):
    scale: int

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ColorizerStage(Protocol):
    work_size: int

    def __call__(self, lightness: torch.Tensor) -> torch.Tensor: ...


class NonFiniteOutput(ValueError):
    """A stage returned NaN or inf; `rows` are the batch positions (tiles) that hold them."""

    def __init__(self, name: str, rows: list[int]):
        super().__init__(f"{name} stage returned non-finite values (NaN or inf)")
        self.rows = rows


def shape_of(value: object) -> tuple[int, ...] | str:
    """What an error message says a stage got: a tensor's shape, else the name of the type passed instead."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def check_tiles(stage: str, tiles: object, channels: tuple[int, ...] = (3,)) -> None:
    """Raise ValueError naming the stage unless `tiles` is a float tensor (B, C, T, T) with C in `channels`: the
    input of a tile stage, checked before it reaches the network, whose own error would not name the stage."""
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4 or tiles.shape[1] not in channels:
        c = " or ".join(map(str, channels))
        raise ValueError(f"{stage}: expected tiles (B, {c}, T, T) float in [0, 1], got {shape_of(tiles)}")
    if not tiles.is_floating_point():
        raise ValueError(f"{stage}: expected float tiles in [0, 1], got dtype {tiles.dtype}")


def check_output(name: str, out: object, shape: tuple[int, ...]) -> torch.Tensor:
    """Raise ValueError naming the stage when its output is not a tensor of `shape` or holds NaN or inf (which
    would be written as black or white pixels, or as no defect, without a word); returns it as float32."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} stage returned {shape_of(out)}, expected {tuple(shape)}")
    out = out.float()
    if not bool(torch.isfinite(out).all()):
        bad = ~torch.isfinite(out.reshape(len(out), -1)).all(1) if out.dim() else torch.ones(1, dtype=torch.bool)
        raise NonFiniteOutput(name, bad.nonzero().flatten().tolist())
    return out


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """For inference: a copy of `model` (in eval mode) where every BatchNorm2d that directly follows a Conv2d in an
    nn.Sequential is folded into that convolution's weights and bias and replaced by an identity; `model` itself is
    untouched, and returned as is when there is nothing to fold.

    The same function up to float rounding (~1e-6 on the detector's probabilities) without a pass over each
    feature map per BatchNorm: the detector runs ~30 % faster on CPU.
    """
    def pairs(m: torch.nn.Module):
        for seq in m.modules():
            if isinstance(seq, torch.nn.Sequential):
                for i in range(len(seq) - 1):
                    if isinstance(seq[i], torch.nn.Conv2d) and isinstance(seq[i + 1], torch.nn.BatchNorm2d) \
                            and seq[i + 1].track_running_stats:
                        yield seq, i

    if next(pairs(model), None) is None:
        return model
    folded = copy.deepcopy(model).eval()
    for seq, i in list(pairs(folded)):
        seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
        seq[i + 1] = torch.nn.Identity()
    return folded


_DEVICE_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu'; 'cuda' / 'cuda:N' (must exist). Raises OldPhotoError."""
    spec = str(spec).strip().lower()
    if not _DEVICE_SPEC.match(spec):
        raise OldPhotoError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OldPhotoError(f"device {spec!r} requested but CUDA is not available (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OldPhotoError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by torch itself; OLDPHOTO_THREADS is applied below


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity / container limits where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_cpu_threads() -> int:
    """Let torch use every usable core unless the user set a thread count in the environment (OLDPHOTO_THREADS
    is applied here; OMP_NUM_THREADS / MKL_NUM_THREADS are read by torch itself); returns the count in use."""
    own = os.environ.get("OLDPHOTO_THREADS", "").strip()
    if own:
        try:
            n = int(own)
        except ValueError:
            raise OldPhotoError(f"OLDPHOTO_THREADS must be a positive integer, got {own!r}") from None
        if n < 1:
            raise OldPhotoError(f"OLDPHOTO_THREADS must be a positive integer, got {own!r}")
        torch.set_num_threads(n)
        return n
    if any(os.environ.get(k) for k in _THREAD_ENV):
        return torch.get_num_threads()
    n = usable_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA (convs and matmuls in half, reductions/softmax kept in float32 by torch); no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def half_precision(stage, device: torch.device) -> bool:
    """Whether `stage` runs in fp16 on `device`: under CUDA autocast, unless the stage says no (`.amp`, default
    True). Only such a result can overflow where float32 would not, so only it is worth computing again."""
    return device.type == "cuda" and bool(getattr(stage, "amp", True))


def run_stage(name: str, stage, device: torch.device, shape: tuple[int, ...], *inputs: torch.Tensor) -> torch.Tensor:
    """stage(*inputs) under autocast where it allows it, as float32, checked by check_output (a tensor of `shape`
    without NaN or inf; errors name the stage `name`). A half-precision result with NaN or inf (an fp16 overflow) is
    computed again in float32; what is still not finite then raises NonFiniteOutput naming its tiles, as a float32
    result does at once. Each result is checked once."""
    half = half_precision(stage, device)
    with autocast(device, half):
        out = stage(*inputs)
    try:
        return check_output(name, out, shape)
    except NonFiniteOutput:
        if not half:
            raise
    return check_output(name, stage(*inputs), shape)


def release_memory(device: torch.device) -> None:
    """Give cached accelerator memory back after an OOM so the retry starts clean."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings per stage are true on CUDA (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed(seconds: dict[str, float], key: str, device: torch.device) -> Iterator[None]:
    """Add the wall time of the block (device work included) to seconds[key]."""
    synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0
