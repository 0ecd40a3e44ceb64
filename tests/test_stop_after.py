"""--stop-after: a run's time budget (runner.Budget). Once spent, no new file is planned or started, the files in
flight finish, the rest are "not_started" (exit 3) and the next run takes them up. The clock is the test's: it moves
when the fake pipeline has been called for a given number of files, so no test waits for real time."""

import functools
import threading
import time
from pathlib import Path

import pytest

from oldphoto import cli, planning, runner
from oldphoto.config import RestoreConfig
from oldphoto.state import STATE_NAME, RunState
from restore_samples import (CAPTION_SIDECAR, FakePipeline, SilentProgress, fake_pipeline, put, real_scans, report_of,
                             run, scans, stand_in_models, tree)


FILES = ["a.jpg", "album 1/b.PNG", "album 1/deep/c.tif"]  # scans()' images, in the order a run takes them


@pytest.fixture(autouse=True)
def hard_exits(monkeypatch):
    """os._exit would end the test session: a run that asks for it returns as usual instead."""
    monkeypatch.setattr("oldphoto.cli._hard_exit", lambda code: None)


@pytest.fixture
def fake(monkeypatch) -> FakePipeline:
    return fake_pipeline(monkeypatch)


def clock_after(fake: FakePipeline, files: int):
    """A monotonic clock at 0 until the fake pipeline has been called for `files` files, then a day later."""
    return lambda: 0.0 if len(fake.calls) < files else 86400.0


def budget_clock(monkeypatch, clock) -> None:
    """The CLI's budgets read `clock` instead of time.monotonic."""
    monkeypatch.setattr(runner, "Budget", functools.partial(runner.Budget, clock=clock))


def records(out: Path) -> list[str]:
    """The files the state file has a record of."""
    return sorted(RunState.load(out, read_only=True).records)


def statuses(out: Path) -> list[str]:
    return [f["status"] for f in report_of(out)["files"]]


@pytest.mark.parametrize("given, seconds", [("90m", 5400), ("5h", 18000), ("1h30m", 5400), ("45s", 45),
                                            ("3600", 3600), ("0", 0), ("2H15M", 8100), ("1h30m15s", 5415)])
def test_a_duration_is_hours_minutes_seconds_or_plain_seconds(given, seconds):
    assert cli._Duration().convert(given, None, None) == seconds


