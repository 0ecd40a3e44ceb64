"""`oldphoto verify OUT` on an output folder made by a real restore run (the real pipeline and io, with stand-in
models): problems one line each on stdout, a summary, exit codes for cron, --sources, --report, and nothing written
anywhere, on a read-only folder too."""

import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest

from oldphoto import verify
from oldphoto.lock import LOCK_NAME
from oldphoto.state import STATE_NAME
from restore_samples import real_scans, run
from restore_samples import stand_in_models as use_stand_in_models


@pytest.fixture
def restored(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(scans, out): two scans restored with their masks into out (four outputs, each with its sha256 recorded)."""
    use_stand_in_models(monkeypatch)
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    r = run("restore", root, "--out", out, "--tile", 128, "--overlap", 16, "--jobs", 1, "-q", "--save-mask")
    assert r.exit_code == 0, r.output
    return root, out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (itself included) with what any write, rename or chmod would move; not the access
    time. Holds for root too, whom permission bits do not stop."""
    entries = {}
    for folder, names, files in os.walk(root):
        for name in [".", *names, *files]:
            path = Path(folder) / name
            st = os.lstat(path)
            entries[str(path)] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return entries


def test_all_ok_exits_0_with_a_summary_and_quiet_says_nothing(restored):
    root, out = restored
    r = run("verify", out)
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout == (f"verified 4 output(s) of 2 file(s) in {out}: 4 ok, 0 changed, 0 missing\n"
                        f"every file with a sha256 recorded is as recorded\n")
    r = run("verify", out, "--sources", "-q")
    assert r.exit_code == 0 and r.output == ""


def test_a_flipped_byte_a_longer_file_and_a_deleted_output_are_named_and_exit_1(restored):
    root, out = restored
    data = bytearray((out / "street.png").read_bytes())
    data[100] ^= 1
    (out / "street.png").write_bytes(data)
    with open(out / "box 2" / "portrait.tif", "ab") as f:
        f.write(b"\0")
    (out / "street.mask.png").unlink()
    state = {o["path"]: o for line in (out / STATE_NAME).read_text().splitlines()[1:]
             for o in json.loads(line)["outputs"]}
    r = run("verify", out, "-q")
    assert r.exit_code == 1 and r.stderr == ""
    lines = r.stdout.splitlines()
    tif = state["box 2/portrait.tif"]
    assert lines[0].startswith(f"changed: box 2/portrait.tif (recorded sha256 {tif['sha256'][:12]}..., now ")
    assert lines[0].endswith(f"...; size {tif['size']} -> {tif['size'] + 1} bytes)")
    assert lines[1].startswith(f"changed: street.png (recorded sha256 {state['street.png']['sha256'][:12]}..., now ")
    assert "size" not in lines[1]
    assert lines[2:] == ["missing: street.mask.png"]
    r = run("verify", out)
    assert r.exit_code == 1 and r.stdout.splitlines()[3:] == [
        f"verified 4 output(s) of 2 file(s) in {out}: 1 ok, 2 changed, 1 missing", "3 problem(s) found"]


def strip_digests(out: Path) -> None:
    """The state as an oldphoto before output digests were kept wrote it."""
    lines = (out / STATE_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    for rec in records:
        rec["outputs"] = [{"path": o["path"], "size": o["size"]} for o in rec["outputs"]]
    (out / STATE_NAME).write_text("\n".join(lines[:1] + [json.dumps(rec) for rec in records]) + "\n")


def test_outputs_without_a_digest_are_counted_with_a_hint_and_do_not_fail(restored):
    root, out = restored
    strip_digests(out)
    r = run("verify", out)
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        f"verified 4 output(s) of 2 file(s) in {out}: 0 ok, 0 changed, 0 missing, 4 unverifiable",
        "4 file(s) have no sha256 recorded, so their bytes were not checked (they do not fail the audit); a restore "
        "run with --overwrite (which redoes every file) records them; --list-unverified names them",
        "every file with a sha256 recorded is as recorded"]
    r = run("verify", out, "--list-unverified", "-q")
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        "unverifiable: box 2/portrait.tif", "unverifiable: box 2/portrait.mask.png", "unverifiable: street.png",
        "unverifiable: street.mask.png"]


