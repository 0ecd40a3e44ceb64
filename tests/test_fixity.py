"""Fixity: the sha256 of each output as it went into place, in the state record and in the report's `output_sha256`
(aligned with `outputs`); a skip gives them as recorded, reading no output. The real pipeline and io, with stand-in
models (identity restorer, a bright-pixel detector)."""

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oldphoto.cli import cli
from oldphoto.io import atomic
from oldphoto.state import STATE_NAME, RunState
from restore_samples import CAPTION_SIDECAR, full_disk_recording, real_scans, report_of, run
from restore_samples import stand_in_models as use_stand_in_models

OPTS = ("--tile", 128, "--overlap", 16, "--jobs", 1, "-q")


@pytest.fixture
def stand_in_models(monkeypatch):
    use_stand_in_models(monkeypatch)


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """The staged files read back for their sha256 (one entry each), counted through atomic.sha256_of."""
    calls: list[int] = []
    real = atomic.sha256_of

    def counting(fd: int) -> str:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(atomic, "sha256_of", counting)
    return calls


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scans(tmp_path):
    """real_scans without the torn JPEG, the street scan with an XMP sidecar: (root, out)."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1932"))
    return root, tmp_path / "out"


def digests_of(out) -> dict[str, list]:
    """{relative: [(output path, its sha256 in the report)]} of the last run's report."""
    return {f["relative"]: list(zip(f["outputs"], f["output_sha256"], strict=True)) for f in report_of(out)["files"]}


def recorded(out) -> dict[str, list]:
    """{relative: [(output path, its sha256 in the state record)]}."""
    return {rel: [(str(out / o.path), o.sha256) for o in rec.outputs]
            for rel, rec in RunState.load(out).records.items()}


def assert_on_disk(out):
    """Every output of the report has the sha256 of the file there, and the state records say the same."""
    got = digests_of(out)
    assert got and all(digest == sha(Path(p)) for pairs in got.values() for p, digest in pairs), got
    assert recorded(out) == got


@pytest.mark.parametrize("mode, names", [
    ((), {"street.png": ["street.png", "street.png.xmp"], "box 2/portrait.tif": ["box 2/portrait.tif"]}),
    (("--format", "jpeg", "--save-mask"),
     {"street.png": ["street.jpg", "street.mask.png", "street.jpg.xmp"],
      "box 2/portrait.tif": ["box 2/portrait.jpg", "box 2/portrait.mask.png"]}),
    (("--format", "tiff"),
     {"street.png": ["street.tif", "street.tif.xmp"], "box 2/portrait.tif": ["box 2/portrait.tif"]}),
    (("--only-mask",), {"street.png": ["street.mask.png", "street.overlay.jpg"],
                        "box 2/portrait.tif": ["box 2/portrait.mask.png", "box 2/portrait.overlay.jpg"]}),
])
def test_each_output_kind_has_the_sha256_of_its_file_and_a_skip_reads_none(tmp_path, stand_in_models, hashed, mode,
                                                                           names):
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, *mode).exit_code == 0
    got = digests_of(out)
    assert {rel: [p for p, _ in pairs] for rel, pairs in got.items()} == {
        rel: [str(out / n) for n in ns] for rel, ns in names.items()}
    assert_on_disk(out)
    assert len(hashed) == sum(len(ns) for ns in names.values())  # one read-back per output, none of state or report
    lines = [json.loads(line) for line in (out / STATE_NAME).read_text().splitlines()[1:]]
    assert all(len(o["sha256"]) == 64 for line in lines for o in line["outputs"])

    hashed.clear()
    r = run("restore", root, "--out", out, *OPTS, *mode)  # nothing changed: skipped, the digests as recorded
    assert r.exit_code == 0 and [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert digests_of(out) == got and hashed == []


def test_a_skip_opens_no_output(tmp_path, stand_in_models, monkeypatch):
    """A cron rerun over a collection stays a stat per output: the recorded digests are not checked by reading."""
    import builtins
    import os

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    outputs = {p for pairs in digests_of(out).values() for p, _ in pairs}
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def seen(name, dir_fd=None):
        full = os.path.join(os.fspath(out), os.fspath(name)) if dir_fd is not None else os.fspath(name)
        if os.path.abspath(full) in outputs:
            opened.append(full)

    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: (seen(file) if isinstance(file, (str, os.PathLike))
                                                                  else None, real_open(file, *a, **k))[1])
    monkeypatch.setattr(os, "open", lambda path, flags, *a, **k: (seen(path, k.get("dir_fd")),
                                                                  real_os_open(path, flags, *a, **k))[1])
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"] and opened == []