@pytest.mark.parametrize("given", ["", "1.5h", "-5", "5 h", " 5h", "5d", "h", "m30", "30s5m", "١٢"])
def test_anything_else_is_a_usage_error_before_any_work(tmp_path, fake, given):
    root, out = scans(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--stop-after", given)
    assert r.exit_code == 2
    assert "Invalid value for '--stop-after'" in r.stderr and "is not a duration" in r.stderr
    assert fake.calls == [] and not out.exists()


def test_the_budget_is_shown_as_given():
    assert [runner.duration_words(s) for s in (0, 45, 5400, 18000, 3661)] == ["0s", "45s", "1h30m", "5h", "1h1m1s"]


def test_a_budget_of_0_starts_nothing_and_the_report_says_so(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--stop-after", "0")
    assert r.exit_code == cli.EXIT_BUDGET == 3, r.output
    assert fake.calls == []
    d = report_of(out)
    assert d["stop_after"] == 0 and d["budget_reached"] is True and d["interrupted"] is False and d["stopped"] is None
    assert statuses(out) == ["not_started"] * 3
    assert d["totals"]["not_started"] == 3 and d["totals"]["pending"] == 0
    assert "stop_after" not in d["settings"]
    assert tree(out) == sorted([STATE_NAME, "report.json"])  # nothing partial, the lock released
    assert ("note: --stop-after 0s reached while checking which files need work: the rest are not looked at, up to "
            "date or not, and none starts") in r.stderr  # planning stopped at once: no file looked at
    assert r.stdout.rstrip().endswith("stopped at --stop-after 0s: 3 file(s) not started; rerun to continue")
    assert "not started" in r.stdout  # the summary table's row


def test_a_budget_spent_after_the_first_file_leaves_the_rest_to_the_next_run(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    budget_clock(monkeypatch, clock_after(fake, 1))
    r = run("restore", root, "--out", out, "--stop-after", "5h", "--jobs", 1)
    assert r.exit_code == 3, r.output
    assert [p.name for p in fake.calls] == ["a.jpg"]
    assert statuses(out) == ["done", "not_started", "not_started"]
    d = report_of(out)
    assert d["budget_reached"] is True and d["stop_after"] == 18000 and d["interrupted"] is False
    assert d["totals"]["done"] == 1 and d["totals"]["not_started"] == 2
    assert all(f["outputs"] == [] and f["mask_source"] is None for f in d["files"][1:])
    assert records(out) == ["a.jpg"]  # only the file done is recorded
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg"])  # no temp file, no lock
    assert "; stop after 5h" in r.stderr  # the start line
    assert "note: --stop-after 5h reached: no more files start; those in flight finish" in r.stderr
    assert "stopped at --stop-after 5h: 2 file(s) not started; rerun to continue" in r.stdout

    # the next night (a budget not reached): the first file is up to date, the budget is no setting
    fake.calls.clear()
    budget_clock(monkeypatch, lambda: 0.0)
    r = run("restore", root, "--out", out, "--stop-after", "5h")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in fake.calls) == ["b.PNG", "c.tif"]
    assert statuses(out) == ["skipped", "done", "done"]
    assert report_of(out)["budget_reached"] is False and "stopped at" not in r.stdout
    assert records(out) == sorted(FILES)
    fake.calls.clear()
    assert run("restore", root, "--out", out).exit_code == 0 and fake.calls == []  # without one: nothing to redo


def test_the_files_in_flight_when_the_budget_is_spent_finish(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    both_in = threading.Barrier(2, timeout=10)
    asked_to_stop = []

    def in_flight(src, should_stop):  # both files are in the pipeline as the clock passes the budget
        if src.name != "c.tif":
            both_in.wait()
            asked_to_stop.append(should_stop())

    fake.before_write = in_flight
    budget_clock(monkeypatch, clock_after(fake, 2))
    r = run("restore", root, "--out", out, "--stop-after", "30m", "--jobs", 2)
    assert r.exit_code == 3, r.output
    assert asked_to_stop == [False, False]  # the budget never asks a file in flight to stop
    assert statuses(out) == ["done", "done", "not_started"]
    assert records(out) == FILES[:2]
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg", "album 1/b.PNG"])


def test_a_failed_file_decides_the_exit_code(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    put(root / "a.jpg", b"BAD bytes")
    budget_clock(monkeypatch, clock_after(fake, 1))
    r = run("restore", root, "--out", out, "--stop-after", "1h", "--jobs", 1)
    assert r.exit_code == 1, r.output
    assert statuses(out) == ["failed", "not_started", "not_started"]
    assert "stopped at --stop-after 1h: 2 file(s) not started" in r.stdout


def test_a_budget_spent_as_the_last_file_runs_leaves_nothing_and_exits_0(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    budget_clock(monkeypatch, clock_after(fake, 3))
    r = run("restore", root, "--out", out, "--stop-after", "10", "--jobs", 1)
    assert r.exit_code == 0, r.output
    assert statuses(out) == ["done"] * 3 and report_of(out)["budget_reached"] is False
    assert report_of(out)["stop_after"] == 10 and "stopped at" not in r.stdout


def test_quiet_prints_nothing_at_its_budget(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    budget_clock(monkeypatch, clock_after(fake, 1))
    r = run("restore", root, "--out", out, "--stop-after", "90m", "--jobs", 1, "--quiet")
    assert (r.exit_code, r.stdout, r.stderr) == (3, "", "")
    assert statuses(out) == ["done", "not_started", "not_started"]


def test_a_dry_run_ignores_the_budget_and_says_so(tmp_path, fake):
    from PIL import Image

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    for name in ("a.png", "b.png"):  # a dry run reads the headers
        Image.new("L", (8, 8)).save(root / name)
    r = run("restore", root, "--out", out, "--stop-after", "0", "--dry-run")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("restore     a.png  (new)\nrestore     b.png  (new)\ndry run: 2 to restore")
    assert "note: --dry-run ignores --stop-after 0s: it lists all the work" in r.stderr
    assert not out.exists()
    r = run("restore", root, "--out", out, "--stop-after", "0", "--dry-run", "--quiet")
    assert r.exit_code == 0 and r.stderr == ""


class Noted(SilentProgress):
    """A Progress that keeps the notes and sets `said` on the budget's."""

    def __init__(self):
        self.notes: list[str] = []
        self.said = threading.Event()

    def note(self, msg):
        self.notes.append(msg)
        if "--stop-after" in msg:
            self.said.set()


def test_a_signal_after_the_budget_abandons_the_files_in_flight_and_keeps_the_rest_not_started(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    progress, stop = Noted(), runner.StopFlag()
    both_in = threading.Barrier(2, timeout=10)

    def hold_b(src, should_stop):
        both_in.wait()
        if src.name == "b.PNG":  # still in flight once a.jpg is done and the budget found spent: then a SIGTERM
            assert progress.said.wait(10)
            stop.request()
            if should_stop():
                raise KeyboardInterrupt("stop requested")  # what the real pipeline does

    fake.before_write = hold_b
    batch = runner.Batch([root], out, out / "report.json", RestoreConfig(jobs=2), progress, stop,
                         budget=runner.Budget(60, clock_after(fake, 2)))
    report = batch.run().report
    assert not batch.stuck()
    assert [r.status for r in report.results] == ["done", "interrupted", "not_started"]
    assert report.interrupted and report.budget_reached
    assert report.totals()["not_started"] == 1 and report.totals()["pending"] == 0
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg"])


def test_a_signal_before_the_budget_leaves_the_rest_pending(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    stop = runner.StopFlag()
    stop.request()
    report = runner.Batch([root], out, out / "report.json", RestoreConfig(), Noted(), stop,
                          budget=runner.Budget(0)).run().report
    assert [r.status for r in report.results] == ["pending"] * 3
    assert report.interrupted and not report.budget_reached and report.stop_after == 0


def test_a_budget_is_0_seconds_or_more_counted_from_its_start():
    now = [100.0]
    budget = runner.Budget(5, lambda: now[0])
    with pytest.raises(RuntimeError):
        budget.spent()
    budget.start()
    now[0] = 104.9
    assert not budget.spent()
    now[0] = 105.0
    assert budget.spent()
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError):
            runner.Budget(bad)


def test_the_budget_counts_the_hours_the_machine_slept(monkeypatch):
    """A night's window passes while the machine is suspended: the budget's own clock says so (time.monotonic, which
    stops then on Linux, would let a run start new files hours past the window)."""
    if not hasattr(time, "CLOCK_BOOTTIME"):
        pytest.skip("no clock that counts suspended time here")
    real, slept = time.clock_gettime, [0.0]
    monkeypatch.setattr(time, "clock_gettime",
                        lambda clock: real(clock) + (slept[0] if clock == time.CLOCK_BOOTTIME else 0.0))
    budget = runner.Budget(3600)
    budget.start()
    assert not budget.spent()
    slept[0] = 2 * 3600.0  # suspended two hours: time.monotonic did not move
    assert budget.spent()


def test_a_sidecar_only_file_the_budget_left_describes_no_restoration(tmp_path, monkeypatch):
    """Planning says where a sidecar-only job's mask came from (its record); left not_started by the budget, the file
    restored nothing in this run: its mask_source is null, as for any file not reached."""
    stand_in_models(monkeypatch)
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1932"))
    out, opts = tmp_path / "out", ("--tile", 128, "--overlap", 16, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))  # a sidecar-only job now

    planned = threading.Event()
    real_plan = planning.plan

    def plan(*args, **kwargs):
        jobs = real_plan(*args, **kwargs)
        planned.set()
        return jobs

    monkeypatch.setattr(planning, "plan", plan)
    budget_clock(monkeypatch, lambda: 86400.0 if planned.is_set() else 0.0)  # spent once the plan is made
    r = run("restore", root, "--out", out, *opts, "--stop-after", "1h")
    assert r.exit_code == 3, r.output
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["street.png"]["status"] == "not_started" and files["street.png"]["sidecar_only"] is False
    assert files["street.png"]["mask_source"] is None and files["street.png"]["outputs"] == []
    assert files["box 2/portrait.tif"]["status"] == "skipped"
    assert files["box 2/portrait.tif"]["mask_source"] == "detector"
    assert "Main street, 1932" in (out / "street.png.xmp").read_text()  # not rewritten


def test_a_budget_spent_while_checking_leaves_even_up_to_date_files_not_started(tmp_path, fake, monkeypatch):
    """Planning may read every source (a lost state file, sources copied with new mtimes): the budget stops it too,
    and the files it did not look at are not_started, up to date or not (exit 3). Looked at within the budget, an
    up-to-date collection exits 0."""
    root, out = scans(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    fake.calls.clear()
    looked = []
    real_decide = RunState.decide

    def decide(self, rel, *args, **kwargs):
        looked.append(rel)
        return real_decide(self, rel, *args, **kwargs)

    monkeypatch.setattr(RunState, "decide", decide)
    budget_clock(monkeypatch, lambda: 86400.0 if looked else 0.0)  # spent once the first file is looked at
    r = run("restore", root, "--out", out, "--stop-after", "1h")
    assert r.exit_code == 3, r.output
    assert looked == ["a.jpg"] and fake.calls == []
    assert statuses(out) == ["skipped", "not_started", "not_started"]
    assert "reached while checking which files need work: the rest are not looked at, up to date or not" in r.stderr
    assert records(out) == sorted(FILES)  # nothing lost

    looked.clear()
    budget_clock(monkeypatch, lambda: 0.0)
    r = run("restore", root, "--out", out, "--stop-after", "1h")
    assert r.exit_code == 0 and statuses(out) == ["skipped"] * 3 and fake.calls == []
    assert report_of(out)["budget_reached"] is False and "not started" not in r.stdout


def test_a_file_left_unstarted_is_not_said_to_be_redone(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    fake.calls.clear()
    budget_clock(monkeypatch, clock_after(fake, 1))  # settings changed: all three would be redone
    r = run("restore", root, "--out", out, "--mask-dilate", 3, "--stop-after", "5h", "--jobs", 1)
    assert r.exit_code == 3, r.output
    files = report_of(out)["files"]
    assert [f["status"] for f in files] == ["done", "not_started", "not_started"]
    assert files[0]["notes"][0] == "redone: settings changed"  # the file that ran says why
    assert not any(n.startswith("redone") for f in files[1:] for n in f["notes"])


@pytest.mark.parametrize("given", ["9" * 5000, "9" * 4299 + "h", "9223372036854775808", "2562047788015216h"])
def test_a_duration_too_long_for_a_64_bit_integer_is_a_usage_error(tmp_path, fake, given):
    # 5000 digits were more than Python reads into an integer, 4299 hours' seconds more than json writes: tracebacks
    root, out = scans(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--stop-after", given)
    assert r.exit_code == 2 and "is too long a duration: at most 9223372036854775807 seconds" in r.stderr
    assert fake.calls == [] and not out.exists()
    assert cli._Duration().convert("9223372036854775807", None, None) == 2 ** 63 - 1
