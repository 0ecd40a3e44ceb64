"""A scan that changes while a run reads or restores it (scanning software still writing it, a tool rewriting its
metadata, a sync replacing it) while cron runs `oldphoto restore`: its outputs go in, and its record is made, only
when they were decoded from the very bytes their provenance and the record name (pipeline._check_unchanged); else
the file fails with one line, nothing put in place, and the next run restores it. A touch or the same bytes copied
over it is no change."""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

import oldphoto.io as oio
import oldphoto.io.sidecar as sidecar_module
from oldphoto import pipeline, planning, runner
from oldphoto.config import RestoreConfig, TileConfig
from oldphoto.errors import ImageError, NoMemory
from oldphoto.state import STATE_NAME
from restore_samples import SilentProgress
from restore_samples import stand_in_models as use_stand_in_models

CHANGED = "changed while it was being read (still being written?); it will be retried next run"
OPTIONS = {"tile": TileConfig(size=128, overlap=16), "jobs": 1}
PACKET = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
          '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:format>{}</dc:format>'
          '</rdf:Description></rdf:RDF></x:xmpmeta>')


class Quiet(SilentProgress):
    """A Progress that keeps the error lines."""

    def __init__(self):
        self.errors: list[tuple[str, str]] = []

    def error(self, path, reason):
        self.errors.append((Path(path).name, reason))


@pytest.fixture
def models(monkeypatch):
    use_stand_in_models(monkeypatch)


def scan(path: Path, seed: int) -> bytes:
    """An uncompressed 16-bit RGB TIFF at `path` (its size the same for every seed); its bytes."""
    pixels = np.random.default_rng(seed).integers(0, 60000, (40, 50, 3), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, pixels, photometric="rgb")
    return path.read_bytes()


def restore(root: Path, out: Path) -> tuple[runner.Outcome, Quiet]:
    progress = Quiet()
    outcome = runner.Batch([root], out, out / "report.json", RestoreConfig(**OPTIONS), progress,
                           runner.StopFlag()).run()
    return outcome, progress


