"""The shared supervised loop: resume, best checkpoint, non-finite loss, SIGTERM and the time limit; the GAN
loops' StepBook."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from oldphoto.errors import OldPhotoError, SettingsError
from oldphoto.train import loop
from oldphoto.train.loop import StepBook, SupervisedRun
from oldphoto.train.run_files import JsonlLog


@dataclass(frozen=True)
class Cfg:
    steps: int = 6
    val_every: int = 2
    ckpt_minutes: float = 100.0
    max_minutes: float = 0.0
    threads: int = 1


def make(out, cfg=Cfg(), log=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return SupervisedRun(out, model, opt, np.random.default_rng(0), cfg, {"in": 3}, log or (lambda s: None))


def regression_step(run, target=2.0, on_step=None):
    x = torch.ones(4, 3)

    def step():
        if on_step is not None:
            on_step(run.step)
        return {"total": (run.model(x) - target).pow(2).mean()}, {"extra": 1}
    return step


def val_loss(run):
    return lambda step, terms: {"loss": float(terms["total"].detach())}


def lower(m, best):
    return best is None or m["loss"] < best["loss"]


def test_trains_validates_keeps_the_best_and_resumes(tmp_path):
    run = make(tmp_path)
    res = run.train(lambda s: 0.05, regression_step(run), val_loss(run), lower)
    assert res["step"] == 6 and res["best"]["step"] == 6  # the loss keeps falling, so the last is best
    log = run.jlog.read()
    assert [r["step"] for r in log if "val" in r] == [2, 4, 6]
    assert all(r["extra"] == 1 and r["lr"] == 0.05 for r in log if "val" not in r)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["step"] == 6 and best["arch_kwargs"] == {"in": 3} and best["config"]["steps"] == 6

    messages = []
    again = make(tmp_path, Cfg(steps=8), messages.append)
    assert again.resumed and again.step == 6 and "resumed" in messages[0]
    assert torch.equal(again.model.weight, run.model.weight)
    assert [h["from_step"] for h in again.history] == [0, 6]
    assert again.train(lambda s: 0.05, regression_step(again), val_loss(again), lower)["step"] == 8


def test_a_non_finite_loss_stops_before_the_update(tmp_path):
    run = make(tmp_path)
    before = run.model.weight.detach().clone()
    with pytest.raises(FloatingPointError, match="at step 1"):
        run.train(lambda s: 0.1, regression_step(run, target=float("nan")), val_loss(run), lower)
    assert torch.equal(run.model.weight, before)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 0  # the checkpoint still got written


def test_sigterm_finishes_the_step_and_checkpoints(tmp_path):
    run = make(tmp_path, Cfg(steps=100))
    handler = signal.getsignal(signal.SIGTERM)
    messages = []
    run.log = messages.append
    step = regression_step(run, on_step=lambda s: os.kill(os.getpid(), signal.SIGTERM) if s == 2 else None)
    res = run.train(lambda s: 0.1, step, val_loss(run), lower)
    assert res["step"] == 3 and any("SIGTERM" in m for m in messages)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == handler  # the previous handler is back


def test_time_limit(tmp_path):
    run = make(tmp_path, Cfg(steps=100, max_minutes=1e-9))
    assert run.train(lambda s: 0.1, regression_step(run), val_loss(run), lower)["step"] == 0


def test_model_state_reads_weights_files_checkpoints_and_run_folders(tmp_path):
    from oldphoto.train.loop import model_state

    run = make(tmp_path / "run")
    run.train(lambda s: 0.05, regression_step(run), val_loss(run), lower)
    weight = run.model.weight.detach()
    torch.save(run.model.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": run.model.state_dict(), "step": 3}, tmp_path / "gan_best.pt")
    torch.save({"mapping": run.model.state_dict(), "disc": {"x": torch.zeros(1)}}, tmp_path / "ckpt.pt")
    for source in (tmp_path / "run", tmp_path / "run" / "best.pt", tmp_path / "w.pt", tmp_path / "gan_best.pt",
                   tmp_path / "ckpt.pt"):
        assert torch.equal(model_state(source)["weight"], weight), source
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        model_state(tmp_path / "nothing.pt")


def test_init_from_starts_a_fresh_run_but_not_a_resumed_one(tmp_path):
    src = make(tmp_path / "src")
    src.train(lambda s: 0.05, regression_step(src), val_loss(src), lower)
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    fresh = SupervisedRun(tmp_path / "new", model, torch.optim.SGD(model.parameters(), lr=0.1),
                          np.random.default_rng(0), Cfg(), {"in": 3}, lambda s: None, tmp_path / "src")
    assert not fresh.resumed and torch.equal(model.weight, src.model.weight)
    fresh.write_config("linear", data={"photos": 0})
    info = json.loads((tmp_path / "new" / "config.json").read_text())
    assert info["arch"] == "linear" and info["data"] == {"photos": 0} and info["history"][0]["from_step"] == 0
    resumed = SupervisedRun(tmp_path / "src", torch.nn.Linear(3, 1), torch.optim.SGD(model.parameters(), lr=0.1),
                            np.random.default_rng(0), Cfg(), {"in": 3}, lambda s: None, tmp_path / "new")
    assert resumed.resumed and resumed.step == 6  # its own checkpoint wins over init_from


@dataclass(frozen=True)
class BookCfg:
    log_every: int = 2
    val_every: int = 3
    ckpt_minutes: float = 100.0


def test_step_book_averages_logs_and_validates_on_schedule(tmp_path):
    validated, saved = [], []
    jlog = JsonlLog(tmp_path / "log.jsonl")
    book = StepBook(tmp_path, BookCfg(), jlog, lambda: validated.append(1) or {"psnr": len(validated)},
                    lambda: saved.append(1))
    for step, loss in enumerate([1.0, 3.0, 5.0, 7.0], start=1):
        StepBook.check(tmp_path, step - 1, {"loss": loss})
        book.after(step, float(step), 0.1, {"loss": loss})
    assert [r["loss"] for r in jlog.read()] == [2.0, 6.0]  # means over log_every steps
    assert len(validated) == 1 and book.metrics == {"psnr": 1}  # at step 3
    assert book.finish(4) == {"psnr": 2} and saved == [1]  # step 4 was not validated yet: it is now
    for step in (5, 6):
        book.after(step, float(step), 0.1, {"loss": 1.0})
    assert book.finish(6) == {"psnr": 3} and len(validated) == 3  # validated in the loop at 6: not again
    assert StepBook(tmp_path, BookCfg(), jlog, lambda: {"v": 0},
                                                       lambda: None).finish(3) == {"v": 0}
    with pytest.raises(FloatingPointError, match="non-finite loss at step 4"):
        StepBook.check(tmp_path, 4, {"loss": float("nan")})


def test_bf16_is_refused_where_the_cpu_only_emulates_it(monkeypatch):
    monkeypatch.setattr(loop, "native_bf16", lambda: False)
    with pytest.raises(OldPhotoError, match="bf16=true needs a CPU with native bfloat16"):
        loop.check_bf16(True)
    loop.check_bf16(False)  # float32 training is always fine
    monkeypatch.setattr(loop, "native_bf16", lambda: True)
    loop.check_bf16(True)
    assert isinstance(loop.native_bf16(), bool)


def random_step(run):
    """A step that draws its input from the run's numpy generator (so resume must restore it exactly)."""
    def step():
        x = torch.from_numpy(run.rng.normal(size=(4, 3)).astype(np.float32))
        return {"total": (run.model(x) - 2.0).pow(2).mean()}, {}
    return step


