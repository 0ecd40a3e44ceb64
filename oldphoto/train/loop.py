"""The supervised training loop shared by the detector, refiner, joint, colorizer and upscaler runs (and the
bookkeeping of the VAE and mapping GAN loops: StepBook).

One place for what every such run does the same way: resume from `out/ckpt.pt` (model, optimiser, random state,
step, best validation, wall time, the history of starts), a wall-clock limit per process, a clean stop on SIGTERM
or Ctrl-C (finish the step, write the checkpoint, return; Ctrl-C then raises Stopped: StopSignals, also used by the
GAN loops), the learning-rate schedule, a finite-loss check before each update, one log.jsonl record per step,
validation every `val_every` steps with the best state kept in `out/best.pt`, and periodic checkpoints. The
model-specific parts come in as functions.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import OldPhotoError, SettingsError
from .run_files import (JsonlLog, atomic_torch_save, atomic_write_json, cosine_lr, export_weights, rng_state,
                        set_rng_state, update_meta)

Terms = dict[str, torch.Tensor]  # loss terms of one step; "total" is minimised


class Stopped(KeyboardInterrupt):
    """Ctrl-C stopped a run at a step boundary after its checkpoint was written; the message says where."""


class StopSignals:
    """While entered (main thread only), SIGTERM and SIGINT only record `signum`, so that a training loop can finish
    its step, write its checkpoint and return; the previous handlers come back on exit. A SIGINT that the process
    ignores (`nohup ... &`) stays ignored. A second Ctrl-C raises KeyboardInterrupt at once (the run resumes from
    its last checkpoint), as a user who presses it again does not want to wait for the step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._before: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                before = signal.getsignal(sig)
                if before is None or (sig == signal.SIGINT and before == signal.SIG_IGN):
                    continue  # not set from Python (cannot be restored), or deliberately ignored
                self._before[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._before.clear()

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt("Ctrl-C pressed again: quit inside the step; the same command resumes from the "
                                    "last checkpoint")
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal's name (SIGTERM, SIGINT), "" before one came."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def raise_if_interrupted(self, out: Path, step: int) -> None:
        """Stopped when the stop came from Ctrl-C (SIGINT): its caller is interrupted, as with a plain Ctrl-C."""
        if self.signum == signal.SIGINT:
            raise Stopped(f"{out}: stopped by Ctrl-C at step {step}, checkpoint written; run the same command "
                          f"to resume")


def check_state_fits(model: torch.nn.Module, state: dict, path: Path, arch_kwargs: dict | None = None) -> None:
    """SettingsError unless `state` has exactly the tensors of `model`, in the same shapes (checked before
    load_state_dict, whose size mismatch is a multi-line RuntimeError). With `arch_kwargs`, the message names the
    arguments that differ from those in the config.json beside `path`."""
    own = model.state_dict()
    differ = sorted(k for k in own.keys() | state.keys()
                    if k not in own or k not in state or tuple(own[k].shape) != tuple(state[k].shape))
    if not differ:
        return
    changed = changed_arch(Path(path).parent, arch_kwargs) if arch_kwargs is not None else []
    what = f"{', '.join(changed)} changed" if changed else f"{len(differ)} tensor(s) differ, e.g. {differ[0]}"
    raise SettingsError(f"{path}: cannot resume with a different architecture ({what}): use the run's settings "
                        f"or a new out=")


def changed_arch(out: Path, arch_kwargs: dict) -> list[str]:
    """The architecture arguments that differ from those in out/config.json (none when it records none)."""
    path = Path(out) / "config.json"
    old = json.loads(path.read_text()).get("arch_kwargs") if path.is_file() else None
    if old is None:
        return []
    return sorted(k for k in old.keys() | arch_kwargs.keys() if old.get(k) != _jsonable(arch_kwargs.get(k)))


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


class SupervisedRun:
    """A resumable run in folder `out` for `model` trained by `opt`; `cfg` is the run's frozen config dataclass
    and must have steps, val_every, ckpt_minutes, max_minutes and threads.

    A fresh run (no ckpt.pt) starts from `init_from` when given (see model_state), its state passed through
    `init_adapt` when given (e.g. to widen an input layer). After construction, `resumed`
    tells whether ckpt.pt was loaded; `history` lists every start of the run ({"from_step", "command", "config"}),
    so a run resumed with other settings stays reproducible.
    """

    def __init__(self, out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
                 cfg: Any, arch_kwargs: dict, log: Callable[[str], None], init_from: str | Path = "",
                 init_adapt: Callable[[dict], dict] | None = None):
        self.out, self.model, self.opt, self.rng, self.cfg = Path(out), model, opt, rng, cfg
        self.arch_kwargs, self.log = dict(arch_kwargs), log
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.out / "ckpt.pt"
        self.step, self.best, self._wall0 = 0, None, 0.0
        self.history: list[dict] = []
        self.jlog = JsonlLog(self.out / "log.jsonl")
        self.resumed = self.ckpt_path.is_file()
        if self.resumed:
            ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
            check_state_fits(model, ck["model"], self.ckpt_path, self.arch_kwargs)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            set_rng_state(rng, ck["rng"])
            self.step, self.best, self._wall0 = ck["step"], ck["best"], ck["wall"]
            self.history = ck.get("history", [])
            self.jlog.keep_through(self.step)  # records of steps done after it (killed)
            log(f"resumed from {self.ckpt_path} at step {self.step}")
        elif init_from:
            state = model_state(init_from)
            model.load_state_dict(init_adapt(state) if init_adapt else state)
            log(f"started from {init_from}")
        self.command = " ".join(sys.argv)  # this process's; best.pt may come from an earlier start
        self.history.append({"from_step": self.step, "command": self.command, "config": asdict(cfg)})
        self._t_start = time.monotonic()

    def write_config(self, arch: str, **extra: Any) -> None:
        """out/config.json: config, architecture, command and history of starts, plus what the model adds (data
        recipe, loss, ...)."""
        atomic_write_json(self.out / "config.json", {
            "config": asdict(self.cfg), "arch": arch, "arch_kwargs": self.arch_kwargs, "command": self.command,
            "history": self.history, **extra})

    def wall(self) -> float:
        """Training wall seconds over all starts of the run."""
        return self._wall0 + time.monotonic() - self._t_start

    def save_checkpoint(self) -> None:
        atomic_torch_save({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                           "rng": rng_state(self.rng), "step": self.step, "best": self.best, "wall": self.wall(),
                           "config": asdict(self.cfg), "history": self.history}, self.ckpt_path)

    def _save_best(self) -> None:
        atomic_torch_save({"model": self.model.state_dict(), "step": self.step, "val": self.best,
                           "config": asdict(self.cfg), "arch_kwargs": self.arch_kwargs, "command": self.command,
                           "history": self.history, "wall": self.wall()}, self.out / "best.pt")

    def train(self, lr_at: Callable[[int], float], step_fn: Callable[[], tuple[Terms, dict]],
              validate: Callable[[int, Terms], dict], better: Callable[[dict, dict | None], bool]) -> dict:
        """Run until cfg.steps (or the time limit, or SIGTERM, or Ctrl-C); returns {"step", "best", "out"}.
        Either signal stops the run after the step in progress, with the checkpoint written; Ctrl-C then raises
        Stopped, so that the caller is interrupted as with a plain Ctrl-C, but at a step boundary.

        step_fn(): one batch forward -> (loss terms with "total", extra fields for the step's log record).
        validate(step, terms): validation metrics (it may log and write sample grids).
        better(metrics, best): whether metrics beat the best so far (best is None at first).
        """
        cfg = self.cfg
        threads_before = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        t_ckpt = time.monotonic()
        self.model.train()
        with StopSignals() as stop:
            try:
                while self.step < cfg.steps:
                    if cfg.max_minutes and time.monotonic() - self._t_start > cfg.max_minutes * 60:
                        self.log(f"time limit reached at step {self.step}")
                        break
                    if stop.signum is not None:
                        self.log(f"stopped by {stop.name} at step {self.step}")
                        break
                    self._step(lr_at, step_fn, validate, better)
                    if time.monotonic() - t_ckpt > cfg.ckpt_minutes * 60:
                        self.save_checkpoint()
                        t_ckpt = time.monotonic()
            finally:
                self.save_checkpoint()
                torch.set_num_threads(threads_before)
        stop.raise_if_interrupted(self.out, self.step)
        return {"step": self.step, "best": self.best, "out": str(self.out)}

    def _step(self, lr_at: Callable[[int], float], step_fn: Callable[[], tuple[Terms, dict]],
              validate: Callable[[int, Terms], dict], better: Callable[[dict, dict | None], bool]) -> None:
        """One optimisation step with its log record, then validation (and best.pt) when due."""
        cfg = self.cfg
        t0 = time.monotonic()
        lr = lr_at(self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        terms, extra = step_fn()
        total = terms["total"]
        if not torch.isfinite(total):  # checked before the update, so the saved state stays sane
            raise FloatingPointError(f"loss is {total.item()} at step {self.step + 1}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.step += 1
        self.jlog.write({"step": self.step, "lr": lr, "sec": round(time.monotonic() - t0, 3), **extra,
                         **{k: round(float(v.detach()), 6) for k, v in terms.items()}})
        if self.step % cfg.val_every == 0 or self.step == cfg.steps:
            m = validate(self.step, terms)
            self.jlog.write({"step": self.step, "val": m})
            if better(m, self.best):
                self.best = dict(m, step=self.step)
                self._save_best()


class StepBook:
    """The per-step bookkeeping of the two-optimiser GAN loops (VAEs, mapping), which drive their own steps:
    a finite-loss check, log.jsonl records averaged over `log_every` steps, validation every `val_every` steps and
    a checkpoint every `ckpt_minutes`; with set_lr and go_on, their schedule (`steps`, a wall-clock budget of
    `minutes`, `lr` decaying to `lr_final`). validation() -> metrics and checkpoint() read the loop's current state;
    the checkpoint should store state() and a resumed run pass it back with its step (see resume).
    """

    def __init__(self, out: Path, cfg, jlog: JsonlLog, validation: Callable[[], dict], checkpoint: Callable[[], None]):
        self.out, self.cfg, self.jlog = out, cfg, jlog
        self.validation, self.checkpoint = validation, checkpoint
        self.sums: dict[str, float] = {}
        self.metrics: dict = {}  # of the latest validation
        self.validated_at: int | None = None  # its step
        self._t_ckpt = time.monotonic()

    def state(self) -> dict:
        """What a checkpoint keeps of the book: the loss sums of the log record in progress."""
        return {"sums": dict(self.sums)}

    def resume(self, step: int, state: dict | None) -> None:
        """Continue at `step` (the checkpoint's) with its state(): log records of later steps are dropped, and the
        latest validation up to the step is taken from the log, so a finished run is not validated again."""
        self.jlog.keep_through(step)
        self.sums = dict((state or {}).get("sums", {}))
        vals = [r for r in self.jlog.read() if "val" in r]
        if vals:
            self.metrics, self.validated_at = vals[-1]["val"], vals[-1]["step"]

    def set_lr(self, elapsed: float, *optimizers: torch.optim.Optimizer) -> float:
        """The lr of the step about to run, set on every group of `optimizers`: cosine from cfg.lr down to
        cfg.lr * cfg.lr_final over the budget of cfg.minutes (`elapsed` seconds of it spent); no budget: cfg.lr."""
        budget = self.cfg.minutes * 60
        lr = cosine_lr(self.cfg.lr, self.cfg.lr_final, elapsed / budget) if budget else self.cfg.lr
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def go_on(self, step: int, elapsed: float) -> bool:
        """Whether another step is due: fewer than cfg.steps done and the budget of cfg.minutes (if any) not spent."""
        budget = self.cfg.minutes * 60
        return step < self.cfg.steps and (budget == 0 or elapsed < budget)

    @staticmethod
    def check(out: Path, step: int, values: dict[str, float]) -> None:
        """Raise FloatingPointError when a loss of step `step` is not finite (before it counts)."""
        if not all(np.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"{out}: non-finite loss at step {step}: {values}")

    def after(self, step: int, elapsed: float, lr: float, values: dict[str, float]) -> None:
        """Book the losses of the step that made the count `step`; log, validate and checkpoint when due."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        if step % self.cfg.log_every == 0:
            self.jlog.write({"step": step, "elapsed": round(elapsed, 1), "lr": lr,
                             **{k: v / self.cfg.log_every for k, v in self.sums.items()}})
            self.sums = {}
        if step % self.cfg.val_every == 0:
            self._validate(step)
        if time.monotonic() - self._t_ckpt > self.cfg.ckpt_minutes * 60:
            self.checkpoint()
            self._t_ckpt = time.monotonic()

    def finish(self, step: int, stopped: bool = False) -> dict:
        """Validate the final state unless that happened already (or the run was `stopped` by a signal: it ends
        at once), write the checkpoint; returns the latest metrics."""
        if not stopped and self.validated_at != step:
            self._validate(step)
        self.checkpoint()
        return self.metrics

    def _validate(self, step: int) -> None:
        self.metrics, self.validated_at = self.validation(), step

    def drive(self, one_step: Callable[[], None], go_on: Callable[[], bool], step_now: Callable[[], int],
              log: Callable[[str], None]) -> dict:
        """Run one_step() while go_on(), until SIGTERM / Ctrl-C (StopSignals: the step in progress finishes), then
        finish(); returns the latest metrics, or raises Stopped after the checkpoint when a signal stopped it."""
        with StopSignals() as stop:
            while go_on() and stop.signum is None:
                one_step()
            if stop.signum is not None:
                log(f"stopped by {stop.name} at step {step_now()}")
            metrics = self.finish(step_now(), stopped=stop.signum is not None)
        stop.raise_if_interrupted(self.out, step_now())
        return metrics


def native_bf16() -> bool:
    """True when this CPU runs bfloat16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_bf16(enabled: bool) -> None:
    """OldPhotoError for bf16 autocast on a CPU that only emulates bfloat16: there a training step takes about 10x
    longer than in float32 (11-15 s against 1.2 s for the detector on an AVX2 machine), so failing beats crawling."""
    if enabled and not native_bf16():
        raise OldPhotoError(f"bf16=true needs a CPU with native bfloat16 (AVX512-BF16 or AMX); this one has "
                         f"{torch.backends.cpu.get_cpu_capability()}: set bf16=false")


def read_run_info(run_dir: str | Path, arch: str, needs: tuple[str, ...] = ()) -> dict:
    """The config.json of training run folder `run_dir`, checked to be a run of `arch` (where config.json records
    its arch) whose config has the fields `needs` (for runs that record no arch); SettingsError otherwise."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise SettingsError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise SettingsError(f"{run_dir}: not a training run folder (no config.json)")
    info = json.loads(path.read_text())
    found, missing = info.get("arch"), [k for k in needs if k not in info.get("config", {})]
    if found not in (None, arch) or missing:
        why = f"it trained {found}" if found not in (None, arch) else f"its config has no {', '.join(missing)}"
        raise SettingsError(f"{run_dir}: not a {arch} run ({why})")
    return info


def best_checkpoint(run_dir: str | Path) -> Path:
    """The run folder's best.pt; SettingsError when the run has not written one yet."""
    path = Path(run_dir) / "best.pt"
    if not path.is_file():
        raise SettingsError(f"{path}: no best checkpoint yet (the run validates every val_every steps)")
    return path


def load_run_best(run_dir: str | Path, arch: str) -> tuple[torch.nn.Module, dict]:
    """The model in a run folder's best.pt (architecture `arch`, in eval mode) and the checkpoint itself."""
    from ..archs import build

    read_run_info(run_dir, arch)
    ck = torch.load(best_checkpoint(run_dir), map_location="cpu", weights_only=True)
    model = build(arch, **ck["arch_kwargs"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def load_run_last(run_dir: str | Path, arch: str) -> tuple[torch.nn.Module, dict]:
    """The model in a run folder's ckpt.pt (its last state; architecture `arch` with the arguments of the run's
    config.json, in eval mode) and that state in best.pt's layout (`last_as_best`)."""
    from ..archs import build

    run_dir = Path(run_dir)
    info = read_run_info(run_dir, arch)
    if not (run_dir / "ckpt.pt").is_file():
        raise SettingsError(f"{run_dir / 'ckpt.pt'}: no checkpoint yet")
    ck = last_as_best(run_dir, info["arch_kwargs"])
    model = build(arch, **ck["arch_kwargs"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def check_record(cfg) -> None:
    """ValueError for record=true with run=: recording stores a result with registered weights (an EvalConfig's
    __post_init__ calls this, so the settings are refused before any work)."""
    if cfg.record and cfg.run:
        raise ValueError("record=true stores the result with registered weights; it cannot be used with run=")


def finish_evaluation(cfg, result: dict, also: dict | None = None) -> dict:
    """Write an evaluation to cfg.out when set; with cfg.record also store it as the registered weights'
    meta "evaluation" (with the eval config), plus the meta keys in `also` (e.g. a tuned threshold)."""
    check_record(cfg)
    if cfg.out:
        atomic_write_json(Path(cfg.out), result)
    if cfg.record:
        update_meta(cfg.weights, "evaluation", {"config": asdict(cfg), **result})
        for key, value in (also or {}).items():
            update_meta(cfg.weights, key, value)
    return result


STATE_KEYS = ("model", "state_dict", "mapping")  # supervised best.pt / GAN runs' best.pt / mapping ckpt.pt


def model_state(source: str | Path) -> dict:
    """The model state dict in a weights file (weights/NAME.pt), a run checkpoint (best.pt, ckpt.pt) or a run
    folder (its best.pt): what a new run starts from, or a checkpoint to compare."""
    source = Path(source)
    path = source / "best.pt" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file or checkpoint")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    for key in STATE_KEYS:
        if isinstance(ck.get(key), dict):
            return ck[key]
    return ck


def last_as_best(run_dir: str | Path, arch_kwargs: dict) -> dict:
    """A supervised run's last state (ckpt.pt) in best.pt's layout, with its latest validation from log.jsonl: for
    publishing the final weights when the run's own (small) validation set picked a worse step than a larger,
    separate selection set did."""
    run_dir = Path(run_dir)
    ck = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    vals = [r for r in JsonlLog(run_dir / "log.jsonl").read() if "val" in r and r["step"] <= ck["step"]]
    return {"model": ck["model"], "step": ck["step"],
            "val": dict(vals[-1]["val"], step=vals[-1]["step"]) if vals else {},
            "config": ck["config"], "arch_kwargs": dict(arch_kwargs), "history": ck.get("history", []),
            "command": (ck.get("history") or [{}])[-1].get("command", ""), "wall": ck["wall"]}


def export_best(run_dir: str | Path, name: str, arch: str, extra: Callable[[dict], dict],
                weights: Path | None = None, best: dict | None = None) -> Path:
    """Publish run_dir/best.pt as weights/<name>.pt with its MANIFEST.json entry; returns the file. Safe while the
    run is training (best.pt and ckpt.pt are replaced atomically).

    The meta records the run's command and every start of it, the config, the data recipe and loss (from
    config.json), seed, step, steps trained, wall seconds and validation metrics, plus `extra(best)`.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, arch)
    if best is None:  # else a checkpoint in best.pt's layout, e.g. last_as_best(run_dir)
        best = torch.load(best_checkpoint(run_dir), map_location="cpu", weights_only=True)
    ckpt = run_dir / "ckpt.pt"
    steps_trained = torch.load(ckpt, map_location="cpu", weights_only=True)["step"] if ckpt.is_file() else best["step"]
    meta = {
        **extra(best),
        "command": best.get("command", info.get("command", "")), "history": best.get("history", []),
        "config": best["config"], "data": info.get("data", {}), "loss": info.get("loss", ""),
        "seed": best["config"]["seed"], "step": best["step"], "steps_trained": steps_trained,
        "wall_seconds": round(best["wall"], 1), "validation": best["val"],
    }
    return export_weights(best["model"], name, arch, best["arch_kwargs"], meta, weights)
