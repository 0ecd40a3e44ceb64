import json
import os
import stat

import pytest

from oldphoto import __version__
from oldphoto.report import FileResult, Report, load


def make_report() -> Report:
    rep = Report(out_dir="/o", inputs=["/in"], settings={"format": "keep"}, started="2026-01-01T00:00:00+0000",
                 finished="2026-01-01T00:00:10+0000", wall_seconds=10.0, fingerprint="f" * 64,
                 models={"restorer": {"name": "r-v1", "sha256": "ab" * 32}}, device="cpu")
    rep.results = [
        FileResult("/in/a.jpg", "a.jpg", "done", outputs=["/o/a.jpg"], width=2000, height=1000, megapixels=2.0,
                   seconds={"read": 0.5, "restore": 3.0}, mask_coverage=1.25, notes=["CMYK converted to RGB"]),
        FileResult("/in/b.jpg", "b.jpg", "done", width=1000, height=1000, megapixels=1.0,
                   seconds={"read": 0.25, "restore": 1.0, "write": 0.5}),
        FileResult("/in/c.jpg", "c.jpg", "skipped", megapixels=5.0, seconds={}),
        FileResult("/in/d.jpg", "d.jpg", "failed", error="truncated JPEG"),
        FileResult("/in/e.jpg", "e.jpg", "pending"),
    ]
    return rep


def test_totals_count_statuses_and_sum_work_done_in_this_run():
    t = make_report().totals()
    assert (t["files"], t["done"], t["skipped"], t["failed"], t["interrupted"], t["pending"]) == (5, 2, 1, 1, 0, 1)
    assert t["megapixels"] == 3.0  # skipped files did no work this run
    assert t["seconds"] == {"wall": 10.0, "read": 0.75, "restore": 4.0, "write": 0.5}
    assert t["megapixels_per_second"] == 0.3


def test_write_is_atomic_json_with_every_field(tmp_path):
    path = tmp_path / "deeper" / "report.json"
    make_report().write(path)
    d = load(path)
    assert d["oldphoto_version"] == __version__
    assert d["models"]["restorer"]["sha256"] == "ab" * 32 and d["settings"] == {"format": "keep"}
    assert d["started"] < d["finished"] and d["interrupted"] is False and d["device"] == "cpu"
    assert [f["status"] for f in d["files"]] == ["done", "done", "skipped", "failed", "pending"]
    first = d["files"][0]
    assert set(first) == {"source", "relative", "status", "error", "outputs", "output_sha256", "width", "height",
                          "megapixels", "seconds", "mask_coverage", "scan_blend", "notes", "sha256", "sidecar",
                          "sidecar_only", "mask_source"}
    assert first["mask_coverage"] == 1.25 and first["notes"] == ["CMYK converted to RGB"]
    assert d["files"][3]["error"] == "truncated JPEG" and d["totals"]["failed"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temp file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current_umask()


def test_failed_write_leaves_the_old_report_untouched(tmp_path):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}')
    rep = make_report()
    rep.settings = {"bad": object.__new__(_Unserialisable)}
    with pytest.raises(TypeError):
        rep.write(path)
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


class _Unserialisable:
    def __str__(self):
        raise TypeError("cannot be written")


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        FileResult("/a", "a", "finished")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_whose_sidecar_alone_was_rewritten_is_done_but_not_counted_restored(tmp_path):
    from oldphoto.report import FileResult, Report

    report = Report(out_dir="o", inputs=["i"], settings={}, started="t", wall_seconds=2.0, results=[
        FileResult(source="a", relative="a", status="done", megapixels=2.0, seconds={"restore": 1.0}),
        FileResult(source="b", relative="b", status="done", megapixels=30.0, seconds={"write": 0.01},
                   sidecar_only=True)])
    t = report.totals()
    assert t["done"] == 2 and t["megapixels"] == 2.0 and t["seconds"] == {"wall": 2.0, "restore": 1.0}
