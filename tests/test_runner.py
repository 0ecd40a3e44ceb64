"""A restore batch through the library (runner.Batch, planning): what it tells its Progress, in which order, that it
prints nothing, how it refuses to start, and what it reads of the sources and outputs to plan. The same runs through
the command line, with what they print and their exit codes, are in test_cli.py."""

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest

import oldphoto.state as state_module
from oldphoto import planning, runner
from oldphoto.config import RestoreConfig, TileConfig
from oldphoto.errors import BadArgument, CannotRun, WeightsError
from oldphoto.lock import LOCK_NAME
from oldphoto.state import STATE_NAME, SourceId
from restore_samples import FakeModels, FakePipeline, fake_pipeline, put, real_scans, report_of, scans, tree
from restore_samples import stand_in_models as use_stand_in_models


@pytest.fixture
def fake(monkeypatch) -> FakePipeline:
    return fake_pipeline(monkeypatch)


@pytest.fixture
def stand_in_models(monkeypatch):
    use_stand_in_models(monkeypatch)


class Recorder:
    """A Progress that keeps what it is told, file names for paths."""

    def __init__(self):
        self.calls: list[tuple] = []

    def note(self, msg):
        self.calls.append(("note", msg))

    def error(self, path, reason):
        self.calls.append(("error", Path(path).name, reason))

    def start(self, report, todo, skipped):
        self.calls.append(("start", len(report.results), todo, skipped))

    def event(self, ev):
        self.calls.append(("event", ev.kind, ev.path.name, ev.done))

    def file_done(self, result):
        self.calls.append(("file_done", result.relative, result.status))

    def close(self):
        self.calls.append(("close",))


def restore(inputs, out: Path, progress=None, stop=None, **options) -> runner.Outcome:
    """A run as `oldphoto restore INPUTS --out OUT` with `options` (RestoreConfig's fields) makes it."""
    batch = runner.Batch(list(inputs), out, out / "report.json", RestoreConfig(**options), progress or Recorder(),
                         stop or runner.StopFlag())
    outcome = batch.run()
    assert not batch.stuck()
    return outcome


def clean(outcome: runner.Outcome) -> bool:
    """Whether the run ended as one the CLI exits 0 on: nothing failed, stopped, lost or left unsaved."""
    report = outcome.report
    return (outcome.lost is None and not outcome.unsaved and not report.interrupted
            and not any(r.status == "failed" for r in report.results))


def test_a_run_tells_its_progress_everything_in_order_and_prints_nothing(tmp_path, fake, capfd):
    root, out = scans(tmp_path), tmp_path / "out"
    put(root / "broken.jpg", b"BAD bytes")
    notes = put(tmp_path / "notes.txt")
    progress = Recorder()
    outcome = restore([root, notes], out, progress, jobs=1)  # one file in flight: one order only

    def ran(rel):  # what the fake pipeline reports of a file, then the run once it is recorded
        name = Path(rel).name
        return [("event", "file_start", name, 0), ("event", "tiles", name, 1), ("event", "tiles", name, 2),
                ("event", "file_done", name, 2), ("file_done", rel, "done")]

    assert progress.calls == [
        ("note", f"note: {notes}: not a supported image type (.jpg .jpeg .png .tif .tiff .webp .jp2 .j2k), ignored"),
        ("start", 4, 4, 0), *ran("a.jpg"), *ran("album 1/b.PNG"), *ran("album 1/deep/c.tif"),
        ("error", "broken.jpg", "not a decodable image"), ("file_done", "broken.jpg", "failed"),
        ("close",)]
    assert outcome.lost is None and not outcome.unsaved and not outcome.report.interrupted
    assert [r.status for r in outcome.report.results] == ["done", "done", "done", "failed"]
    assert report_of(out)["files"][3]["error"] == "not a decodable image"  # the report as the Outcome has it
    assert capfd.readouterr() == ("", "")  # the library never prints

    progress = Recorder()
    assert not clean(restore([root], out, progress))  # broken.jpg again
    assert [c for c in progress.calls if c[0] not in ("event", "file_done", "error")] == [("start", 4, 1, 3),
                                                                                          ("close",)]