def test_a_record_of_an_earlier_version_gives_null_and_is_still_skipped(tmp_path, stand_in_models):
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    made = digests_of(out)
    lines = (out / STATE_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for record in records:  # as versions before fixity wrote them: path and size only
        record["outputs"] = [{"path": o["path"], "size": o["size"]} for o in record["outputs"]]
    (out / STATE_NAME).write_text("\n".join([lines[0], *map(json.dumps, records)]) + "\n")

    dry = run("restore", root, "--out", out, *OPTS[:-1], "--dry-run")
    assert dry.stdout.splitlines()[:2] == ["up to date  box 2/portrait.tif", "up to date  street.png"]
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert digests_of(out) == {rel: [(p, None) for p, _ in pairs] for rel, pairs in made.items()}
    # compacted as it was read: still none, the lines as an earlier version wrote them
    assert [json.loads(line)["outputs"] for line in (out / STATE_NAME).read_text().splitlines()[1:]] == \
        [r["outputs"] for r in records]


def test_outputs_recognised_after_a_lost_state_file_give_the_sidecars_digest_and_null_for_images(tmp_path,
                                                                                              stand_in_models,
                                                                                              hashed):
    """An image's XMP is found without reading its pixels: its digest would cost a whole read, and stays unknown; the
    sidecar beside it, read whole for its provenance anyway, gets its own."""
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    (out / STATE_NAME).unlink()
    hashed.clear()
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"] and hashed == []
    street = out / "street.png"
    assert digests_of(out) == {
        "box 2/portrait.tif": [(str(out / "box 2/portrait.tif"), None), (str(out / "box 2/portrait.mask.png"), None)],
        "street.png": [(str(street), None), (str(out / "street.mask.png"), None),
                       (str(out / "street.png.xmp"), sha(out / "street.png.xmp"))]}
    assert recorded(out) == digests_of(out)


def test_a_sidecar_rewritten_alone_gets_its_new_digest_and_the_restoration_keeps_the_recorded_one(tmp_path,
                                                                                                stand_in_models):
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    before = digests_of(out)["street.png"]
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))  # the caption corrected
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    street = report_of(out)["files"][1]
    assert street["sidecar_only"] and street["status"] == "done", street
    after = digests_of(out)["street.png"]
    assert after[:2] == before[:2] and after[2][0] == before[2][0] and after[2][1] != before[2][1]
    assert_on_disk(out)

    # a record of an earlier version: the restoration's digest stays unknown, the new sidecar's is known
    lines = (out / STATE_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for record in records:
        record["outputs"] = [{"path": o["path"], "size": o["size"]} for o in record["outputs"]]
    (out / STATE_NAME).write_text("\n".join([lines[0], *map(json.dumps, records)]) + "\n")
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1934"))
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert report_of(out)["files"][1]["sidecar_only"]
    assert digests_of(out)["street.png"] == [(before[0][0], None), (before[1][0], None),
                                             (before[2][0], sha(out / "street.png.xmp"))]
    assert recorded(out)["street.png"] == digests_of(out)["street.png"]


def test_outputs_written_but_not_recorded_lose_the_recorded_digests_of_the_bytes_they_replaced(tmp_path,
                                                                                             stand_in_models):
    """The outputs went in, their record could not (a full disk): the record kept lists the same paths at the same
    sizes, so a rerun skips the file, and must not give the sha256 of the bytes those outputs replaced."""
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    before = digests_of(out)["street.png"]
    (out / "street.mask.png").unlink()
    with full_disk_recording("street.png"):
        run("restore", root, "--out", out, *OPTS, "--save-mask")
    street = report_of(out)["files"][1]
    assert street["status"] == "failed" and "cannot be recorded" in street["error"], street
    assert [d for _, d in digests_of(out)["street.png"]] == [sha(Path(p)) for p, _ in before]  # as written
    assert all(d != sha(Path(p)) for p, d in before)  # every output was replaced (ids and time in their XMP)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    street = report_of(out)["files"][1]
    assert street["status"] == "skipped" and digests_of(out)["street.png"] == [(p, None) for p, _ in before]
    assert recorded(out)["street.png"] == digests_of(out)["street.png"]


def test_outputs_in_place_when_a_second_ctrl_c_gave_up_on_their_file_lose_the_recorded_digests(tmp_path,
                                                                                             stand_in_models,
                                                                                             monkeypatch):
    """A second Ctrl-C while a file's outputs have gone in, its thread not reporting back in time: `interrupted`,
    unrecorded; the record kept lists the outputs they replaced, and a rerun skipping it gives null, not their
    sha256."""
    import os
    import signal
    import threading
    import time

    import oldphoto.cli as cli_module
    from oldphoto import pipeline, runner

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    before = digests_of(out)["street.png"]
    (out / "street.mask.png").unlink()
    real, released = pipeline._put_in_place, threading.Event()

    def in_then_slow(*args):
        real(*args)
        for _ in range(2):  # Ctrl-C twice: stop, then stop waiting
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        released.wait(10)

    monkeypatch.setattr(pipeline, "_put_in_place", in_then_slow)
    monkeypatch.setattr(runner, "_LET_GO_S", 0.3)
    monkeypatch.setattr(cli_module, "_hard_exit", lambda code: None)  # not os._exit: the test goes on
    r = CliRunner().invoke(cli, [str(a) for a in ("restore", root, "--out", out, *OPTS, "--save-mask")])
    released.set()
    assert r.exit_code == 130 and [f["status"] for f in report_of(out)["files"]] == ["skipped", "interrupted"]
    monkeypatch.setattr(pipeline, "_put_in_place", real)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert digests_of(out)["street.png"] == [(p, None) for p, _ in before]
    assert all(d != sha(Path(p)) for p, d in before)  # the bytes they were recorded with are gone


MODIFIED = "output modified since it was recorded (same size): its sha256 is not given: {}"


def replace_in_place(out, other, names, mtime_ns=None):
    """What a run killed between its renames and its record leaves: each of `names` (relative to `out`) replaced by
    the same output of another run (`other`: the same size, other bytes: ids and time in its XMP), its record as it
    was. mtime_ns: given to them (the next clock tick would do; set, so that it cannot fall in the same one)."""
    import os
    import shutil

    for name in names:
        target, new = out / name, other / name
        assert new.stat().st_size == target.stat().st_size and new.read_bytes() != target.read_bytes()
        staged = target.with_name(target.name + ".new")
        shutil.copyfile(new, staged)
        stamp = mtime_ns or target.stat().st_mtime_ns + 10**9
        os.utime(staged, ns=(stamp, stamp))
        os.replace(staged, target)


def notes_of(out, rel) -> list[str]:
    return next(f["notes"] for f in report_of(out)["files"] if f["relative"] == rel)


def test_outputs_replaced_by_a_killed_run_are_skipped_with_null_and_a_note(tmp_path, stand_in_models):
    """Killed after its renames, before its record: the record lists the same paths at the same sizes with the sha256
    of the bytes replaced. Their new mtime says so without reading them: still skipped (never redone for it), null
    and a note on every run that skips them; the record keeps the digests as written (a redo reads the outputs to
    tell an edit from a touch by them: test_edited_outputs)."""
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert run("restore", root, "--out", tmp_path / "other", *OPTS, "--save-mask").exit_code == 0
    before = digests_of(out)
    names = ["street.png", "street.mask.png", "street.png.xmp"]
    replace_in_place(out, tmp_path / "other", names)

    for _ in range(2):
        assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
        assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
        assert digests_of(out) == {"box 2/portrait.tif": before["box 2/portrait.tif"],  # mtimes as recorded
                                   "street.png": [(p, None) for p, _ in before["street.png"]]}
        assert [n for n in notes_of(out, "street.png") if n.startswith("output modified")] == [
            MODIFIED.format(n) for n in names]
        assert not any(n.startswith("output modified") for n in notes_of(out, "box 2/portrait.tif"))
        assert recorded(out) == before


def test_outputs_a_killed_run_replaced_are_kept_from_a_sidecar_only_job_until_overwrite(tmp_path, stand_in_models):
    """Replaced at their sizes after their record (a run killed between its renames and its record): a file whose
    sidecar is to be rewritten reads them, finds other bytes than recorded and cannot tell them from an edit by hand:
    it fails, nothing written (see Known limits); --overwrite redoes it, with its digests."""
    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS, "--save-mask").exit_code == 0
    assert run("restore", root, "--out", tmp_path / "other", *OPTS, "--save-mask").exit_code == 0
    replace_in_place(out, tmp_path / "other", ["street.png", "street.png.xmp"])
    kept = {p: p.read_bytes() for p in out.glob("street*")}
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))  # the caption corrected

    r = run("restore", root, "--out", out, *OPTS, "--save-mask")
    street = report_of(out)["files"][1]
    assert r.exit_code == 1 and street["status"] == "failed", street
    assert street["error"] == (f"{out / 'street.png'} and {out / 'street.png.xmp'} were changed since oldphoto wrote "
                               f"them and would be replaced (sidecar changed: street.png.xmp): move them away, or use "
                               f"--overwrite")
    assert {p: p.read_bytes() for p in out.glob("street*")} == kept
    assert run("restore", root, "--out", out, *OPTS, "--save-mask", "--overwrite").exit_code == 0
    assert [d for _, d in digests_of(out)["street.png"]] == [sha(Path(p)) for p, _ in digests_of(out)["street.png"]]
    assert "Main street, 1933" in (out / "street.png.xmp").read_text()