def test_ctrl_c_stops_at_a_step_boundary_and_the_resumed_run_is_the_exact_continuation(tmp_path, sigint_default):
    straight = make(tmp_path / "a")
    straight.train(lambda s: 0.1, random_step(straight), val_loss(straight), lower)
    run = make(tmp_path / "b")
    before = signal.getsignal(signal.SIGINT)
    inner = random_step(run)

    def step():
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives inside the step: the step still completes
        return inner()
    with pytest.raises(loop.Stopped, match="stopped by Ctrl-C at step 3"):
        run.train(lambda s: 0.1, step, val_loss(run), lower)
    assert signal.getsignal(signal.SIGINT) == before
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["step"] == 3
    again = make(tmp_path / "b")
    assert again.train(lambda s: 0.1, random_step(again), val_loss(again), lower)["step"] == 6
    assert torch.equal(again.model.weight, straight.model.weight)
    assert [r["step"] for r in again.jlog.read() if "val" not in r] == [1, 2, 3, 4, 5, 6]


def test_a_second_ctrl_c_stops_inside_the_step_and_the_run_resumes_from_its_checkpoint(tmp_path, sigint_default):
    run = make(tmp_path, Cfg(steps=100))
    inner = random_step(run)
    reached = []

    def step():
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # pressed again: no waiting for the end of the step
            reached.append(1)
        return inner()
    with pytest.raises(KeyboardInterrupt):
        run.train(lambda s: 0.1, step, val_loss(run), lower)
    assert reached == [] and signal.getsignal(signal.SIGINT) == signal.default_int_handler
    assert make(tmp_path, Cfg(steps=100)).step == 2  # its last checkpoint (with the validation at step 2)


