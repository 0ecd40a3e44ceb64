import errno
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import replace

import pytest

from oldphoto.config import RestoreConfig
from oldphoto.io.sidecar import SidecarId
from oldphoto.state import STATE_NAME, EditedOutput, Record, RunState, SourceId, StateError, fingerprint

MODELS = {"restorer": {"name": "r-v1", "sha256": "ab" * 32}}


def setup_done(tmp_path, content=b"photo-1"):
    """A source, its output and an open state that recorded it with the default settings."""
    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"restored")
    fp = fingerprint(RestoreConfig().output_settings(), MODELS)
    state = RunState.open(out)
    sid = SourceId.of(src, with_hash=True)
    state.record("a.jpg", Record(str(src), sid.size, sid.mtime_ns, sid.sha256, fp,
                                 state.outputs_record([out / "a.jpg"]), 40, 30, 0.0012, 1.5, "t"))
    return src, out, fp, state


def test_fingerprint_follows_output_settings_and_models():
    base = fingerprint(RestoreConfig().output_settings(), MODELS)
    assert base == fingerprint(RestoreConfig(jobs=7, device="cpu", overwrite=True).output_settings(), MODELS)
    assert base != fingerprint(RestoreConfig(jpeg_quality=80).output_settings(), MODELS)
    # the mask dilation counts as resolved: the mode's default and the same value given explicitly are one setting
    assert base == fingerprint(RestoreConfig(mask_dilate=1).output_settings(), MODELS)
    assert base != fingerprint(RestoreConfig(mask_dilate=0).output_settings(), MODELS)
    only = RestoreConfig(only_mask=True).output_settings()
    assert only == RestoreConfig(only_mask=True, mask_dilate=0).output_settings() and only["mask_dilate"] == 0
    assert base != fingerprint(RestoreConfig().output_settings(), {"restorer": {"name": "r-v1", "sha256": "cd" * 32}})