def test_an_output_merely_touched_gives_null_too(tmp_path, stand_in_models):
    """Same bytes, new mtime: a skip reads no output, so it cannot tell a touch from a replacement."""
    import os

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    before = digests_of(out)
    os.utime(out / "box 2/portrait.tif", ns=(10**18, 10**18))
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert digests_of(out) == {**before, "box 2/portrait.tif": [(str(out / "box 2/portrait.tif"), None)]}
    assert notes_of(out, "box 2/portrait.tif")[0] == MODIFIED.format("box 2/portrait.tif")


def test_a_record_without_mtimes_keeps_giving_the_recorded_digests(tmp_path, stand_in_models):
    """Records made before mtimes were kept beside the sha256: nothing vouches for or against the digest, which is
    given as recorded, as before (the output touched or not)."""
    import os

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    before = digests_of(out)
    lines = (out / STATE_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for record in records:
        assert all("mtime_ns" in o for o in record["outputs"])
        record["outputs"] = [{k: v for k, v in o.items() if k != "mtime_ns"} for o in record["outputs"]]
    (out / STATE_NAME).write_text("\n".join([lines[0], *map(json.dumps, records)]) + "\n")
    for p, _ in before["street.png"]:
        os.utime(p, ns=(10**18, 10**18))
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert digests_of(out) == before and recorded(out) == before
    assert not any(n.startswith("output modified") for f in report_of(out)["files"] for n in f["notes"])


def test_a_restoration_touched_while_its_sidecar_alone_is_rewritten_loses_its_digest_on_the_next_run(
        tmp_path, stand_in_models, monkeypatch):
    """The sidecar-only job keeps the restoration's digest with the mtime that vouched for it when planned, not the
    one it has as the record is made."""
    import os

    from oldphoto import pipeline

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    restoration = out / "street.png"
    real = pipeline.update_sidecar

    def then_touched(*args, **kw):
        outcome = real(*args, **kw)
        os.utime(restoration, ns=(10**18, 10**18))
        return outcome

    monkeypatch.setattr(pipeline, "update_sidecar", then_touched)
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert report_of(out)["files"][1]["sidecar_only"]
    assert digests_of(out)["street.png"][0] == (str(restoration), sha(restoration))  # as recorded
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert digests_of(out)["street.png"][0] == (str(restoration), None)
    assert MODIFIED.format("street.png") in notes_of(out, "street.png")


def test_a_sidecar_only_job_says_nothing_of_outputs_merely_touched(tmp_path, stand_in_models):
    """The restoration and its sidecar found at other mtimes (the same bytes: touched), then the sidecar rewritten
    alone: both were read to tell a touch from an edit, so the restoration keeps its digest, vouched for at its new
    mtime, and the sidecar gets its new one; no note says a sha256 is not given, then or on the next run's skip."""
    import os

    root, out = scans(tmp_path)
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    before = digests_of(out)["street.png"]
    for name in ("street.png", "street.png.xmp"):
        os.utime(out / name, ns=(10**18, 10**18))
    (root / "street.png.xmp").write_text(CAPTION_SIDECAR.format("Main street, 1933"))  # the caption corrected

    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    street = report_of(out)["files"][1]
    assert street["sidecar_only"] and street["status"] == "done", street
    sidecar = out / "street.png.xmp"
    assert digests_of(out)["street.png"] == [before[0], (str(sidecar), sha(sidecar))]
    assert not any(n.startswith("output modified") for n in street["notes"])
    assert run("restore", root, "--out", out, *OPTS).exit_code == 0
    assert digests_of(out)["street.png"] == [before[0], (str(sidecar), sha(sidecar))]
    assert not any(n.startswith("output modified") for n in notes_of(out, "street.png"))