def test_a_log_line_cut_short_is_dropped_and_not_glued_to_the_next(tmp_path):
    jlog = JsonlLog(tmp_path / "log.jsonl")
    jlog.write({"step": 1, "loss": 1.0})
    with open(jlog.path, "a") as f:
        f.write('{"step": 2, "lo')  # the process was killed while appending
    assert [r["step"] for r in jlog.read()] == [1]
    jlog.keep_through(5)
    jlog.write({"step": 2, "loss": 2.0})
    assert [r["step"] for r in jlog.read()] == [1, 2]
    jlog.path.write_text('{"step": 1}\n{"broken\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        jlog.read()  # damage inside the log is not hidden


def test_resume_with_another_architecture_is_a_one_line_settings_error(tmp_path):
    run = make(tmp_path)
    run.train(lambda s: 0.1, regression_step(run), val_loss(run), lower)
    run.write_config("linear")
    model = torch.nn.Linear(5, 1)
    with pytest.raises(SettingsError, match=r"ckpt.pt: cannot resume with a different architecture \(in changed\)"):
        SupervisedRun(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1), np.random.default_rng(0),
                      Cfg(), {"in": 5}, lambda s: None)


def test_run_folders_that_are_missing_or_of_another_model_are_settings_errors(tmp_path):
    with pytest.raises(SettingsError, match="nowhere: no such run folder"):
        loop.load_run_best(tmp_path / "nowhere", "unet_detector")
    run = make(tmp_path / "run")
    run.write_config("colorizer_unet")
    with pytest.raises(SettingsError, match=r"run: not a unet_detector run \(it trained colorizer_unet\)"):
        loop.load_run_best(tmp_path / "run", "unet_detector")
    with pytest.raises(SettingsError, match="best.pt: no best checkpoint yet"):
        loop.export_best(tmp_path / "run", "col-t", "colorizer_unet", lambda best: {}, tmp_path / "w")


def test_a_resumed_step_book_drops_later_records_and_keeps_the_last_validation(tmp_path):
    jlog = JsonlLog(tmp_path / "log.jsonl")
    for step in (1, 2, 3):
        jlog.write({"step": step, "loss": 1.0})
    jlog.write({"step": 2, "val": {"psnr": 9}})
    jlog.write({"step": 3, "val": {"psnr": 10}})  # after the checkpoint at step 2: that process was killed
    validated = []
    book = StepBook(tmp_path, BookCfg(), jlog, lambda: validated.append(1) or {"psnr": 0}, lambda: None)
    book.resume(2, {"sums": {"loss": 1.0}})
    assert [r["step"] for r in jlog.read()] == [1, 2, 2] and book.sums == {"loss": 1.0}
    assert book.finish(2) == {"psnr": 9} and validated == []  # a finished run is not validated again