def test_sources_checks_the_masters(restored):
    root, out = restored
    r = run("verify", out, "--sources")
    assert r.exit_code == 0 and "verified 2 master(s): 2 ok, 0 changed, 0 missing\n" in r.stdout
    with open(root / "street.png", "ab") as f:
        f.write(b"retouched")
    (root / "box 2" / "portrait.tif").unlink()
    r = run("verify", out, "--sources", "-q")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert lines[0] == f"master missing: {root / 'box 2' / 'portrait.tif'}"
    assert lines[1].startswith(f"master changed: {root / 'street.png'} (recorded sha256 ")
    assert len(lines) == 2
    assert run("verify", out).exit_code == 0  # the outputs themselves are as made


def test_a_live_run_is_refused_in_one_line_and_nothing_is_read(restored, monkeypatch):
    root, out = restored
    lock = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    (out / LOCK_NAME).write_text(lock)
    monkeypatch.setattr(verify.RunState, "load", lambda *a, **k: pytest.fail("read the state"))
    monkeypatch.setattr(verify, "_sha256", lambda *a, **k: pytest.fail("read a file"))
    r = run("verify", out, "--sources")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith(f"error: {out}: output folder is in use by pid {os.getpid()} on ")
    assert r.stderr.endswith(": its outputs are being replaced; verify once it is done\n")
    assert r.stderr.count("\n") == 1 and (out / LOCK_NAME).read_text() == lock


def test_a_read_only_folder_is_verified_and_nothing_anywhere_is_touched(restored, tmp_path):
    root, out = restored
    (out / "street.png").write_bytes(b"not the restoration")  # a problem to report, and a report to write
    (tmp_path / "reports").mkdir()
    for folder, _, files in os.walk(out):
        for name in files:
            os.chmod(Path(folder) / name, 0o444)
        os.chmod(folder, 0o555)
    try:
        before = snapshot(tmp_path)
        r = run("verify", out, "--sources")
        assert r.exit_code == 1 and r.stdout.startswith("changed: street.png (") and r.stderr == ""
        assert snapshot(tmp_path) == before
        r = run("verify", out, "--sources", "-q", "--report", tmp_path / "reports" / "audit.json")
        assert r.exit_code == 1
        after = snapshot(tmp_path)
        assert sorted(set(after) - set(before)) == [str(tmp_path / "reports" / "audit.json")]
        assert {k: v for k, v in after.items() if not k.startswith(str(tmp_path / "reports"))} == {
            k: v for k, v in before.items() if not k.startswith(str(tmp_path / "reports"))}
    finally:
        for folder, _, _ in os.walk(out):
            os.chmod(folder, 0o755)


def test_report_holds_each_file_with_both_digests(restored, tmp_path):
    root, out = restored
    (out / "street.mask.png").unlink()
    path = tmp_path / "audits" / "2026-12.json"  # its folder is made
    r = run("verify", out, "--sources", "-q", "--report", path)
    assert r.exit_code == 1 and r.stdout == "missing: street.mask.png\n"
    report = json.loads(path.read_text())
    assert os.listdir(path.parent) == ["2026-12.json"]  # no temp file left
    assert report["out_dir"] == str(out) and report["failed"] is True and report["sources"] is True
    assert report["totals"] == {"outputs": {"ok": 3, "changed": 0, "missing": 1, "unreadable": 0, "unverifiable": 0},
                                "masters": {"ok": 2, "changed": 0, "missing": 0, "unreadable": 0, "unverifiable": 0}}
    by_path = {o["path"]: o for o in report["outputs"]}
    ok = by_path["street.png"]
    assert ok["rel"] == "street.png" and ok["status"] == "ok" and ok["sha256"] == ok["recorded_sha256"]
    assert len(ok["sha256"]) == 64 and ok["size"] == (out / "street.png").stat().st_size
    gone = by_path["street.mask.png"]
    assert (gone["status"], gone["sha256"], gone["size"]) == ("missing", None, None) and gone["recorded_sha256"]
    assert [m["path"] for m in report["masters"]] == [str(root / "box 2" / "portrait.tif"), str(root / "street.png")]