def test_unchanged_file_is_skipped_after_reload(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    state.close()
    again = RunState.load(out)
    d = again.decide("a.jpg", src, fp)
    assert (d.action, d.reason, d.refreshed) == ("skip", "up to date", None)
    record = again.records["a.jpg"]
    assert record.width == 40 and record.sha256 == hashlib.sha256(b"photo-1").hexdigest()
    assert again.owner_of(out / "a.jpg") == "a.jpg" and again.owner_of(out / "b.jpg") is None
    assert RunState.load(out).decide("b.jpg", src, fp).reason == "new"


def test_record_is_durable_before_close(tmp_path):
    src, out, fp, _state = setup_done(tmp_path)  # never closed: as if the run had crashed
    assert RunState.load(out).decide("a.jpg", src, fp).action == "skip"


def test_changed_source_settings_or_missing_outputs_are_redone(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    other_fp = fingerprint(RestoreConfig(format="png").output_settings(), MODELS)
    assert state.decide("a.jpg", src, other_fp).reason == "settings changed"

    (out / "a.jpg").unlink()
    assert state.decide("a.jpg", src, fp).reason == "output missing: a.jpg"
    (out / "a.jpg").write_bytes(b"restored")

    src.write_bytes(b"photo-2")  # same size, new content
    os.utime(src, ns=(1, 1))
    assert state.decide("a.jpg", src, fp).reason == "source changed"
    src.write_bytes(b"a longer photo")
    assert state.decide("a.jpg", src, fp).reason == "source changed"


def test_an_output_edited_since_it_was_written_is_kept_and_never_redone_over(tmp_path):
    """Another size than recorded: human work (a corrected mask, a retouched photo). Up to date otherwise, the file is
    skipped with the output kept and named (`kept`), its record left as written (no `refreshed`: said again next run);
    to be redone for any reason, the file fails in one line naming the output, the reason and the remedy."""
    src, out, fp, state = setup_done(tmp_path)
    (out / "a.jpg").write_bytes(b"edited by hand, longer")
    d = state.decide("a.jpg", src, fp)
    assert (d.action, d.reason, d.refreshed, d.kept) == ("skip", "up to date", None, (EditedOutput("a.jpg", 22, 8),))
    other_fp = fingerprint(RestoreConfig(format="png").output_settings(), MODELS)
    d = state.decide("a.jpg", src, other_fp)
    assert (d.action, d.reason) == ("conflict", f"{out / 'a.jpg'} was changed since oldphoto wrote it and would be "
                                                f"replaced (settings changed): move it away, or use --overwrite")
    src.write_bytes(b"a longer photo")
    assert state.decide("a.jpg", src, fp).reason.endswith("would be replaced (source changed): move it away, or use "
                                                          "--overwrite")
    (out / "a.jpg").unlink()  # moved away: nothing to lose, made again
    assert state.decide("a.jpg", src, fp).reason == "source changed"


def test_an_output_edited_at_its_size_is_told_by_its_sha256_only_when_the_file_is_to_be_redone(tmp_path):
    """Same size, another mtime: a skip reads nothing (the digest merely not vouched for, as before); a file to be
    redone has the output read, and fails when its bytes are not those recorded. The same bytes touched, or no digest
    or mtime recorded, are redone as ever."""
    src, out, fp, state = setup_done(tmp_path)
    digest = hashlib.sha256(b"restored").hexdigest()
    state.record("a.jpg", replace(state.records["a.jpg"],
                                  outputs=state.outputs_record([out / "a.jpg"], {out / "a.jpg": digest})))
    other_fp = fingerprint(RestoreConfig(format="png").output_settings(), MODELS)
    (out / "a.jpg").write_bytes(b"RESTORED")  # retouched in place, same size
    os.utime(out / "a.jpg", ns=(10**18, 10**18))
    d = state.decide("a.jpg", src, fp)
    assert (d.action, d.kept, d.unvouched, d.refreshed) == ("skip", (), ("a.jpg",), None)
    d = state.decide("a.jpg", src, other_fp)
    assert d.action == "conflict" and d.kept == (EditedOutput("a.jpg", 8, 8),)
    assert "(settings changed): move it away" in d.reason
    (out / "a.jpg").write_bytes(b"restored")  # the very bytes again, at a new mtime: a touch
    os.utime(out / "a.jpg", ns=(10**18, 10**18))
    assert (state.decide("a.jpg", src, other_fp).action, state.decide("a.jpg", src, other_fp).reason) == (
        "run", "settings changed")
    (out / "a.jpg").write_bytes(b"RESTORED")  # edited, its mtime set back: not told (nothing is read for a stat alike)
    os.utime(out / "a.jpg", ns=(state.records["a.jpg"].outputs[0].mtime_ns,) * 2)
    assert state.decide("a.jpg", src, other_fp).action == "run"
    state.record("a.jpg", replace(state.records["a.jpg"], outputs=(replace(state.records["a.jpg"].outputs[0],
                                                                           mtime_ns=None),)))
    os.utime(out / "a.jpg", ns=(10**18, 10**18))  # no mtime recorded (an older oldphoto's record): as before
    assert state.decide("a.jpg", src, other_fp).action == "run"


def test_touched_source_with_same_content_is_skipped_and_refreshed(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    os.utime(src, ns=(10**18, 10**18))
    d = state.decide("a.jpg", src, fp)
    assert d.action == "skip" and d.refreshed.mtime_ns == 10**18


def test_same_relative_path_from_another_source_is_a_conflict(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    other = tmp_path / "other" / "a.jpg"
    other.parent.mkdir()
    other.write_bytes(b"a different photo")
    d = state.decide("a.jpg", other, fp)
    assert d.action == "conflict" and str(src) in d.reason
    copy = tmp_path / "copy" / "a.jpg"  # the same photo, moved: its content identifies it
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    d = state.decide("a.jpg", copy, fp)
    assert d.action == "skip" and d.refreshed.source == str(copy)


def test_another_source_with_the_same_size_and_mtime_is_checked_by_content(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    st = src.stat()
    other = tmp_path / "other" / "a.jpg"  # same size and mtime (a `cp -p` of another scan), other content
    other.parent.mkdir()
    other.write_bytes(b"photo-2")
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    d = state.decide("a.jpg", other, fp)
    assert d.action == "conflict" and str(src) in d.reason
    copy = tmp_path / "copy" / "a.jpg"  # the same photo copied with its mtime: skipped, the record follows it
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    d = state.decide("a.jpg", copy, fp)
    assert d.action == "skip" and d.refreshed.source == str(copy)


def test_outputs_of_earlier_settings_are_kept_in_former_and_still_owned(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    rec = state.records["a.jpg"]
    (out / "a.png").write_bytes(b"restored as png")
    state.record("a.jpg", replace(rec, outputs=state.outputs_record([out / "a.png"])))
    assert state.records["a.jpg"].former == ("a.jpg",)
    assert state.owner_of(out / "a.jpg") == "a.jpg" and state.owner_of(out / "a.png") == "a.jpg"
    state.close()
    again = RunState.open(out)
    assert again.records["a.jpg"].former == ("a.jpg",) and again.owner_of(out / "a.jpg") == "a.jpg"
    (out / "a.jpg").unlink()  # gone: no longer remembered, so a file put there later is nobody's
    again.record("a.jpg", replace(rec, outputs=again.outputs_record([out / "a.png"])))
    assert again.records["a.jpg"].former == ()
    again.close()
    # a state file written before `former` existed loads with none
    lines = (out / STATE_NAME).read_text().splitlines()
    d = json.loads(lines[1])
    del d["former"]
    (out / STATE_NAME).write_text(lines[0] + "\n" + json.dumps(d) + "\n")
    assert RunState.load(out).records["a.jpg"].former == ()


def test_a_record_keeps_the_notes_of_the_run_that_made_its_outputs_and_none_costs_nothing(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    rec = state.records["a.jpg"]
    assert rec.notes == () and "notes" not in json.loads(rec.to_json("a.jpg"))  # compact: absent when empty
    state.record("a.jpg", replace(rec, notes=("alpha dropped: JPEG has no transparency",)))
    state.close()
    assert RunState.load(out).records["a.jpg"].notes == ("alpha dropped: JPEG has no transparency",)


def test_torn_last_line_is_dropped_and_corruption_is_refused(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    state.close()
    path = out / STATE_NAME
    good = path.read_text()
    path.write_text(good + '{"rel": "b.jpg", "sou')  # the append of b.jpg never completed
    st = RunState.load(out)
    assert st.dropped_torn_line and set(st.records) == {"a.jpg"}

    path.write_text(good + "not json\n" + good.splitlines()[1] + "\n")
    with pytest.raises(StateError, match=f"{STATE_NAME}: line 3 is not valid JSON"):
        RunState.load(out)
    path.write_text('{"oldphoto_state": 99}\n')
    with pytest.raises(StateError, match="unknown state format"):
        RunState.load(out)


def test_later_lines_win_and_compaction_keeps_one_line_each(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    rec = state.records["a.jpg"]
    for w in (41, 42, 43):
        state.record("a.jpg", Record(**{**rec.__dict__, "width": w}))
    assert len((out / STATE_NAME).read_text().splitlines()) == 5  # header + 4 appends
    assert RunState.load(out).records["a.jpg"].width == 43
    state.close()
    lines = (out / STATE_NAME).read_text().splitlines()
    assert len(lines) == 2 and '"width": 43' in lines[1]
    assert stat.S_IMODE((out / STATE_NAME).stat().st_mode) == 0o666 & ~current_umask()
    assert [p.name for p in out.iterdir() if "tmp" in p.name] == []


def test_a_state_file_that_cannot_be_read_is_a_one_line_state_error(tmp_path):
    (tmp_path / STATE_NAME).mkdir()
    with pytest.raises(StateError, match=r"cannot read the state file \(Is a directory\)"):
        RunState.load(tmp_path)
    (tmp_path / STATE_NAME).rmdir()
    (tmp_path / STATE_NAME).write_bytes(b'{"oldphoto_state": 1}\n\xff\xfe\n')
    with pytest.raises(StateError, match="cannot read the state file"):
        RunState.load(tmp_path)


def test_record_needs_an_open_state(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    loaded = RunState.load(out)
    with pytest.raises(RuntimeError, match="not opened"):
        loaded.record("a.jpg", state.records["a.jpg"])


def test_a_read_only_state_records_in_memory_and_writes_nothing(tmp_path):
    src, out, fp, state = setup_done(tmp_path)
    state.close()
    before = (state.path.read_bytes(), state.path.stat().st_mtime_ns)
    dry = RunState.load(out, read_only=True)
    dry.record("b.jpg", replace(state.records["a.jpg"], outputs=()))
    dry.close()
    assert "b.jpg" in dry.records and (state.path.read_bytes(), state.path.stat().st_mtime_ns) == before
    assert "b.jpg" not in RunState.load(out).records


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_append_that_fails_halfway_leaves_no_partial_line(tmp_path, monkeypatch):
    src, out, fp, state = setup_done(tmp_path)
    (out / "b.jpg").write_bytes(b"restored")
    rec = replace(state.records["a.jpg"], outputs=state.outputs_record([out / "b.jpg"]))
    real_write = os.write

    def disk_fills(fd, data):  # a short write, then no space, as a file system that fills mid-line does
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_fills)
    with pytest.raises(OSError, match="No space left") as e:
        state.record("b.jpg", rec)
    monkeypatch.setattr(os, "write", real_write)
    assert e.value.filename == str(out / STATE_NAME) and "b.jpg" not in state.records
    state.record("c.jpg", replace(rec, outputs=()))  # space freed: the next record follows a whole line
    again = RunState.load(out)
    assert sorted(again.records) == ["a.jpg", "c.jpg"] and not again.dropped_torn_line


def test_a_record_from_before_sidecars_were_carried_stays_current_for_a_source_without_one(tmp_path):
    """Upgrading must not redo a whole collection: a record line as earlier versions wrote it (no "sidecar" key) is
    up to date for a source with no sidecar, and a record of such a source is written as before."""
    src, out, fp, state = setup_done(tmp_path)
    state.close()
    line = (out / STATE_NAME).read_text().splitlines()[1]
    assert "sidecar" not in json.loads(line)  # unchanged lines for sources without one
    again = RunState.load(out)
    assert again.decide("a.jpg", src, fp).action == "skip"
    assert again.decide("a.jpg", src, fp, sidecar=None).reason == "up to date"
    # a sidecar made beside the scan since is carried by redoing it
    sidecar = src.with_name("a.jpg.xmp")
    sidecar.write_bytes(b"<x:xmpmeta/>")
    assert again.decide("a.jpg", src, fp, sidecar=sidecar).reason == "sidecar added: a.jpg.xmp"


def sidecar_done(tmp_path):
    """setup_done, with the source's sidecar recorded as the pipeline reads it."""
    src, out, fp, state = setup_done(tmp_path)
    sidecar = src.with_name("a.xmp")
    sidecar.write_bytes(b"<x:xmpmeta>caption 1</x:xmpmeta>")
    rec = replace(state.records["a.jpg"], sidecar=SidecarId.of(sidecar, with_hash=True))
    state.record("a.jpg", rec)
    state.close()
    return src, sidecar, out, fp, RunState.load(out)


def test_a_changed_added_or_removed_sidecar_asks_for_its_sidecar_alone(tmp_path):
    """The scan, settings and models unchanged and the restoration there as recorded: a sidecar's change (or its
    output's absence) is the sidecar's alone ("sidecar"); the restoration missing comes first ("run"). The
    restoration's sidecar or the restoration edited since (captions a cataloguing tool wrote, a retouch) are kept:
    skipped, or, when the sidecar is to be rewritten, the file fails."""
    src, sidecar, out, fp, state = sidecar_done(tmp_path)
    (out / "a.xmp").write_bytes(b"carried")
    state = RunState.open(out)
    state.record("a.jpg", replace(state.records["a.jpg"], outputs=state.outputs_record([out / "a.jpg", out / "a.xmp"])))
    sidecar.write_bytes(b"<x:xmpmeta>caption 22</x:xmpmeta>")
    d = state.decide("a.jpg", src, fp, sidecar=sidecar)
    assert (d.action, d.reason) == ("sidecar", "sidecar changed: a.xmp")
    sidecar.write_bytes(b"<x:xmpmeta>caption 1</x:xmpmeta>")
    state.record("a.jpg", replace(state.records["a.jpg"], sidecar=SidecarId.of(sidecar, with_hash=True)))
    (out / "a.xmp").unlink()
    d = state.decide("a.jpg", src, fp, sidecar=sidecar)
    assert (d.action, d.reason) == ("sidecar", "output missing: a.xmp")

    (out / "a.xmp").write_bytes(b"a tool wrote more here")  # captions written into the restoration's sidecar
    d = state.decide("a.jpg", src, fp, sidecar=sidecar)
    assert (d.action, d.kept) == ("skip", (EditedOutput("a.xmp", 22, 7),))
    d = state.decide("a.jpg", src, fp)  # the scan's sidecar removed: the restoration's would be removed
    assert (d.action, d.reason) == ("conflict", f"{out / 'a.xmp'} was changed since oldphoto wrote it and would be "
                                                f"replaced (sidecar removed: a.xmp): move it away, or use --overwrite")
    (out / "a.xmp").write_bytes(b"carried")
    (out / "a.jpg").write_bytes(b"re-saved by a tool")
    d = state.decide("a.jpg", src, fp, sidecar=sidecar)
    assert (d.action, d.kept) == ("skip", (EditedOutput("a.jpg", 18, 8),))
    d = state.decide("a.jpg", src, fp)
    assert (d.action, d.reason) == ("conflict", f"{out / 'a.jpg'} was changed since oldphoto wrote it and would be "
                                                f"described anew by the sidecar beside it (sidecar removed: a.xmp): "
                                                f"move it away, or use --overwrite")
    (out / "a.xmp").write_bytes(b"a tool wrote more here")
    assert state.decide("a.jpg", src, fp).reason.startswith(
        f"{out / 'a.jpg'} and {out / 'a.xmp'} were changed since oldphoto wrote them and would be replaced (")
    (out / "a.jpg").unlink()
    assert (state.decide("a.jpg", src, fp).action, state.decide("a.jpg", src, fp).reason) == (
        "conflict", f"{out / 'a.xmp'} was changed since oldphoto wrote it and would be replaced (output missing: "
                    f"a.jpg): move it away, or use --overwrite")
    (out / "a.xmp").unlink()
    assert (state.decide("a.jpg", src, fp).action, state.decide("a.jpg", src, fp).reason) == (
        "run", "output missing: a.jpg")
    state.close()


def test_a_changed_added_or_removed_sidecar_is_noticed(tmp_path):
    src, sidecar, out, fp, state = sidecar_done(tmp_path)
    assert state.records["a.jpg"].sidecar == SidecarId.of(sidecar, with_hash=True)  # read back as written
    assert state.decide("a.jpg", src, fp, sidecar=sidecar).reason == "up to date"
    assert state.decide("a.jpg", src, fp).reason == "sidecar removed: a.xmp"
    os.utime(sidecar, ns=(10**18, 10**18))  # touched, same content: skipped, the new mtime recorded
    d = state.decide("a.jpg", src, fp, sidecar=sidecar)
    assert d.action == "skip" and d.refreshed.sidecar.mtime_ns == 10**18 and d.refreshed.mtime_ns == \
        state.records["a.jpg"].mtime_ns
    sidecar.write_bytes(b"<x:xmpmeta>caption 2</x:xmpmeta>")  # the same size: its content decides
    os.utime(sidecar, ns=(10**18, 10**18 + 1))
    assert state.decide("a.jpg", src, fp, sidecar=sidecar).reason == "sidecar changed: a.xmp"
    renamed = sidecar.rename(src.with_name("a.jpg.xmp"))
    assert state.decide("a.jpg", src, fp, sidecar=renamed).reason == "sidecar changed: a.jpg.xmp (was a.xmp)"
    assert state.decide("a.jpg", src, fp, sidecar=sidecar).reason.startswith("sidecar unreadable: a.xmp (")
    # the settings come first
    other_fp = fingerprint(RestoreConfig(format="png").output_settings(), MODELS)
    assert state.decide("a.jpg", src, other_fp, sidecar=renamed).reason == "settings changed"


def test_outputs_are_recognised_only_with_the_sidecar_they_were_made_with(tmp_path):
    """After a lost state file, outputs are recognised by their XMP: a sidecar among them must say it carries the
    source's sidecar now and describe the restoration (its InstanceID). The images' own SidecarSHA256 is not looked
    at: a sidecar rewritten alone since (pipeline.update_sidecar) leaves it behind."""
    import numpy as np

    from oldphoto.io import Metadata, provenance_xmp, write

    src = tmp_path / "in" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"photo")
    sidecar = src.with_name("a.jpg.xmp")
    sidecar.write_bytes(b"<x:xmpmeta/>")
    now = SidecarId.of(sidecar, with_hash=True)
    out = tmp_path / "out"
    out.mkdir()
    settings = RestoreConfig().output_settings()
    fp = fingerprint(settings, MODELS)

    def packet(sidecar_sha256, instance):
        return provenance_xmp(None, source_name="a.jpg", source_sha256=hashlib.sha256(b"photo").hexdigest(),
                              software="oldphoto 9", parameters=settings, models=MODELS,
                              sidecar_sha256=sidecar_sha256, instance_id=instance)

    def made(path, sidecar_sha256, instance="xmp.iid:1"):
        if path.suffix == ".xmp":
            path.write_bytes(b'<?xml version="1.0"?>\n' + packet(sidecar_sha256, instance))
        else:
            write(path, np.zeros((4, 4, 1), np.uint8), None, "PNG", Metadata(),
                  provenance_xmp=packet(sidecar_sha256, instance))
        return path

    state = RunState.load(out, read_only=True)
    image = made(out / "a.png", "0" * 64)  # made with another sidecar, its sidecar rewritten alone since
    outputs = [image, made(out / "a.png.xmp", now.sha256)]
    rec = state.recognise(src, outputs, fp, rel="a.jpg", sidecar=now)
    assert rec is not None and rec.sidecar == now
    assert state.recognise(src, [image], fp, rel="a.jpg") is not None  # the images alone: theirs is not looked at
    assert state.recognise(src, outputs, fp, rel="a.jpg", sidecar=None) is None  # removed since
    made(outputs[1], now.sha256, instance="xmp.iid:2")  # the sidecar of another restoration
    assert state.recognise(src, outputs, fp, rel="a.jpg", sidecar=now) is None


def test_an_unreadable_sidecar_is_recorded_with_its_ctime_and_read_back(tmp_path):
    """Its identity keeps the ctime (a chmod moves it alone) and the mark; a readable one's line stays as before."""
    sidecar = tmp_path / "a.xmp"
    sidecar.write_bytes(b"<x:xmpmeta/>")
    st = sidecar.stat()
    left = SidecarId("a.xmp", st.st_size, st.st_mtime_ns, None, st.st_ctime_ns, True)
    rec = Record("/s/a.jpg", 1, 2, None, "fp", (), sidecar=left)
    assert Record.from_dict(json.loads(rec.to_json("a.jpg"))) == rec and left.same_unreadable(sidecar)
    readable = replace(rec, sidecar=SidecarId("a.xmp", 3, 4, "ab"))
    assert json.loads(readable.to_json("a.jpg"))["sidecar"] == {"name": "a.xmp", "size": 3, "mtime_ns": 4,
                                                                 "sha256": "ab"}
    assert Record.from_dict(json.loads(readable.to_json("a.jpg"))) == readable
    time.sleep(0.05)  # past the kernel's coarse clock tick, by which the ctime moves
    os.chmod(sidecar, 0o600)
    assert sidecar.stat().st_mtime_ns == st.st_mtime_ns and not left.same_unreadable(sidecar)


def test_an_outputs_sha256_is_kept_in_its_entry_and_absent_when_unknown(tmp_path):
    """Fixity: recorded inside the output's entry, which older versions read only the path and size of (a new key at
    the record's top level would make them refuse the file); one not known (an earlier version's record) leaves the
    entry as it was. A malformed one is refused like any other bad field."""
    src, out, fp, state = setup_done(tmp_path)
    rec = state.records["a.jpg"]
    assert rec.outputs[0].sha256 is None
    assert json.loads(rec.to_json("a.jpg"))["outputs"] == [{"path": "a.jpg", "size": 8}]
    digest = hashlib.sha256(b"restored").hexdigest()
    state.record("a.jpg", replace(rec, outputs=state.outputs_record([out / "a.jpg"], {out / "a.jpg": digest})))
    line = json.loads(state.records["a.jpg"].to_json("a.jpg"))
    mtime = (out / "a.jpg").stat().st_mtime_ns  # beside the digest, from the stat that gave the size
    assert line["outputs"] == [{"path": "a.jpg", "size": 8, "sha256": digest, "mtime_ns": mtime}]
    assert set(line) == set(json.loads(rec.to_json("a.jpg")))  # no new key beside the earlier ones
    state.close()
    again = RunState.load(out)
    assert again.records["a.jpg"].outputs[0].sha256 == digest
    assert again.decide("a.jpg", src, fp).action == "skip"
    (out / "a.jpg").write_bytes(b"RESTORED")  # same size: a skip never reads an output to check its digest
    assert again.decide("a.jpg", src, fp).action == "skip"
    lines = (out / STATE_NAME).read_text().splitlines()
    (out / STATE_NAME).write_text(lines[0] + "\n" + lines[1].replace(digest, "not-a-digest") + "\n")
    with pytest.raises(StateError, match="line 2 is not a valid record"):
        RunState.load(out)


def test_an_output_at_another_mtime_is_still_skipped_without_giving_its_recorded_sha256(tmp_path):
    """The digest is vouched for by the output's mtime when it was recorded: at another one (same size) the bytes may
    have been replaced since (a run killed before recording them, an edit in place), or merely touched; a skip reads
    no output to tell. The skip stands, naming the output (`unvouched`: its digest not given); the record keeps the
    digest of the bytes written, and the mtime it was written at, for a redo to tell an edit from a touch by."""
    src, out, fp, state = setup_done(tmp_path)
    digest = hashlib.sha256(b"restored").hexdigest()
    state.record("a.jpg", replace(state.records["a.jpg"],
                                  outputs=state.outputs_record([out / "a.jpg"], {out / "a.jpg": digest})))
    recorded = state.records["a.jpg"].outputs[0]
    assert recorded.mtime_ns == (out / "a.jpg").stat().st_mtime_ns
    d = state.decide("a.jpg", src, fp)
    assert (d.action, d.refreshed, d.unvouched) == ("skip", None, ())  # as recorded: no new record

    os.utime(out / "a.jpg", ns=(10**18, 10**18))
    d = state.decide("a.jpg", src, fp)
    assert (d.action, d.reason, d.refreshed, d.unvouched) == ("skip", "up to date", None, ("a.jpg",))
    os.utime(src, ns=(10**18, 10**18))  # the source touched too: its new mtime recorded, the output's record as it was
    d = state.decide("a.jpg", src, fp)
    assert d.refreshed.mtime_ns == 10**18 and d.refreshed.outputs == (recorded,) and d.unvouched == ("a.jpg",)

    older = replace(recorded, mtime_ns=None)  # recorded before mtimes were kept: the digest as recorded
    state.record("a.jpg", replace(state.records["a.jpg"], outputs=(older,)))
    assert json.loads(state.records["a.jpg"].to_json("a.jpg"))["outputs"] == [
        {"path": "a.jpg", "size": 8, "sha256": digest}]
    assert state.decide("a.jpg", src, fp).unvouched == ()
    state.close()
    assert RunState.load(out).records["a.jpg"].outputs == (older,)


@pytest.mark.parametrize("change, why", [
    ({"sidecar": "a.xmp"}, "sidecar is 'a.xmp', not an object"),  # AttributeError
    ({"mask": [1]}, "mask is [1], not an object"),
    ({"outputs": [["a.jpg", 8]]}, "an output is ['a.jpg', 8], not an object"),
    ({"size": 1e999}, "size is inf, not a whole number"),  # OverflowError
    ({"mtime_ns": "12"}, "mtime_ns is '12', not a whole number"),
    ({"size": -5}, "size is -5, less than 0"),
    ({"mtime_ns": 2**64}, "mtime_ns is 18446744073709551616, out of range"),
    ({"sha256": 1.5}, "not a sha256: 1.5"),  # verify --sources sliced it: TypeError
    ({"source": ["a.jpg"]}, "source is ['a.jpg'], not a string"),
    ({"former": "a.png"}, "former is 'a.png', not a list"),
    ({"megapixels": float("nan")}, "megapixels is nan, not a finite number"),
    ({"sidecar": {"name": "a.xmp", "size": 1, "mtime_ns": 2, "unreadable": "no"}}, "sidecar unreadable is 'no'"),
])
def test_a_record_field_of_another_type_is_a_state_error(tmp_path, change, why):
    # found fuzzing the state file: each was a traceback in verify or restore (an AttributeError or OverflowError
    # out of Record.from_dict, or a value of the wrong type it kept for later code)
    src, out, fp, state = setup_done(tmp_path)
    state.close()
    lines = (out / STATE_NAME).read_text().splitlines()
    (out / STATE_NAME).write_text(lines[0] + "\n" + json.dumps({**json.loads(lines[1]), **change}) + "\n")
    with pytest.raises(StateError, match=rf"{STATE_NAME}: line 2 is not a valid record \({re.escape(why)}"):
        RunState.load(out)


@pytest.mark.parametrize("line, why", [("null", "unknown state format None"), ("[1]", "unknown state format [1]"),
                                       ("1" + "0" * 5000, "line 1 is not valid JSON (Exceeds the limit (4300 digits)"),
                                       ("[" * 100000 + "]" * 100000, "line 1 is not valid JSON (maximum recursion")])
def test_a_first_line_of_another_shape_is_a_state_error(tmp_path, line, why):
    (tmp_path / STATE_NAME).write_text(line + "\n")
    with pytest.raises(StateError, match=re.escape(why)):
        RunState.load(tmp_path)
    (tmp_path / STATE_NAME).write_text('{"oldphoto_state": 1}\n' + line + "\n")
    with pytest.raises(StateError, match="line 2 is not"):
        RunState.load(tmp_path)