def records(out: Path) -> dict:
    lines = (out / STATE_NAME).read_text().splitlines()[1:]
    return {d["rel"]: d for d in map(json.loads, lines)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def later(path: Path, seconds: int = 5) -> None:
    """`path`'s mtime moved on, as a write seconds later would (file timestamps are coarse: a write in the same
    clock tick as the run's stat would keep them)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def while_decoding(monkeypatch, change, before: bool = False) -> None:
    """change(src) runs once as the pipeline reads the scan: before its pixels are decoded, or after."""
    real, done = oio.read, []

    def read(path, *args, **kwargs):
        if done:
            return real(path, *args, **kwargs)
        done.append(path)
        if before:
            change(Path(path))
        pic = real(path, *args, **kwargs)
        if not before:
            change(Path(path))
        return pic

    monkeypatch.setattr(oio, "read", read)


def assert_failed_with_nothing_in_place(outcome, progress, out: Path) -> None:
    [result] = outcome.report.results
    assert (result.status, result.error) == ("failed", CHANGED)
    assert progress.errors == [("scan.tif", CHANGED)]
    assert not (out / "scan.tif").exists()
    assert "scan.tif" not in records(out)
    assert not [p.name for p in out.iterdir() if "oldphoto-tmp" in p.name]


def assert_restored_from(out: Path, data: bytes) -> None:
    """The restoration and its record name the bytes `data`, and they are the ones its pixels came from."""
    assert records(out)["scan.tif"]["sha256"] == sha(data)
    assert records(out)["scan.tif"]["size"] == len(data)
    assert oio.read_provenance(out / "scan.tif").source_sha256 == sha(data)


def test_a_scan_rewritten_in_place_between_its_hash_and_its_decode_fails_and_is_restored_next_run(
        tmp_path, models, monkeypatch):
    """The run hashed the scan, then decoded other bytes that were written into it meanwhile: its restoration went in
    naming the first bytes' sha256, and its record their size and mtime."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)
    final = {}

    def rewrite(src):
        final["data"] = scan(src, 2)  # the same size: only the content moved
        later(src)

    while_decoding(monkeypatch, rewrite, before=True)
    assert_failed_with_nothing_in_place(*restore(root, out), out)
    monkeypatch.undo()
    use_stand_in_models(monkeypatch)
    outcome, progress = restore(root, out)
    assert [r.status for r in outcome.report.results] == ["done"] and not progress.errors
    assert_restored_from(out, final["data"])


def test_a_scan_still_growing_as_it_is_read_fails(tmp_path, models, monkeypatch):
    """Scanning software still appending to the file: the run decoded what was there, and put its restoration in."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)

    def append(src):
        with open(src, "ab") as f:
            f.write(b"\0" * 4096)
        later(src)

    while_decoding(monkeypatch, append)
    assert_failed_with_nothing_in_place(*restore(root, out), out)


def test_a_scan_replaced_by_a_rename_keeping_its_size_and_mtime_fails(tmp_path, models, monkeypatch):
    """A sync tool renamed another version over the scan (rsync -t: the same size and mtime): the old code decoded the
    new bytes, recorded the old sha256 with the new file's size and mtime, and every later run skipped it."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    scan(src, 1)
    final = {}

    def replace(src):
        st = os.stat(src)
        final["data"] = scan(src.with_name(".scan.tif.partial"), 2)
        os.utime(src.with_name(".scan.tif.partial"), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(src.with_name(".scan.tif.partial"), src)

    while_decoding(monkeypatch, replace, before=True)
    assert_failed_with_nothing_in_place(*restore(root, out), out)
    monkeypatch.undo()
    use_stand_in_models(monkeypatch)
    outcome, _ = restore(root, out)
    assert [r.status for r in outcome.report.results] == ["done"]
    assert_restored_from(out, final["data"])


def test_a_scan_replaced_after_planning_hashed_it_is_hashed_again(tmp_path, models, monkeypatch):
    """Planning read the scan's sha256 (its mtime moved, its size did not); the file was then replaced by one of the
    same size and mtime before its turn came: the old code took planning's sha256 for it, as their size and mtime
    agreed."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    scan(src, 1)
    assert [r.status for r in restore(root, out)[0].report.results] == ["done"]
    scan(src, 2)
    later(src)  # the same size, another mtime: planning hashes it to know
    real_plan, final = planning.plan, {}

    def plan(*args, **kwargs):
        jobs = real_plan(*args, **kwargs)
        st = os.stat(src)
        final["data"] = scan(src.with_name(".partial"), 3)
        os.utime(src.with_name(".partial"), ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(src.with_name(".partial"), src)
        return jobs

    monkeypatch.setattr(planning, "plan", plan)
    outcome, progress = restore(root, out)
    assert [r.status for r in outcome.report.results] == ["done"] and not progress.errors
    assert_restored_from(out, final["data"])


@pytest.mark.parametrize("how", ["touched", "copied over"])
def test_a_scan_touched_or_given_the_same_bytes_during_the_run_is_restored(tmp_path, models, monkeypatch, how):
    """A backup tool's touch, or the same bytes renamed over the scan (a new inode), is no change: the restoration
    goes in (it is read once more to tell), and the next run skips it."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    data = scan(src, 1)
    read_again = []
    real_hash = pipeline.oio.read_source_sha256

    def same(src):
        if how == "copied over":
            src.with_name(".copy").write_bytes(data)
            os.replace(src.with_name(".copy"), src)
        later(src)

    while_decoding(monkeypatch, same)
    monkeypatch.setattr(oio, "read_source_sha256", lambda p: read_again.append(p) or real_hash(p))
    outcome, progress = restore(root, out)
    assert [r.status for r in outcome.report.results] == ["done"] and not progress.errors
    assert read_again == [src]  # the runner hashed it through state's own import; the check once more
    assert_restored_from(out, data)
    assert [r.status for r in restore(root, out)[0].report.results] == ["skipped"]


def test_a_scan_removed_during_the_run_fails(tmp_path, models, monkeypatch):
    """Renamed away (to the name scanning software gives it once written, say) or deleted: nothing goes in for it."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)
    while_decoding(monkeypatch, lambda src: src.rename(src.with_name("0001.tif")))
    outcome, progress = restore(root, out)
    [result] = outcome.report.results
    assert result.status == "failed"
    assert result.error.startswith("removed or renamed while it was being read (")
    assert result.error.endswith("); nothing written")
    assert progress.errors == [("scan.tif", result.error)]
    assert not (out / "scan.tif").exists() and "scan.tif" not in records(out)


def test_a_scan_left_alone_is_not_read_again(tmp_path, models, monkeypatch):
    """The check before the outputs go in is a stat: the scan is hashed once."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)
    monkeypatch.setattr(oio, "read_source_sha256", lambda p: pytest.fail("read again"))
    assert [r.status for r in restore(root, out)[0].report.results] == ["done"]


def test_process_file_hashing_itself_refuses_a_scan_changed_as_it_is_read(tmp_path, monkeypatch):
    """The library, given no sha256: it stats the scan before reading it, and checks it again before the outputs go
    in."""
    src = tmp_path / "scan.tif"
    scan(src, 1)

    def rewrite(src):
        scan(src, 2)
        later(src)

    while_decoding(monkeypatch, rewrite)
    models = pipeline.Models(restorer=lambda tiles, mask: tiles.clone())
    with pytest.raises(ImageError, match=f"^{re.escape(str(src))}: {re.escape(CHANGED)}$"):
        pipeline.process_file(src, tmp_path / "out" / "scan", RestoreConfig(**OPTIONS), models)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_sidecar_edited_during_the_run_is_taken_up_by_the_next_run(tmp_path, models, monkeypatch):
    """The scan's XMP sidecar is read once, and its record names the bytes read: edited after that, the restoration
    goes in with the old one and the next run rewrites only the sidecar beside it."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)
    xmp = root / "scan.tif.xmp"
    xmp.write_text(PACKET.format("old"))
    real_read = sidecar_module.read_sidecar

    def read_then_edit(path):
        carried = real_read(path)
        path.write_text(PACKET.format("new"))  # the same size: its mtime tells
        later(path)
        return carried

    monkeypatch.setattr(pipeline.xmp_sidecar, "read_sidecar", read_then_edit)
    outcome, _ = restore(root, out)
    assert [r.status for r in outcome.report.results] == ["done"]
    assert records(out)["scan.tif"]["sidecar"]["sha256"] == sha(PACKET.format("old").encode())
    assert b">old<" in (out / "scan.tif.xmp").read_bytes()
    monkeypatch.setattr(pipeline.xmp_sidecar, "read_sidecar", real_read)
    outcome, _ = restore(root, out)
    [result] = outcome.report.results
    assert (result.status, result.sidecar_only) == ("done", True)
    assert records(out)["scan.tif"]["sidecar"]["sha256"] == sha(PACKET.format("new").encode())
    assert b">new<" in (out / "scan.tif.xmp").read_bytes()


def test_a_scan_changed_as_its_sidecar_alone_is_rewritten_fails(tmp_path, models, monkeypatch):
    """Only the scan's XMP sidecar changed since its restoration: the run reads the scan's metadata (no pixel) for the
    sidecar it writes beside the restoration, naming the restoration's source sha256. Replaced meanwhile by another
    scan of the same size, that sidecar would describe other bytes than those it names: the file fails instead,
    nothing put in place, and the next run restores it."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    scan(src, 1)
    xmp = root / "scan.tif.xmp"
    xmp.write_text(PACKET.format("old"))
    assert [r.status for r in restore(root, out)[0].report.results] == ["done"]
    xmp.write_text(PACKET.format("new"))
    later(xmp)
    real_update, real_meta, final = pipeline.update_sidecar, oio.read_metadata, {}

    def update_sidecar(*args, **kwargs):
        monkeypatch.setattr(oio, "read_metadata", read_then_replace)
        return real_update(*args, **kwargs)

    def read_then_replace(path, *args, **kwargs):
        got = real_meta(path, *args, **kwargs)
        final["data"] = scan(Path(path), 2)  # the same width and height
        later(Path(path))
        return got

    monkeypatch.setattr(pipeline, "update_sidecar", update_sidecar)
    outcome, progress = restore(root, out)
    [result] = outcome.report.results
    assert (result.status, result.error) == ("failed", CHANGED)
    assert progress.errors == [("scan.tif", CHANGED)]
    assert b">old<" in (out / "scan.tif.xmp").read_bytes()
    assert records(out)["scan.tif"]["sidecar"]["sha256"] == sha(PACKET.format("old").encode())
    assert not [p.name for p in out.iterdir() if "oldphoto-tmp" in p.name]
    monkeypatch.undo()
    use_stand_in_models(monkeypatch)
    outcome, progress = restore(root, out)
    assert [(r.status, r.sidecar_only) for r in outcome.report.results] == [("done", False)] and not progress.errors
    assert_restored_from(out, final["data"])
    assert b">new<" in (out / "scan.tif.xmp").read_bytes()


def test_a_scan_touched_as_its_sidecar_alone_is_rewritten_is_no_change(tmp_path, models, monkeypatch):
    """A touch of the scan while its sidecar alone is rewritten: the same bytes, the sidecar goes in."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    data = scan(src, 1)
    xmp = root / "scan.tif.xmp"
    xmp.write_text(PACKET.format("old"))
    assert [r.status for r in restore(root, out)[0].report.results] == ["done"]
    xmp.write_text(PACKET.format("new"))
    later(xmp)
    real_meta = oio.read_metadata

    def read_then_touch(path, *args, **kwargs):
        got = real_meta(path, *args, **kwargs)
        later(Path(path))
        return got

    real_update = pipeline.update_sidecar

    def update_sidecar(*args, **kwargs):
        monkeypatch.setattr(oio, "read_metadata", read_then_touch)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(pipeline, "update_sidecar", update_sidecar)
    outcome, progress = restore(root, out)
    assert [(r.status, r.sidecar_only) for r in outcome.report.results] == [("done", True)] and not progress.errors
    assert b">new<" in (out / "scan.tif.xmp").read_bytes()
    assert records(out)["scan.tif"]["sha256"] == sha(data)


def test_a_scan_changed_as_its_mask_alone_is_made_fails(tmp_path, models, monkeypatch):
    """--only-mask: its mask and overlay go in under the same check as a restoration."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "scan.tif", 1)

    def rewrite(src):
        scan(src, 2)
        later(src)

    while_decoding(monkeypatch, rewrite)
    progress = Quiet()
    outcome = runner.Batch([root], out, out / "report.json", RestoreConfig(**OPTIONS, only_mask=True), progress,
                           runner.StopFlag()).run()
    [result] = outcome.report.results
    assert (result.status, result.error) == ("failed", CHANGED)
    assert not [p.name for p in out.iterdir() if p.name.startswith("scan.")]
    assert "scan.tif" not in records(out)


def test_a_scan_removed_after_planning_fails_alone_with_one_plain_line(tmp_path, models, monkeypatch):
    """Removed after planning stat'ed (and hashed) it, before its turn: one `cannot open` line naming it once, as the
    reader words it (was the OSError's own text, its path repeated), and the batch goes on."""
    root, out = tmp_path / "scans", tmp_path / "out"
    scan(root / "a.tif", 1)
    scan(root / "b.tif", 2)
    while_decoding(monkeypatch, lambda src: (root / "b.tif").unlink())
    outcome, progress = restore(root, out)
    assert [(r.status, r.error) for r in outcome.report.results] == [
        ("done", None), ("failed", "cannot open: No such file or directory")]
    assert progress.errors == [("b.tif", "cannot open: No such file or directory")]


def test_a_scan_rewritten_with_its_own_bytes_while_a_lenient_decoder_read_a_gap_fails(tmp_path, models, monkeypatch):
    """Cut short and written again with the same bytes while it was decoded (`cp` of the same file over it), a decoder
    that takes a gap for zeros gives other pixels, yet the bytes at the end hash the same: decoded again, the photo
    does not give what was restored, so nothing goes in (the same sha256 alone let it in, the pixels wrong)."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    data = scan(src, 1)
    real, calls = oio.read, []

    def read(path, *args, **kwargs):
        pic = real(path, *args, **kwargs)
        if not calls:
            pic.pixels[:10] = 0  # the rows the decoder found missing
            Path(path).write_bytes(data)
            later(Path(path))
        calls.append(path)
        return pic

    monkeypatch.setattr(oio, "read", read)
    assert_failed_with_nothing_in_place(*restore(root, out), out)
    assert len(calls) == 2  # read again once the stat had moved
    monkeypatch.setattr(oio, "read", real)
    assert [r.status for r in restore(root, out)[0].report.results] == ["done"]
    assert_restored_from(out, data)


def test_a_scan_touched_during_its_run_whose_second_decode_lacks_memory_says_so(tmp_path, models, monkeypatch):
    """The stat moved (a touch) and the check decodes the scan again, which is refused for want of memory: the file
    fails with that reason, not as changed (it was not), and nothing goes in."""
    root, out = tmp_path / "scans", tmp_path / "out"
    src = root / "scan.tif"
    scan(src, 1)
    real, calls = oio.read, []

    def read(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            pic = real(path, *args, **kwargs)
            later(Path(path))
            return pic
        raise NoMemory(path, "needs about 2.0 GiB of memory to decode (test); 1.0 GiB available now: not read")

    monkeypatch.setattr(oio, "read", read)
    outcome, progress = restore(root, out)
    [result] = outcome.report.results
    assert (result.status, result.error) == (
        "failed", "needs about 2.0 GiB of memory to decode (test); 1.0 GiB available now: not read")
    assert not (out / "scan.tif").exists()