def test_a_stop_requested_before_the_run_leaves_every_file_pending(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    stop = runner.StopFlag()
    stop.request()
    outcome = restore([root], out, stop=stop)
    assert outcome.report.interrupted and stop.signum is None and fake.calls == []
    assert [r.status for r in outcome.report.results] == ["pending"] * 3
    assert tree(out) == sorted([STATE_NAME, "report.json"])  # lock released


def test_a_run_that_cannot_start_says_why_and_leaves_no_trace(tmp_path, fake, monkeypatch):
    import oldphoto.pipeline as pipeline

    def no_weights(cfg, device):
        raise WeightsError("weights/detector-v1.pt: weights file missing for model 'detector-v1'")

    src, out = put(tmp_path / "a.jpg"), tmp_path / "out"
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadArgument, match="CUDA is not available"):
        restore([src], out, device="cuda")
    with monkeypatch.context() as m:
        m.setattr(pipeline, "load_models", no_weights)
        with pytest.raises(CannotRun, match="weights file missing"):
            restore([src], out)
    assert not out.exists()
    (out / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(CannotRun, match="cannot create or lock the output folder"):
        restore([src], out)
    assert fake.calls == [] and tree(out) == []


def test_where_a_run_writes_is_checked_before_it_starts(tmp_path):
    """The messages keep the paths as they are (a control character included): the CLI escapes them."""
    root = put(tmp_path / "scans" / "a.jpg").parent
    with pytest.raises(BadArgument, match="is the input folder"):
        runner.check_out(root, [root])
    with pytest.raises(BadArgument, match="is inside the input folder"):
        runner.check_out(root / "out\x1b", [root])
    runner.check_out(tmp_path / "out", [root, root / "a.jpg"])
    with pytest.raises(BadArgument) as e:
        runner.check_report(root / "r\n.json", tmp_path / "out", [root])
    assert str(e.value).startswith(f"--report {root / 'r'}\n.json is inside the input folder {root}")
    with pytest.raises(BadArgument, match="give a file name ending in .json"):
        runner.check_report(tmp_path / "r.txt", tmp_path / "out")
    runner.check_report(tmp_path / "new" / "r.json", tmp_path / "out", [root])


def test_the_report_folder_is_tried_by_a_file_made_and_removed_there(tmp_path, monkeypatch):
    """check_report makes a file where the report would go (the nearest folder that exists) and removes it: nothing
    is left behind, no missing folder is made, and a folder that refuses the file (a read-only mount: root passes
    os.access there) is a BadArgument naming why."""
    where = tmp_path / "reports"
    where.mkdir()
    runner.check_report(where / "r.json", tmp_path / "out")
    runner.check_report(where / "new" / "deeper" / "r.json", tmp_path / "out")
    assert list(where.iterdir()) == [] and not (tmp_path / "out").exists()
    made, real_open = [], os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            made.append(Path(path))
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(runner.os, "open", read_only)
    with pytest.raises(BadArgument, match=f"cannot create files in {where} \\(Read-only file system\\)$"):
        runner.check_report(where / "new" / "r.json", tmp_path / "out")
    # tried in the folder that exists, hidden, named as the run's temp files are (removed after a kill)
    assert [p.parent for p in made] == [where] and made[0].name.startswith(".r.json.check.oldphoto-tmp-")
    assert list(where.iterdir()) == []
    monkeypatch.setattr(runner.os, "open", real_open)
    monkeypatch.setattr(runner.os, "unlink", lambda path: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(BadArgument, match="could not be removed \\(I/O error\\)") as e:
        runner.check_report(where / "r.json", tmp_path / "out")
    left = list(where.iterdir())  # named, so that it can be removed by hand
    assert len(left) == 1 and str(e.value).endswith(f": {left[0]}")


def test_the_fingerprints_of_a_source_are_current_and_former(tmp_path):
    """A .jpg source restored with --format keep writes what --format jpeg writes, as earlier versions recorded it."""
    cfg = RestoreConfig()
    fps = planning.Fingerprints(cfg, FakeModels(), FakeModels().describe())
    jpeg = planning.Fingerprints(RestoreConfig(format="jpeg"), FakeModels(), FakeModels().describe())
    assert fps.current(Path("a.jpg")) == jpeg.current(Path("a.jpg"))  # recorded as keep either way
    assert len(fps.former(Path("a.jpg"))) == 1 and fps.former(Path("a.jpg"))[0] != fps.current(Path("a.jpg"))
    assert len(fps.former(Path("a.png"))) == 1 and fps.former(Path("a.PNG")) == ()  # keep writes a.PNG
    quality = planning.Fingerprints(RestoreConfig(jpeg_quality=80), FakeModels(), FakeModels().describe())
    assert quality.current(Path("a.png")) == fps.current(Path("a.png"))  # no JPEG quality in a PNG
    assert quality.current(Path("a.jpg")) != fps.current(Path("a.jpg"))


def test_fingerprints_are_one_runs_compared_and_hashed_as_objects():
    """A frozen dataclass compared the models (stages that are nn.Modules) field by field and could not be hashed
    (its models' description is a dict)."""
    models = FakeModels()
    fps = planning.Fingerprints(RestoreConfig(), models, models.describe())
    assert fps == fps and fps != planning.Fingerprints(RestoreConfig(), models, models.describe())
    assert {fps: 1}[fps] == 1


def test_a_dry_run_gives_its_verdicts_and_writes_nothing(tmp_path, stand_in_models):
    from PIL import Image

    root, _, gray8 = real_scans(tmp_path)
    out = tmp_path / "out"
    cfg = {"tile": TileConfig(size=128, overlap=16), "jobs": 1}
    assert not clean(restore([root], out, **cfg))  # torn.jpg fails
    Image.fromarray(255 - gray8, "L").save(root / "street.png")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    progress = Recorder()
    preview = planning.preview([root], out, RestoreConfig(**cfg), progress)
    assert preview.blocked is None and progress.calls == []  # a file's header is read as its verdict comes
    torn = "cannot read JPEG: Truncated File Read"
    assert [(v.action, v.where, v.why, v.recognised) for v in preview.verdicts] == [
        ("skip", "box 2/portrait.tif", None, False), ("run", "street.png", "source changed", False),
        ("fail", "torn.jpg", torn, False)]
    assert progress.calls == [("error", "torn.jpg", torn)]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------------------------------- reading once

def test_a_source_hashed_while_planning_is_not_read_again_for_its_checksum(tmp_path, fake, monkeypatch):
    root, out = scans(tmp_path), tmp_path / "out"
    assert clean(restore([root], out))
    os.utime(root / "a.jpg", ns=(1, 1))  # touched: planning must read it to know it is the same photo
    hashed: list[str] = []
    real = state_module.read_source_sha256
    monkeypatch.setattr(state_module, "read_source_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    fake.calls.clear()
    assert clean(restore([root], out, mask_dilate=5))
    assert len(fake.calls) == 3 and hashed.count("a.jpg") == 1  # once while planning, not again in the worker
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["a.jpg"]["sha256"] == hashlib.sha256(b"A-photo").hexdigest()


SAVE_MASK = {"tile": TileConfig(size=128, overlap=16), "jobs": 1, "save_mask": True}


def lost_state(tmp_path, missing: str | None = None) -> tuple[Path, Path]:
    """Scans restored with --save-mask, then the state file deleted, and the output `missing`: (root, out)."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    assert clean(restore([root], out, **SAVE_MASK))
    (out / STATE_NAME).unlink()
    if missing is not None:
        (out / missing).unlink()
    return root, out


def test_a_source_whose_outputs_are_recognised_by_provenance_is_read_once_for_its_checksum(tmp_path, stand_in_models,
                                                                                            monkeypatch):
    """After a lost state file, a source redone because a sibling output was missing, or because its outputs' XMP
    shows other settings, was read in full three times for its sha256 (recognising, then checking the outputs
    are its own, then again in the run): once is enough."""
    root, out = lost_state(tmp_path, missing="street.mask.png")
    hashed: list[str] = []
    real = state_module.read_source_sha256
    monkeypatch.setattr(state_module, "read_source_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    assert clean(restore([root], out, **SAVE_MASK))
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "done"]
    assert sorted(hashed) == ["portrait.tif", "street.png"]
    assert report_of(out)["files"][1]["sha256"] == hashlib.sha256((root / "street.png").read_bytes()).hexdigest()
    (out / STATE_NAME).unlink()
    hashed.clear()
    assert clean(restore([root], out, **SAVE_MASK, mask_dilate=3))  # other settings
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "done"] and sorted(hashed) == [
        "portrait.tif", "street.png"]
    assert clean(restore([root], out, **SAVE_MASK, mask_dilate=3))
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]


def test_outputs_recognised_after_a_lost_state_file_have_their_xmp_read_once(tmp_path, stand_in_models,
                                                                               monkeypatch):
    """Recognising the outputs of a lost state file read each output's XMP twice (are they this source's, then are
    they of these settings) and looked up the source's size and time twice: once each is enough."""
    root, out = lost_state(tmp_path)
    read, looked_up = [], []
    real_read, real_of = state_module.read_provenance, SourceId.of.__func__
    monkeypatch.setattr(state_module, "read_provenance", lambda p: read.append(p.name) or real_read(p))
    monkeypatch.setattr(SourceId, "of", classmethod(
        lambda cls, path, with_hash=False: looked_up.append(Path(path).name) or real_of(cls, path, with_hash)))
    outcome = restore([root], out, **SAVE_MASK)
    assert clean(outcome) and [r.status for r in outcome.report.results] == ["skipped", "skipped"]
    assert sorted(read) == ["portrait.mask.png", "portrait.tif", "street.mask.png", "street.png"]
    assert sorted(looked_up) == ["portrait.tif", "street.png"]
    assert all(any("recognised from the provenance" in n for n in r.notes) for r in outcome.report.results)


# ------------------------------------------------------------------------------------------- the output folder lost

def lose(out: Path, moved: Path, how: str) -> None:
    """The run's output folder moved away to `moved`, or deleted."""
    if how == "moved":
        out.rename(moved)
    else:
        shutil.rmtree(out)


def recorded(folder: Path) -> dict[str, list[str]]:
    """The state file of `folder`: its records' outputs, by source."""
    return {rel: [o.path for o in rec.outputs] for rel, rec in state_module.RunState.load(folder).records.items()}


def no_errors(progress: Recorder) -> bool:
    """Nothing was said of a file: a folder lost is the run's one line (the CLI's), not a file's failure."""
    return not [c for c in progress.calls if c[0] == "error"]


def street_scans(tmp_path) -> tuple[Path, Path, Path]:
    """(root, out, moved): real_scans less torn.jpg; box 2/portrait.tif is run first, then street.png."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    return root, tmp_path / "out", tmp_path / "moved"


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_an_output_folder_lost_as_a_files_outputs_go_in(tmp_path, stand_in_models, monkeypatch, how):
    """The folder goes just as street.png's outputs are renamed into place (after the check as they go in). Moved:
    they land whole where the folder now is and are recorded in its state file, which went with it: done. Deleted:
    the renames fail and the file is interrupted with the run, not failed. Both were "failed" ("cannot put ... in
    place"), and a moved folder kept the file's temp files."""
    root, out, moved = street_scans(tmp_path)
    real = os.replace

    def replace(src, dst, **kw):
        if os.path.basename(dst) == "street.png" and out.exists():
            lose(out, moved, how)
        return real(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    progress = Recorder()
    outcome = restore([root], out, progress, **SAVE_MASK)
    assert outcome.lost is not None and outcome.lost.reason.endswith("was deleted or moved away during the run")
    assert no_errors(progress) and not out.exists()
    if how == "moved":
        assert [r.status for r in outcome.report.results] == ["done", "done"]
        assert tree(moved) == sorted([STATE_NAME, "box 2/portrait.mask.png", "box 2/portrait.tif",
                                      "street.mask.png", "street.png"])  # and the run's lock was removed there
        assert recorded(moved) == {"box 2/portrait.tif": ["box 2/portrait.tif", "box 2/portrait.mask.png"],
                                   "street.png": ["street.png", "street.mask.png"]}
    else:
        assert [r.status for r in outcome.report.results] == ["done", "interrupted"]
        assert outcome.report.results[1].outputs == [] and not moved.exists()


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_an_output_folder_lost_between_a_files_outputs_and_its_record(tmp_path, fake, how):
    """The folder goes once b.PNG's outputs are in, before its record. Moved: the record lists them as they are in the
    folder where it now is (the state file went with it): done, recorded. Deleted: there are no outputs left to list,
    and the file is interrupted with the run. Both were "failed" ("written, but cannot be recorded in the state":
    the outputs were looked up by name)."""
    root, out, moved = scans(tmp_path), tmp_path / "out", tmp_path / "moved"
    fake.after_write = lambda src, stop: src.name == "b.PNG" and lose(out, moved, how)
    progress = Recorder()
    outcome = restore([root], out, progress, jobs=1)
    assert outcome.lost is not None and no_errors(progress) and not out.exists()
    statuses = [r.status for r in outcome.report.results]
    if how == "moved":  # c.tif then finds the folder gone as its outputs would go in
        assert statuses == ["done", "done", "interrupted"]
        assert tree(moved) == sorted([STATE_NAME, "a.jpg", "album 1/b.PNG"])
        assert recorded(moved) == {"a.jpg": ["a.jpg"], "album 1/b.PNG": ["album 1/b.PNG"]}
    else:
        assert statuses == ["done", "interrupted", "pending"]


def test_an_output_folder_moved_while_a_files_outputs_are_written_keeps_none_of_its_temp_files(tmp_path,
                                                                                               stand_in_models,
                                                                                               monkeypatch):
    """--save-mask: the folder is moved once street.png is written under its temp name, before its mask: the check
    before the mask stops the file, and its temp file is removed from the folder where it now is (by name it was not
    found, and stayed until a later run there took over the lock)."""
    import oldphoto.pipeline as pipeline

    root, out, moved = street_scans(tmp_path)
    real = pipeline.oio.write

    def write_then_move(path, *args, **kwargs):
        notes = real(path, *args, **kwargs)
        if path.name == "street.png":
            lose(out, moved, "moved")
        return notes

    monkeypatch.setattr(pipeline.oio, "write", write_then_move)
    progress = Recorder()
    outcome = restore([root], out, progress, **SAVE_MASK)
    assert outcome.lost is not None and no_errors(progress) and not out.exists()
    assert [r.status for r in outcome.report.results] == ["done", "interrupted"]
    assert tree(moved) == sorted([STATE_NAME, "box 2/portrait.mask.png", "box 2/portrait.tif"])


def stale_lock(out: Path) -> None:
    """A lock left in `out` by a killed run (a pid no longer alive, on this host)."""
    import json
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started": 1.0}))


@pytest.mark.parametrize("when", ["before", "while"])
def test_an_output_folder_moved_as_a_killed_runs_temp_files_are_removed_keeps_none(tmp_path, fake, monkeypatch,
                                                                                     when):
    """The folder is moved once its stale lock is taken over, before its leftover temp files are removed or while
    they are (as the walk lists a subfolder): they are found and removed through the folder the lock holds, in the
    folder where it now is, and named by their paths as the run was given them (found by name, they stayed in the
    moved folder until a later run there took over the lock); the run then stops on the folder lost."""
    root, out, moved = scans(tmp_path), tmp_path / "out", tmp_path / "moved"
    left = [".a.jpg.oldphoto-tmp-0123abcd", "album 1/.b.PNG.oldphoto-tmp-9f9f9f9f",
            "album 1/deep/.c.tif.oldphoto-tmp-00aa11bb"]
    for rel in left:
        put(out / rel, b"half")
    stale_lock(out)
    if when == "before":
        real = runner.Batch._remove_leftovers

        def move_then_remove(batch, lock):
            lose(out, moved, "moved")
            return real(batch, lock)

        monkeypatch.setattr(runner.Batch, "_remove_leftovers", move_then_remove)
    else:
        real_scandir = os.scandir

        def move_as_listed(folder=None):
            where = os.readlink(f"/proc/self/fd/{folder}") if isinstance(folder, int) else os.fspath(folder)
            if where == str(out / "album 1"):
                lose(out, moved, "moved")
            return real_scandir(folder) if folder is not None else real_scandir()

        monkeypatch.setattr(os, "scandir", move_as_listed)
    progress = Recorder()
    outcome = restore([root], out, progress)
    assert outcome.lost is not None and not out.exists() and no_errors(progress)
    assert not any((moved / rel).exists() for rel in left), tree(moved)
    assert [c[1] for c in progress.calls if c[0] == "note" and "partial file" in c[1]] == [
        f"note: {out / rel}: removed, a partial file left by that run" for rel in left]
    assert not outcome.unsaved


def test_a_folder_that_cannot_be_searched_for_a_killed_runs_temp_files_is_named(tmp_path, fake, monkeypatch):
    """A folder under --out that cannot be listed may hold temp files of the killed run: said, and the run exits as
    one that left a file of its own (os.walk had passed over it in silence)."""
    import errno

    root, out = scans(tmp_path), tmp_path / "out"
    put(out / "album 1" / ".b.PNG.oldphoto-tmp-9f9f9f9f", b"half")
    stale_lock(out)
    real_scandir = os.scandir

    def scandir(folder=None):
        if isinstance(folder, int) and os.readlink(f"/proc/self/fd/{folder}") == str(out / "album 1"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_scandir(folder) if folder is not None else real_scandir()

    monkeypatch.setattr(os, "scandir", scandir)
    progress = Recorder()
    outcome = restore([root], out, progress)
    assert [c for c in progress.calls if c[0] == "error"] == [
        ("error", "album 1", "cannot search this folder for the partial files left by that run (Permission denied)")]
    assert outcome.unsaved and outcome.lost is None and (out / "album 1" / ".b.PNG.oldphoto-tmp-9f9f9f9f").exists()


def test_an_output_folder_moved_just_after_its_check_is_not_made_again(tmp_path, stand_in_models, monkeypatch):
    """The folder is moved right after the check before box 2/portrait.tif's first output: the output's folder is made
    in the folder where it now is, not with its parents under the old name (which made the run's output folder
    again, then called it "replaced")."""
    from oldphoto.lock import OutputLock

    root, out, moved = street_scans(tmp_path)
    real, checks = OutputLock.check_folder, []

    def check_then_move(lock):
        real(lock)
        checks.append(1)
        if len(checks) == 1:
            lose(out, moved, "moved")

    monkeypatch.setattr(OutputLock, "check_folder", check_then_move)
    progress = Recorder()
    outcome = restore([root], out, progress, **SAVE_MASK)
    assert outcome.lost is not None and outcome.lost.reason.endswith("was deleted or moved away during the run")
    assert no_errors(progress) and not out.exists()
    assert [r.status for r in outcome.report.results] == ["interrupted", "pending"]
    assert tree(moved) == [STATE_NAME] and (moved / "box 2").is_dir()


@pytest.mark.parametrize("how", ["moved", "replaced"])
def test_an_output_folder_lost_just_after_the_last_check_gets_its_state_report_and_lock_settled(tmp_path, fake,
                                                                                                monkeypatch, how):
    """Every file done, the folder goes just after the run's last check, as the state is rewritten: the state file,
    the report inside --out and the lock's removal go through the folder the run holds, which ends as if moved after
    the run; a folder made in its place gets none of them. By name, the state could not be rewritten (moved) or was
    rewritten into the new folder (replaced), the report made the folder again or went into the new one, and the
    moved folder kept the lock."""
    root, out, moved = scans(tmp_path), tmp_path / "out", tmp_path / "moved"
    real = state_module.RunState.close

    def close(state, compact=True):
        lose(out, moved, "moved")
        if how == "replaced":
            out.mkdir()
        real(state, compact)

    monkeypatch.setattr(state_module.RunState, "close", close)
    outcome = restore([root], out, jobs=1)
    assert clean(outcome)  # as far as the run can tell, the folder went after it
    assert tree(moved) == sorted([STATE_NAME, "a.jpg", "album 1/b.PNG", "album 1/deep/c.tif", "report.json"])
    assert len((moved / STATE_NAME).read_text().splitlines()) == 4  # rewritten compactly: header and three records
    assert [f["status"] for f in report_of(moved)["files"]] == ["done"] * 3
    assert tree(out) == [] if how == "replaced" else not out.exists()


@pytest.mark.parametrize("how", ["moved", "replaced"])
def test_an_output_folder_lost_before_its_state_is_opened_keeps_its_records(tmp_path, fake, monkeypatch, how):
    """The folder goes just after the lock is taken, before the state file is read: the state is read, as it is
    rewritten and appended to, through the folder locked. Read by name, it was empty (or another folder's) and that
    was written over the records of the folder locked, wherever it had gone."""
    from oldphoto.lock import OutputLock

    root, out, moved = scans(tmp_path), tmp_path / "out", tmp_path / "moved"
    assert clean(restore([root], out))
    before = recorded(out)
    real = OutputLock.acquire

    def acquire_then_lose(lock):
        real(lock)
        lose(out, moved, "moved")
        if how == "replaced":
            out.mkdir()

    monkeypatch.setattr(OutputLock, "acquire", acquire_then_lose)
    progress = Recorder()
    outcome = restore([root], out, progress)
    assert outcome.lost is not None and no_errors(progress)
    assert recorded(moved) == before and len(before) == 3
    assert tree(out) == [] if how == "replaced" else not out.exists()
