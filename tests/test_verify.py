"""verify.audit, the library side of `oldphoto verify`: each output a state file lists checked against its recorded
sha256 (links never followed, read in chunks), masters with sources, a run during the audit voiding it; on state
files written here record by record (the CLI tests, test_cli_verify.py, make theirs with a real restore run)."""

import errno
import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from oldphoto import verify
from oldphoto.lock import LOCK_NAME
from oldphoto.state import STATE_FORMAT, STATE_NAME, OutputRecord, Record


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output(out: Path, rel: str, data: bytes, digest: bool = True) -> OutputRecord:
    """Put `data` at OUT/rel and describe it as a record does (with its sha256 and mtime, or neither)."""
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return OutputRecord(rel, st.st_size, sha(data) if digest else None, st.st_mtime_ns if digest else None)


def master(path: Path, data: bytes, digest: bool = True) -> dict:
    """Put `data` at `path` (a scan) and give a record's fields for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return {"source": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": sha(data) if digest else None}


def write_state(out: Path, records: dict[str, Record]) -> None:
    lines = [json.dumps({"oldphoto_state": STATE_FORMAT})] + [rec.to_json(rel) for rel, rec in records.items()]
    (out / STATE_NAME).write_text("\n".join(lines) + "\n")


def record(source: dict, *outputs: OutputRecord) -> Record:
    return Record(**source, fingerprint="f" * 64, outputs=outputs)


def folder(tmp_path: Path) -> tuple[Path, Path]:
    """An output folder holding two records: a.jpg (a.png, sub/a.mask.png) and b.jpg (b.png); (out, scans)."""
    out, scans = tmp_path / "out", tmp_path / "scans"
    out.mkdir()
    write_state(out, {
        "b.jpg": record(master(scans / "b.jpg", b"B-scan"), output(out, "b.png", b"B-restored")),
        "a.jpg": record(master(scans / "a.jpg", b"A-scan"), output(out, "a.png", b"A-restored"),
                        output(out, "sub/a.mask.png", b"A-mask")),
    })
    return out, scans


def statuses(checks) -> dict[str, str]:
    return {c.path: c.status for c in checks}


def test_every_output_is_read_back_in_record_order_and_a_change_named_with_both_digests(tmp_path, capsys):
    out, _ = folder(tmp_path)
    seen = []
    result = verify.audit(out, on_check=lambda check, done, total: seen.append((check.path, done, total)))
    assert [c.path for c in result.outputs] == ["a.png", "sub/a.mask.png", "b.png"]  # records sorted by rel
    assert seen == [("a.png", 1, 3), ("sub/a.mask.png", 2, 3), ("b.png", 3, 3)]
    assert statuses(result.outputs) == {"a.png": "ok", "sub/a.mask.png": "ok", "b.png": "ok"}
    assert result.records == 2 and not result.failed and result.masters == () and not result.sources
    assert all(c.sha256 == c.recorded_sha256 and c.size == c.recorded_size for c in result.outputs)

    (out / "b.png").write_bytes(b"B-rest0red")  # same size, another byte: bit rot, an edit in place
    (out / "sub" / "a.mask.png").unlink()
    result = verify.audit(out)
    assert statuses(result.outputs) == {"a.png": "ok", "sub/a.mask.png": "missing", "b.png": "changed"}
    changed = result.outputs[2]
    assert (changed.recorded_sha256, changed.sha256, changed.size) == (sha(b"B-restored"), sha(b"B-rest0red"), 10)
    assert result.failed and result.counts(result.outputs) == {
        "ok": 1, "changed": 1, "missing": 1, "unreadable": 0, "unverifiable": 0}
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_an_output_replaced_by_a_link_is_changed_even_to_the_same_bytes_and_is_not_read(tmp_path, monkeypatch):
    """A link is not the file that was recorded: one to an identical copy outside OUT must not pass as it."""
    out, _ = folder(tmp_path)
    (tmp_path / "copy.png").write_bytes(b"B-restored")
    (out / "b.png").unlink()
    (out / "b.png").symlink_to(tmp_path / "copy.png")
    (out / "sub").rename(out / "elsewhere")
    (out / "sub").symlink_to("elsewhere")  # a folder on the path, now a link (inside OUT, still not followed)
    read = []
    real = verify._sha256
    monkeypatch.setattr(verify, "_sha256", lambda name, *a, **k: (read.append(name), real(name, *a, **k))[1])
    result = verify.audit(out)
    assert statuses(result.outputs) == {"a.png": "ok", "sub/a.mask.png": "changed", "b.png": "changed"}
    assert [c.reason for c in result.outputs] == ["", "sub is now a symbolic link", "now a symbolic link"]
    assert [c.sha256 for c in result.outputs[1:]] == [None, None] and read == ["a.png"]


def test_a_fifo_or_folder_in_an_outputs_place_is_changed_without_blocking(tmp_path, deadline):
    out, _ = folder(tmp_path)
    (out / "b.png").unlink()
    os.mkfifo(out / "b.png")
    (out / "a.png").unlink()
    (out / "a.png").mkdir()
    with deadline(10, "verify opened a FIFO"):
        result = verify.audit(out)
    assert [(c.status, c.reason) for c in result.outputs] == [
        ("changed", "now a folder"), ("ok", ""), ("changed", "now a FIFO")]


def test_files_are_read_in_chunks(tmp_path, monkeypatch):
    """Outputs can be GBs: never read whole."""
    out = tmp_path / "out"
    out.mkdir()
    data = os.urandom(3 * (1 << 20) + 5)
    write_state(out, {"big.tif": record(master(tmp_path / "big.tif", data), output(out, "big.tif", data))})
    sizes = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: (sizes.append(n), real(fd, n, offset))[1])
    result = verify.audit(out, sources=True)
    assert statuses(result.outputs + result.masters) == {"big.tif": "ok", str(tmp_path / "big.tif"): "ok"}
    assert len(sizes) >= 8 and max(sizes) == 1 << 20


def test_an_unreadable_output_fails_the_audit_with_the_systems_reason(tmp_path, monkeypatch):
    """A read error (a failing disk) is a problem, not a pass, and the audit goes on."""
    out, _ = folder(tmp_path)
    real = os.pread

    def failing(fd, n, offset):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("a.png"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", failing)
    result = verify.audit(out)
    assert [(c.status, c.reason) for c in result.outputs] == [
        ("unreadable", "Input/output error"), ("ok", ""), ("ok", "")]
    assert result.failed


def test_outputs_without_a_digest_are_not_read_and_do_not_fail_but_a_new_size_does(tmp_path, monkeypatch):
    out, scans = tmp_path / "out", tmp_path / "scans"
    out.mkdir()
    write_state(out, {"a.jpg": record(master(scans / "a.jpg", b"A", digest=False),
                                      output(out, "a.png", b"A-restored", digest=False),
                                      output(out, "a.mask.png", b"A-mask", digest=False),
                                      output(out, "gone.png", b"x", digest=False))})
    (out / "a.mask.png").write_bytes(b"A-mask, longer now")
    (out / "gone.png").unlink()
    monkeypatch.setattr(verify, "_sha256", lambda *a, **k: pytest.fail("read a file without a digest"))
    result = verify.audit(out, sources=True)
    assert statuses(result.outputs) == {"a.png": "unverifiable", "a.mask.png": "changed", "gone.png": "missing"}
    assert result.outputs[1].size == 18 and result.masters[0].status == "unverifiable"
    assert result.failed
    (out / "a.mask.png").write_bytes(b"A-mask")
    (out / "gone.png").write_bytes(b"x")
    assert not verify.audit(out, sources=True).failed  # unverifiable alone: the audit passes


def test_a_path_outside_the_output_folder_in_the_state_is_not_followed(tmp_path, monkeypatch):
    out, _ = folder(tmp_path)
    (tmp_path / "secret.png").write_bytes(b"x")
    write_state(out, {"a.jpg": record(master(tmp_path / "a.jpg", b"A"),
                                      OutputRecord("../secret.png", 1, sha(b"x"), None))})
    monkeypatch.setattr(verify, "_sha256", lambda *a, **k: pytest.fail("read outside OUT"))
    (check,) = verify.audit(out).outputs
    assert (check.status, check.reason) == ("unreadable", "the state file names a path outside the output folder")


def test_masters_changed_missing_or_ok(tmp_path):
    out, scans = folder(tmp_path)
    assert verify.audit(out).masters == ()
    (scans / "a.jpg").write_bytes(b"A-scan, retouched")
    (scans / "b.jpg").unlink()
    result = verify.audit(out, sources=True)
    assert [(c.rel, c.path, c.status) for c in result.masters] == [
        ("a.jpg", str(scans / "a.jpg"), "changed"), ("b.jpg", str(scans / "b.jpg"), "missing")]
    assert result.masters[0].sha256 == sha(b"A-scan, retouched") and result.masters[0].size == 17
    assert result.failed and statuses(result.outputs) == {"a.png": "ok", "sub/a.mask.png": "ok", "b.png": "ok"}


def live_lock(out: Path) -> None:
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "started": time.time()}))


def test_a_folder_held_by_a_live_run_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    out, _ = folder(tmp_path)
    live_lock(out)
    monkeypatch.setattr(verify.RunState, "load", lambda *a, **k: pytest.fail("read the state"))
    with pytest.raises(verify.CannotVerify, match=f"^{out}: output folder is in use by pid {os.getpid()} "):
        verify.audit(out)


def test_a_stale_lock_is_left_as_it_is(tmp_path):
    out, _ = folder(tmp_path)
    stale = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 1.0})  # pid reused since
    (out / LOCK_NAME).write_text(stale)
    assert not verify.audit(out).failed
    assert (out / LOCK_NAME).read_text() == stale  # not taken over nor removed: verify writes nothing


@pytest.mark.parametrize("meanwhile", ["lock", "state rewritten"])
def test_a_run_during_the_audit_voids_it(tmp_path, meanwhile):
    """A run that starts (its lock) or starts and ends (its state rewrites) while verify reads: results void."""
    out, _ = folder(tmp_path)

    def run_starts(check, done, total):
        if done == 2:
            if meanwhile == "lock":
                live_lock(out)
            else:
                text = (out / STATE_NAME).read_text()
                (out / STATE_NAME).unlink()
                (out / STATE_NAME).write_text(text)  # compacted: a new file, the same records

    with pytest.raises(verify.CannotVerify, match="verify again"):
        verify.audit(out, on_check=run_starts)


def test_no_state_or_a_damaged_one_cannot_be_verified(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(verify.CannotVerify, match=f"^{out}: holds no oldphoto state"):
        verify.audit(out)
    (out / STATE_NAME).write_text('{"oldphoto_state": 1}\nnot json\n')
    with pytest.raises(verify.CannotVerify, match="line 2 is not valid JSON"):
        verify.audit(out)
    with pytest.raises(verify.CannotVerify, match="cannot open the output folder"):
        verify.audit(tmp_path / "nowhere")


def test_a_torn_last_line_is_said_and_the_records_before_it_are_checked(tmp_path):
    out, _ = folder(tmp_path)
    with open(out / STATE_NAME, "a") as f:
        f.write('{"rel": "c.jpg", "outp')  # a run killed as it appended
    result = verify.audit(out)
    assert result.torn_state and result.to_dict()["torn_state"] is True
    assert [c.status for c in result.outputs] == ["ok", "ok", "ok"]


@pytest.mark.skipif(not getattr(os, "O_NOATIME", 0), reason="O_NOATIME is Linux's")
def test_no_access_time_moves_not_even_the_state_files(tmp_path):
    """relatime moves an access time older than the file's mtime on the next read: set them so, and none may move."""
    out, scans = folder(tmp_path)
    files = [out / STATE_NAME, out / "a.png", out / "sub" / "a.mask.png", out / "b.png", scans / "a.jpg"]
    for path in files:
        st = path.stat()
        os.utime(path, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    before = {path: path.stat().st_atime_ns for path in files}
    assert not verify.audit(out, sources=True).failed
    assert {path: path.stat().st_atime_ns for path in files} == before


def test_a_path_no_file_can_have_in_the_state_is_one_unreadable_check_not_a_crash(tmp_path):
    """A lone surrogate that no byte of a name decodes to (or a NUL), in a damaged or hand-edited state file."""
    out, scans = folder(tmp_path)
    write_state(out, {"a.jpg": record(master(scans / "a.jpg", b"A"), OutputRecord("\ud800.png", 1, sha(b"x"), None),
                                      OutputRecord("nul\0.png", 1, sha(b"x"), None)),
                      "b.jpg": record({**master(scans / "b.jpg", b"B"), "source": "/scans/\ud800.jpg"})})
    result = verify.audit(out, sources=True)
    assert [(c.status, c.reason) for c in result.outputs + result.masters] == [
        ("unreadable", "the state file names a path that no file can have")] * 2 + [
        ("ok", ""), ("unreadable", "the state file names a path that no file can have")]


def test_the_reports_out_dir_is_absolute(tmp_path, monkeypatch):
    """Its outputs' paths are relative to it, and the report is read from elsewhere (cron keeps it apart)."""
    folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = verify.audit(Path("out"))
    assert result.out_dir == Path("out") and result.to_dict()["out_dir"] == str(tmp_path / "out")