def test_usage_errors_exit_2_and_write_nothing(restored, tmp_path):
    root, out = restored
    before = snapshot(tmp_path)
    r = run("verify", tmp_path / "nowhere")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = run("verify", out, "--report", out / "report.json")
    assert r.exit_code == 2 and "would replace the last restore run's report" in r.stderr
    r = run("verify", out, "--report", tmp_path / "audit.txt")
    assert r.exit_code == 2 and "give a file name ending in .json" in r.stderr
    assert snapshot(tmp_path) == before


def test_no_state_or_a_damaged_one_is_one_error_line(restored, tmp_path):
    root, out = restored
    r = run("verify", root)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == (f"error: {root}: holds no oldphoto state ({STATE_NAME}): not an output folder of oldphoto "
                        f"restore, or its state file was deleted\n")
    (out / STATE_NAME).write_text('{"oldphoto_state": 99}\n')
    r = run("verify", out)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == f"error: {out / STATE_NAME}: unknown state format 99 (expected 1)\n"


def test_ctrl_c_exits_130_with_one_line_and_no_report(restored, tmp_path, monkeypatch):
    root, out = restored

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "_sha256", interrupted)
    r = run("verify", out, "--report", tmp_path / "audit.json")
    assert r.exit_code == 130 and r.stdout == "" and r.stderr == "stopped: interrupted by Ctrl-C\n"
    assert not (tmp_path / "audit.json").exists()


def test_names_with_control_characters_stay_one_line(restored):
    root, out = restored
    lines = (out / STATE_NAME).read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["outputs"][0]["path"] = "new\nline\x1b.png"
    (out / STATE_NAME).write_text("\n".join(lines[:-1] + [json.dumps(rec)]) + "\n")
    r = run("verify", out, "-q")
    assert r.exit_code == 1 and r.stdout == "missing: new\\nline\\x1b.png\n"


def test_a_report_inside_the_output_folder_is_written_where_asked(restored):
    root, out = restored
    r = run("verify", out, "-q", "--report", out / "audits" / "audit.json")
    assert r.exit_code == 0 and r.output == ""
    report = json.loads((out / "audits" / "audit.json").read_text())
    assert report["failed"] is False and report["masters"] is None and len(report["outputs"]) == 4
    assert sorted(os.listdir(out / "audits")) == ["audit.json"]
    r = run("verify", out)  # a restore output folder may hold other files: verify looks at the recorded ones only
    assert r.exit_code == 0


def test_ctrl_c_as_the_report_is_written_exits_130_too_and_leaves_no_file(restored, tmp_path, monkeypatch):
    """Not click's `Aborted!` and exit 1, which cron would take for problems found."""
    root, out = restored
    real = os.fsync

    def interrupted(fd):
        real(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # the report's temp file, written in full
    (tmp_path / "audits").mkdir()
    r = run("verify", out, "-q", "--report", tmp_path / "audits" / "audit.json")
    assert r.exit_code == 130 and r.stdout == "" and r.stderr == "stopped: interrupted by Ctrl-C\n"
    assert os.listdir(tmp_path / "audits") == []


def test_a_report_that_cannot_be_written_names_a_temp_file_it_leaves(restored, tmp_path, monkeypatch):
    """A full disk, then a temp file that cannot be removed either: the folder holds a file verify made, say which."""
    root, out = restored
    real_unlink = os.unlink

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def stuck(name, *args, **kwargs):
        if "oldphoto-tmp" in str(name) and ".check." not in str(name):  # not --report's probe: its check
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(os, "unlink", stuck)
    (tmp_path / "audits").mkdir()
    r = run("verify", out, "-q", "--report", tmp_path / "audits" / "audit.json")
    (left,) = os.listdir(tmp_path / "audits")
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        f"error: {tmp_path / 'audits' / left}: cannot remove this partial file (Input/output error)",
        f"error: {tmp_path / 'audits' / 'audit.json'}: cannot write the report (No space left on device)"]
