"""The command line with click's CliRunner. Most tests replace the models and process_file with a fast fake
that writes recognisable bytes; the end-to-end tests at the bottom run the real pipeline and io on real
image files with stand-in models (identity restorer, a bright-pixel detector)."""

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch

import oldphoto.pipeline as pipeline
from oldphoto import __version__
from oldphoto.config import TONE_STRENGTH
from oldphoto.errors import ImageError, WeightsError
from oldphoto.lock import LOCK_NAME
from oldphoto.ops.masks import dilate
from oldphoto.state import STATE_NAME, RunState
from restore_samples import (FakeModels, FakePipeline, WhiteDetector, fake_pipeline, put, real_scans, report_of, run,
                             scans, tree)
from restore_samples import stand_in_models as use_stand_in_models


@pytest.fixture(autouse=True)
def hard_exits(monkeypatch) -> list[int]:
    """The codes a run asked to end its process with at once (not waiting for a worker thread that never returns):
    os._exit would end the test session itself, so here the run returns as usual instead."""
    codes: list[int] = []
    monkeypatch.setattr("oldphoto.cli._hard_exit", codes.append)
    return codes


@pytest.fixture
def fake(monkeypatch) -> FakePipeline:
    return fake_pipeline(monkeypatch)


@pytest.fixture
def press(monkeypatch):
    """press(signum, times): send the signal `times` times, each once the run's handler has taken the one before (two
    signals pending at once would count as one press, however long a loaded machine takes to run the handler)."""
    import oldphoto.cli as cli_module
    handled: list[int] = []
    real = cli_module._SignalStop._handle

    def counting(self, signum, frame):
        handled.append(signum)
        return real(self, signum, frame)

    monkeypatch.setattr(cli_module._SignalStop, "_handle", counting)

    def send(signum: int, times: int) -> None:
        for _ in range(times):
            before, deadline = len(handled), time.monotonic() + 10
            os.kill(os.getpid(), signum)
            while len(handled) == before and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs in the main thread
    return send


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.output.strip() == f"oldphoto {__version__}"


def test_tree_is_mirrored_and_junk_skipped(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--jobs", 1)
    assert r.exit_code == 0, r.output
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg", "album 1/b.PNG", "album 1/deep/c.tif"])
    assert (out / "album 1/deep/c.tif").read_bytes() == b"restored:C-photo"
    assert [p.name for p in fake.calls] == ["a.jpg", "b.PNG", "c.tif"]  # sorted walk, junk never opened
    assert not any(name in r.output for name in ("Thumbs", "DS_Store", "desktop", "xmp", "notes", "bmp"))
    # not a terminal: plain log lines on stderr, the summary table on stdout
    assert "[3/3] done album 1/deep/c.tif (40x30" in r.stderr
    assert "done" in r.stdout and "skipped" in r.stdout


def test_bad_file_fails_alone(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    put(root / "broken.jpg", b"BAD bytes")
    r = run("restore", root, "--out", out)
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {root / 'broken.jpg'}: not a decodable image"]
    statuses = {f["relative"]: (f["status"], f["error"]) for f in report_of(out)["files"]}
    assert statuses == {"a.jpg": ("done", None), "album 1/b.PNG": ("done", None),
                        "album 1/deep/c.tif": ("done", None), "broken.jpg": ("failed", "not a decodable image")}
    assert not (out / "broken.jpg").exists()


def test_control_characters_in_names_are_escaped_in_every_printed_line(tmp_path, fake):
    root, out = tmp_path / "scans", tmp_path / "out"
    put(root / "new\nline.jpg", b"BAD bytes")
    put(root / "esc\x1b[31m.jpg", b"E-photo")
    put(root / "plain é.jpg", b"P-photo")
    r = run("restore", root, "--out", out)
    assert r.exit_code == 1
    assert f"error: {root}/new\\nline.jpg: not a decodable image\n" in r.stderr
    assert "] done esc\\x1b[31m.jpg (40x30" in r.stderr and "] done plain é.jpg (40x30" in r.stderr
    assert f"failed: {root}/new\\nline.jpg: not a decodable image" in r.stdout.splitlines()  # one line, not wrapped
    assert "\x1b" not in r.output and "new\nline" not in r.stderr
    # the report keeps the names as they are
    assert {f["relative"] for f in report_of(out)["files"]} == {"new\nline.jpg", "esc\x1b[31m.jpg", "plain é.jpg"}


@pytest.mark.parametrize("extra, message", [
    (["--tile", "300"], "'300' is not one of"),
    (["--upscale", "3"], "'3' is not one of"),
    (["--overlap", "200"], "--overlap must be in [0, 128]"),
    (["--device", "gpu"], "unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    (["--jpeg-quality", "0"], "1<=x<=100"),
    (["--mask-threshold", "1.5"], "0<x<1"),
    (["--jobs", "0"], "x>=1"),
    (["--format", "gif"], "'gif' is not one of"),
    (["--tone", "none"], "'none' is not one of"),
    (["--scope", "defects", "--upscale", "2"],
     "--scope defects keeps the scan's own pixels, which cannot be enlarged by --upscale 2: use --upscale 1"),
    (["--scope", "defects", "--tone", "tile"], "--tone tile would not match"),
    (["--scope", "defects", "--only-mask"],
     "--scope defects changes defect pixels; --only-mask changes none: choose one"),
    (["--only-mask", "--colorize"], "--only-mask changes no pixels; --colorize adds colour"),
    (["--only-mask", "--upscale", "2"], "--upscale 2 enlarges a restoration"),
    (["--tone-strength", "1.5"], "0<=x<=1"),
    (["--scan-blend", "always"], "'always' is not one of 'auto', 'off'"),
    (["--detect-scales", "3"], "'3' is not one of '1', '2'"),
    (["--tone", "scan", "--tone-strength", "0.5"],
     "--tone-strength scales the photo's tone correction; --tone scan has none: use it with --tone photo"),
])
def test_bad_values_are_usage_errors(tmp_path, fake, extra, message):
    src = put(tmp_path / "a.jpg")
    r = run("restore", src, "--out", tmp_path / "out", *extra)
    assert r.exit_code == 2 and message in r.output
    assert fake.calls == [] and not (tmp_path / "out").exists()


def test_missing_input_and_missing_out_are_usage_errors(tmp_path, fake):
    r = run("restore", tmp_path / "nope.jpg", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run("restore", put(tmp_path / "a.jpg"))
    assert r.exit_code == 2 and "--out" in r.output


def test_unavailable_cuda_device_is_a_usage_error(tmp_path, fake, monkeypatch):
    monkeypatch.setattr(pipeline.torch.cuda, "is_available", lambda: False)
    r = run("restore", put(tmp_path / "a.jpg"), "--out", tmp_path / "out", "--device", "cuda:1")
    assert r.exit_code == 2 and "CUDA is not available" in r.output
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_out_equal_to_or_inside_an_input_folder_is_refused(tmp_path, fake):
    root = scans(tmp_path)
    before = tree(root)
    r = run("restore", root, "--out", root)
    assert r.exit_code == 2 and "is the input folder" in r.output
    r = run("restore", root, "--out", root / "album 1" / "restored")
    assert r.exit_code == 2 and "is inside the input folder" in r.output
    assert tree(root) == before and fake.calls == []
    # an input folder inside --out is fine, as long as no output lands on an input
    r = run("restore", root / "album 1", "--out", root)
    assert r.exit_code == 0, r.output
    assert (root / "b.PNG").read_bytes() == b"restored:B-photo"


def test_out_inside_an_input_through_a_symlink_is_refused_and_never_walked(tmp_path, fake):
    root, elsewhere = tmp_path / "scans", tmp_path / "elsewhere"
    put(root / "a.jpg", b"A")
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "out")  # scans/out -> elsewhere: inside the input as written
    r = run("restore", root, "--out", root / "out")
    assert r.exit_code == 2 and "is inside the input folder" in r.output
    assert list(elsewhere.iterdir()) == []
    # an input tree holding a link to the output folder: the outputs are never taken for inputs
    (root / "out").unlink()
    out = tmp_path / "out"
    os.symlink(out, root / "restored")
    for _ in range(2):
        fake.calls.clear()
        r = run("restore", root, "--out", out)
        assert r.exit_code == 0, r.output
        assert [f["relative"] for f in report_of(out)["files"]] == ["a.jpg"]
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg"])


def test_output_reaching_an_input_folder_through_a_link_in_the_output_tree_is_refused(tmp_path, fake):
    root, out = tmp_path / "scans", tmp_path / "out"
    put(root / "album" / "a.jpg", b"A")
    put(root / "b.jpg", b"B")
    out.mkdir()
    os.symlink(root / "album", out / "album")  # out/album -> scans/album: a.png would land beside the master
    before = tree(root)
    r = run("restore", root, "--out", out, "--format", "png")
    assert r.exit_code == 1 and "would be written into the input folder" in r.stderr
    assert tree(root) == before
    assert (out / "b.png").read_bytes() == b"restored:B"  # the batch goes on


def test_output_that_would_replace_an_input_is_refused(tmp_path, fake):
    src = put(tmp_path / "a.jpg", b"original")
    r = run("restore", src, "--out", tmp_path)
    assert r.exit_code == 1 and "would overwrite an input file" in r.stderr
    assert src.read_bytes() == b"original"


def test_originals_are_never_modified(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    old = time.time() - 86400
    for p in root.rglob("*"):
        os.utime(p, (old, old))

    def snapshot():
        return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                for p in root.rglob("*") if p.is_file()}

    before = snapshot()
    assert run("restore", root, "--out", out, "--format", "png").exit_code == 0
    assert run("restore", root, "--out", out, "--overwrite").exit_code == 0
    assert snapshot() == before


def test_rerun_skips_then_redoes_what_changed(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    assert len(fake.calls) == 3

    fake.calls.clear()
    r = run("restore", root, "--out", out)
    assert r.exit_code == 0 and fake.calls == []
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped"] * 3
    assert report_of(out)["files"][0]["width"] == 40  # details of skipped files come from the state

    put(root / "a.jpg", b"A-photo, rescanned")
    (out / "album 1/b.PNG").unlink()
    r = run("restore", root, "--out", out)
    assert r.exit_code == 0 and sorted(p.name for p in fake.calls) == ["a.jpg", "b.PNG"]
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["a.jpg"]["notes"][0] == "redone: source changed"
    assert files["album 1/b.PNG"]["notes"][0] == "redone: output missing: album 1/b.PNG"
    assert files["album 1/deep/c.tif"]["status"] == "skipped"
    assert (out / "a.jpg").read_bytes() == b"restored:A-photo, rescanned"

    fake.calls.clear()
    assert run("restore", root, "--out", out, "--jpeg-quality", "80").exit_code == 0
    assert [p.name for p in fake.calls] == ["a.jpg"]  # the PNG and TIFF outputs do not depend on it
    fake.calls.clear()
    assert run("restore", root, "--out", out, "--jpeg-quality", "80", "--mask-dilate", "5").exit_code == 0
    assert len(fake.calls) == 3  # settings changed: everything redone
    fake.calls.clear()
    again = ("--jpeg-quality", "80", "--mask-dilate", "5", "--jobs", "1", "--device", "cpu")
    assert run("restore", root, "--out", out, *again).exit_code == 0
    assert fake.calls == []  # jobs and device do not change pixels


def test_overwrite_redoes_everything(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    fake.calls.clear()
    r = run("restore", root, "--out", out, "--overwrite")
    assert r.exit_code == 0 and len(fake.calls) == 3
    assert {f["status"] for f in report_of(out)["files"]} == {"done"}


def test_existing_output_not_made_by_oldphoto_is_kept(tmp_path, fake):
    src = put(tmp_path / "in" / "a.jpg", b"A")
    out = tmp_path / "out"
    put(out / "a.jpg", b"someone's edit")
    r = run("restore", src, "--out", out)
    assert r.exit_code == 1 and "already exists and was not made from this file" in r.stderr
    assert (out / "a.jpg").read_bytes() == b"someone's edit"
    assert run("restore", src, "--out", out, "--overwrite").exit_code == 0
    assert (out / "a.jpg").read_bytes() == b"restored:A"


def test_two_inputs_with_the_same_output_second_fails(tmp_path, fake):
    one = put(tmp_path / "one" / "x.jpg", b"first")
    two = put(tmp_path / "two" / "x.jpg", b"second")
    out = tmp_path / "out"
    r = run("restore", tmp_path / "one", tmp_path / "two", "--out", out)
    assert r.exit_code == 1
    assert f"error: {two}: output {out / 'x.jpg'} is already produced from {one}" in r.stderr
    assert (out / "x.jpg").read_bytes() == b"restored:first"
    # same folder, a.jpg and a.png: distinct with --format keep, the same file with --format png
    put(tmp_path / "mixed" / "a.jpg")
    put(tmp_path / "mixed" / "a.png")
    assert run("restore", tmp_path / "mixed", "--out", tmp_path / "o2").exit_code == 0
    r = run("restore", tmp_path / "mixed", "--out", tmp_path / "o3", "--format", "png")
    assert r.exit_code == 1 and "a.png: output" in r.stderr and "already produced from" in r.stderr


def test_same_named_scan_from_another_folder_with_the_same_mtime_is_refused(tmp_path, fake):
    a = put(tmp_path / "dA" / "a.tif", b"scan from A")
    b = put(tmp_path / "dB" / "a.tif", b"scan from B")  # `cp -p` style: same size and mtime, other content
    st = a.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = tmp_path / "out"
    assert run("restore", tmp_path / "dA", "--out", out).exit_code == 0
    r = run("restore", tmp_path / "dB", "--out", out)
    assert r.exit_code == 1 and f"the existing outputs were made from another file, {a}" in r.stderr
    assert (out / "a.tif").read_bytes() == b"restored:scan from A"
    copy = put(tmp_path / "dC" / "a.tif", a.read_bytes())  # the same scan elsewhere: up to date, record follows it
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    fake.calls.clear()
    r = run("restore", tmp_path / "dC", "--out", out)
    assert r.exit_code == 0 and fake.calls == []
    assert report_of(out)["files"][0]["notes"] == [f"source moved but unchanged (same sha256 as {a})", "fake note"]


@pytest.mark.parametrize("toggle", [["--format", "png"], ["--save-mask"], ["--only-mask"]])
def test_outputs_of_earlier_settings_are_redone_not_refused(tmp_path, fake, toggle):
    src = put(tmp_path / "in" / "a.jpg", b"A")
    out = tmp_path / "out"
    assert run("restore", src, "--out", out).exit_code == 0
    assert run("restore", src, "--out", out, *toggle).exit_code == 0
    fake.calls.clear()
    r = run("restore", src, "--out", out)  # back to the first settings: its earlier outputs are oldphoto's own
    assert r.exit_code == 0, r.output
    assert fake.calls == [src] and report_of(out)["files"][0]["notes"][0] == "redone: settings changed"
    r = run("restore", src, "--out", out, *toggle)
    assert r.exit_code == 0, r.output
    assert len(tree(out)) > 3  # the other settings' outputs are kept, never deleted


def test_only_mask_outputs_are_tracked(tmp_path, fake):
    src = put(tmp_path / "a.tif")
    out = tmp_path / "out"
    assert run("restore", src, "--out", out, "--only-mask").exit_code == 0
    assert (out / "a.mask.png").exists() and (out / "a.overlay.jpg").exists()
    fake.calls.clear()
    assert run("restore", src, "--out", out, "--only-mask").exit_code == 0 and fake.calls == []


def test_report_content(tmp_path, fake):
    root = scans(tmp_path)
    put(root / "broken.jpg", b"BAD")
    out, rep = tmp_path / "out", tmp_path / "reports" / "run.json"
    r = run("restore", root, "--out", out, "--report", rep, "--jpeg-quality", "90", "--tone", "tile")
    assert r.exit_code == 1 and rep.exists() and not (out / "report.json").exists()
    d = json.loads(rep.read_text())
    assert d["oldphoto_version"] == __version__ and d["out_dir"] == str(out) and d["inputs"] == [str(root)]
    assert d["settings"]["jpeg_quality"] == 90 and d["settings"]["tile"]["size"] == 256
    assert d["settings"]["tone"] == "tile"
    assert d["models"] == {"restorer": {"name": "fake-restorer", "sha256": "ab" * 32}}
    assert d["device"] == "cpu" and len(d["fingerprint"]) == 64
    assert d["started"] <= d["finished"] and d["interrupted"] is False
    t = d["totals"]
    assert (t["files"], t["done"], t["skipped"], t["failed"]) == (4, 3, 0, 1)
    assert t["megapixels"] == pytest.approx(0.0036) and t["seconds"]["restore"] == pytest.approx(0.06)
    a = d["files"][0]
    assert a["source"] == str(root / "a.jpg") and a["relative"] == "a.jpg" and a["outputs"] == [str(out / "a.jpg")]
    assert (a["width"], a["height"], a["megapixels"], a["mask_coverage"]) == (40, 30, 0.0012, 2.5)
    assert a["seconds"] == {"read": 0.01, "restore": 0.02} and a["notes"] == ["fake note"]
    assert a["sha256"] == hashlib.sha256(b"A-photo").hexdigest()


def test_invalid_report_path_is_a_usage_error_before_any_work(tmp_path, fake):
    src, out = put(tmp_path / "in" / "a.jpg"), tmp_path / "out"
    afile = put(tmp_path / "afile", b"x")
    for report, message in [(out, "is the output folder; give a file name"),  # a folder once the run has made it
                            (afile / "r.json", "afile is not a folder"),
                            (out / STATE_NAME, "would replace the output folder's own .oldphoto-state.jsonl"),
                            (src, "give a file name ending in .json"),  # never a master scan
                            (out / "a.jpg", "give a file name ending in .json")]:
        r = run("restore", src, "--out", out, "--report", report)
        assert r.exit_code == 2 and message in r.output, (report, r.output)
        assert fake.calls == [] and not out.exists()
    inside = tmp_path / "in" / "sub" / "r.json"
    r = run("restore", tmp_path / "in", "--out", out, "--report", inside)
    assert r.exit_code == 2 and "is inside the input folder" in r.output and not inside.parent.exists()
    r = run("restore", src, "--out", out, "--report", tmp_path / "new" / "deeper" / "r.json")  # created
    assert r.exit_code == 0 and (tmp_path / "new" / "deeper" / "r.json").is_file()
    assert src.read_bytes() == b"JPEGDATA"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_report_folder_where_no_file_can_be_made_is_a_usage_error_even_for_root(tmp_path, fake):
    """os.access grants root every folder; /proc refuses any new file all the same. The run restored its files, then
    failed on the report (exit 1); the check now makes a file there, so it is refused before any work."""
    src, out = put(tmp_path / "in" / "a.jpg"), tmp_path / "out"
    r = run("restore", src, "--out", out, "--report", "/proc/r.json")
    assert r.exit_code == 2 and "--report /proc/r.json: cannot create files in /proc (" in r.output, r.output
    assert fake.calls == [] and not out.exists()


def test_report_holds_the_resolved_tone_of_the_scope(tmp_path, fake):
    src = put(tmp_path / "a.jpg")
    out = tmp_path / "out"
    assert run("restore", src, "--out", out).exit_code == 0
    assert report_of(out)["settings"]["tone"] == "photo"
    assert run("restore", src, "--out", out, "--tone", "photo").exit_code == 0  # the same output: skipped
    assert len(fake.calls) == 1
    assert run("restore", src, "--out", out, "--scope", "defects").exit_code == 0  # another output: redone
    settings = report_of(out)["settings"]
    assert (settings["scope"], settings["tone"]) == ("defects", "scan") and len(fake.calls) == 2
    assert settings["tone_strength"] is None  # no curve is fitted for the scan's tone


def test_tone_strength_is_resolved_in_the_report_and_decides_whether_an_output_is_current(tmp_path, fake):
    src = put(tmp_path / "a.jpg")
    out = tmp_path / "out"
    assert run("restore", src, "--out", out).exit_code == 0
    assert report_of(out)["settings"]["tone_strength"] == TONE_STRENGTH
    assert run("restore", src, "--out", out, "--tone-strength", str(TONE_STRENGTH)).exit_code == 0  # skipped
    assert len(fake.calls) == 1
    assert run("restore", src, "--out", out, "--tone-strength", "0.5").exit_code == 0  # another output: redone
    assert report_of(out)["settings"]["tone_strength"] == 0.5 and len(fake.calls) == 2


def test_detect_scales_default_by_mode_reach_the_settings_and_redo_outputs_only_when_changed(tmp_path, fake):
    src = put(tmp_path / "a.jpg")
    out, masks = tmp_path / "out", tmp_path / "masks"
    assert run("restore", src, "--out", out).exit_code == 0
    assert report_of(out)["settings"]["detect_scales"] == 2  # restoring: two scales by default
    assert run("restore", src, "--out", out, "--detect-scales", "2").exit_code == 0 and len(fake.calls) == 1
    assert run("restore", src, "--out", out, "--detect-scales", "1").exit_code == 0  # another output: redone
    assert "detect_scales" not in report_of(out)["settings"] and len(fake.calls) == 2  # one pass: as before
    assert run("restore", src, "--out", masks, "--only-mask").exit_code == 0  # curators' masks: one pass
    assert "detect_scales" not in report_of(masks)["settings"] and len(fake.calls) == 3
    assert run("restore", src, "--out", masks, "--only-mask", "--detect-scales", "1").exit_code == 0
    assert run("restore", src, "--out", masks, "--only-mask", "--detect-scales", "2").exit_code == 0  # redone
    assert report_of(masks)["settings"]["detect_scales"] == 2 and len(fake.calls) == 4


def test_settings_that_cannot_change_the_outputs_redo_nothing(tmp_path, fake, monkeypatch):
    detector = types.SimpleNamespace(threshold=0.5, restore_threshold=0.9)
    monkeypatch.setattr(pipeline, "load_models", lambda cfg, device: types.SimpleNamespace(
        detector=detector, restorer=None, describe=FakeModels().describe))
    src = put(tmp_path / "a.jpg")
    out, masks = tmp_path / "out", tmp_path / "masks"
    assert run("restore", src, "--out", out, "--format", "png").exit_code == 0 and len(fake.calls) == 1
    assert run("restore", src, "--out", out, "--format", "png", "--jpeg-quality", "80").exit_code == 0
    assert run("restore", src, "--out", out, "--format", "png", "--mask-threshold", "0.9").exit_code == 0
    assert len(fake.calls) == 1  # a PNG has no JPEG quality; 0.9 is the restorer's threshold anyway
    assert run("restore", src, "--out", out, "--format", "png", "--mask-threshold", "0.8").exit_code == 0
    assert len(fake.calls) == 2
    assert run("restore", src, "--out", masks, "--only-mask").exit_code == 0 and len(fake.calls) == 3
    assert run("restore", src, "--out", masks, "--only-mask", "--format", "tiff", "--mask-threshold", "0.5"
               ).exit_code == 0
    assert len(fake.calls) == 3  # masks are PNG whatever --format says; 0.5 is the detector's own
    assert run("restore", src, "--out", masks, "--only-mask", "--jpeg-quality", "80").exit_code == 0
    assert len(fake.calls) == 4  # the overlay is a JPEG


def test_quiet_prints_nothing_on_success_and_only_errors_on_failure(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--quiet")
    assert r.exit_code == 0 and r.output == ""
    put(root / "z.jpg", b"BAD")
    r = run("restore", root, "--out", out, "-q")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr == f"error: {root / 'z.jpg'}: not a decodable image\n"


def held_by_a_live_run(out: Path) -> dict:
    """Make `out` with the lock of a live run (this process) in it; returns the lock's content."""
    out.mkdir()
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (out / LOCK_NAME).write_text(json.dumps(lock))
    return lock


def test_lock_held_by_a_live_run_is_refused(tmp_path, fake):
    src, out = put(tmp_path / "a.jpg"), tmp_path / "out"
    lock = held_by_a_live_run(out)
    r = run("restore", src, "--out", out, "--quiet")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {out}: output folder is in use by pid {os.getpid()}")
    assert fake.calls == [] and tree(out) == [LOCK_NAME]
    assert json.loads((out / LOCK_NAME).read_text()) == lock


def test_dry_run_says_a_live_run_holds_the_output_folder(tmp_path, fake):
    """A dry run beside a live run listed the files and exited 0, where a run started then exits 1 at once."""
    from PIL import Image

    src, out = tmp_path / "a.png", tmp_path / "out"
    Image.new("L", (8, 8)).save(src)
    lock = held_by_a_live_run(out)
    r = run("restore", src, "--out", out, "--dry-run")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {out}: output folder is in use by pid {os.getpid()}")
    assert r.stdout.splitlines()[0] == "restore     a.png  (new)"
    assert tree(out) == [LOCK_NAME] and json.loads((out / LOCK_NAME).read_text()) == lock
    stale = {"pid": os.getpid(), "host": socket.gethostname(), "started": 1.0}  # pid reused: a run takes it over
    (out / LOCK_NAME).write_text(json.dumps(stale))
    r = run("restore", src, "--out", out, "--dry-run")
    assert r.exit_code == 0 and r.stderr == "" and tree(out) == [LOCK_NAME]


def test_dry_run_where_the_lock_cannot_be_read_or_made_says_so_in_one_line(tmp_path, fake):
    """A lock path that is a folder, or an output folder under a file, ended the dry run with a traceback, where
    the run stops at once with one line."""
    from PIL import Image

    src, out = tmp_path / "a.png", tmp_path / "out"
    Image.new("L", (8, 8)).save(src)
    (out / LOCK_NAME).mkdir(parents=True)
    real = run("restore", src, "--out", out)
    assert real.exit_code == 1 and "cannot create or lock the output folder (Is a directory)" in real.stderr
    r = run("restore", src, "--out", out, "--dry-run")
    assert r.exit_code == 1
    assert r.stderr == f"error: {out}: cannot create or lock the output folder (Is a directory): a run now would " \
                       f"not start\n"
    assert r.stdout.splitlines()[0] == "restore     a.png  (new)" and tree(out) == []
    r = run("restore", src, "--out", src / "out", "--dry-run")  # under a file: the run cannot create it
    assert r.exit_code == 1 and "cannot create or lock the output folder (Not a directory)" in r.stderr


def test_dry_run_does_not_call_a_moved_source_recognised_for_a_word_in_its_old_path(tmp_path, fake):
    """The dry run took any note holding "recognised" for recognition by provenance, so a source moved from a
    folder named "unrecognised" (note "source moved but unchanged (same sha256 as ...)") was listed as such."""
    put(tmp_path / "unrecognised" / "a.tif", b"scan")
    out = tmp_path / "out"
    assert run("restore", tmp_path / "unrecognised", "--out", out).exit_code == 0
    put(tmp_path / "sorted" / "a.tif", b"scan")
    r = run("restore", tmp_path / "sorted", "--out", out, "--dry-run")
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "up to date  a.tif", r.output


def test_stale_lock_is_taken_over_and_released(tmp_path, fake):
    src, out = put(tmp_path / "a.jpg"), tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started": 1.0}))
    r = run("restore", src, "--out", out)
    assert r.exit_code == 0 and f"took over a stale lock left by pid {child.pid}" in r.stderr
    assert not (out / LOCK_NAME).exists() and (out / "a.jpg").exists()


def test_partial_files_of_a_killed_run_are_removed_when_its_lock_is_taken_over(tmp_path, fake):
    """SIGKILL mid-write leaves the write's temp file (nothing runs to remove it): the run that takes over the lock,
    the only writer then, removes those under --out and says so; other files are never touched."""
    root, out = scans(tmp_path), tmp_path / "out"
    partial = [put(out / ".a.jpg.oldphoto-tmp-0123abcd", b"half"),
               put(out / "album 1" / ".b.PNG.oldphoto-tmp-9f9f9f9f")]
    kept = [put(out / "notes.oldphoto-tmp-0123abcd"), put(out / ".x.oldphoto-tmp-draft")]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started": 1.0}))
    r = run("restore", root, "--out", out)
    assert r.exit_code == 0 and all(f"note: {p}: removed, a partial file left by that run" in r.stderr for p in partial)
    assert not any(p.exists() for p in partial) and all(p.exists() for p in kept)


def test_run_error_releases_the_lock(tmp_path, monkeypatch):
    def no_weights(cfg, device):
        raise WeightsError("weights/detector-v1.pt: weights file missing for model 'detector-v1'")

    monkeypatch.setattr(pipeline, "load_models", no_weights)
    out = tmp_path / "out"
    r = run("restore", put(tmp_path / "a.jpg"), "--out", out)
    assert r.exit_code == 1 and r.stderr.startswith("error: weights/detector-v1.pt: weights file missing")
    assert not out.exists()  # a run that cannot start leaves no trace


def test_ctrl_c_while_loading_the_models_exits_130_without_a_trace(tmp_path, monkeypatch):
    def interrupted(cfg, device):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_models", interrupted)
    out = tmp_path / "out"
    r = run("restore", put(tmp_path / "a.jpg"), "--out", out)
    assert r.exit_code == 130 and r.stderr == "stopped: interrupted by Ctrl-C\n" and "Aborted" not in r.output
    assert not out.exists()


def test_ctrl_c_after_taking_the_lock_exits_130_and_releases_it(tmp_path, fake, monkeypatch):
    def interrupted(out_dir, folder_fd=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("oldphoto.state.RunState.open", interrupted)
    out = tmp_path / "out"
    r = run("restore", put(tmp_path / "a.jpg"), "--out", out)
    assert r.exit_code == 130 and "stopped: interrupted by Ctrl-C" in r.stderr and "Aborted" not in r.output
    assert not (out / LOCK_NAME).exists() and fake.calls == []


@pytest.mark.parametrize("signum, presses, code", [(signal.SIGINT, 1, 130), (signal.SIGTERM, 1, 143),
                                                    (signal.SIGINT, 2, 130)])
def test_stop_signal_abandons_the_current_file_and_writes_the_report(tmp_path, fake, press, signum, presses, code):
    root, out = scans(tmp_path), tmp_path / "out"

    def interrupt_on_b(src, should_stop):
        if src.name == "b.PNG":
            press(signum, presses)
            deadline = time.monotonic() + 10
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs in the main thread
            if should_stop():
                raise KeyboardInterrupt("stop requested")  # what the real pipeline does

    fake.before_write = interrupt_on_b
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)  # SIG_IGN under nohup &
    r = run("restore", root, "--out", out, "--jobs", 1)
    assert r.exit_code == code, r.output
    assert "stopping" in r.stderr
    d = report_of(out)
    assert d["interrupted"] is True
    assert [f["status"] for f in d["files"]] == ["done", "interrupted", "pending"]
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg"])  # nothing partial, lock released
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored
    # the next run picks up where this one stopped
    fake.before_write = None
    fake.calls.clear()
    assert run("restore", root, "--out", out).exit_code == 0
    assert sorted(p.name for p in fake.calls) == ["b.PNG", "c.tif"]


def press_ctrl_c_twice(should_stop) -> None:
    """Ctrl-C twice from inside a photo's work, the second once the run has taken the first (should_stop() true):
    two signals pending at once would count as one press."""
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 10
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


def test_second_ctrl_c_lets_no_output_in_after_the_run_let_go(tmp_path, fake, hard_exits):
    """A file still in flight when a second Ctrl-C ends the run must not put its outputs in place afterwards,
    unrecorded, in a folder whose lock is released (the gate turns it away); the next run redoes it."""
    root, out = scans(tmp_path), tmp_path / "out"
    run_over, attempted = threading.Event(), threading.Event()
    outcome: list[BaseException] = []
    real = fake.process_file

    def process_file(src, *a, **kw):
        try:
            return real(src, *a, **kw)
        except BaseException as e:
            outcome.append(e)
            raise
        finally:
            if Path(src).name == "b.PNG":
                attempted.set()

    def press_twice_then_finish(src, should_stop):
        if src.name == "b.PNG":
            press_ctrl_c_twice(should_stop)
            run_over.wait(10)  # this file's work goes on after the run has ended

    fake.before_write = press_twice_then_finish
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "process_file", process_file)
        r = run("restore", root, "--out", out, "--jobs", 1)
    run_over.set()
    assert attempted.wait(10)
    assert r.exit_code == 130, r.output
    assert hard_exits == [130]  # the process would not have waited for b's thread either
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "interrupted", "pending"]
    assert tree(out) == sorted([STATE_NAME, "report.json", "a.jpg"])
    assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt)
    fake.before_write = None
    fake.calls.clear()
    assert run("restore", root, "--out", out).exit_code == 0
    assert sorted(p.name for p in fake.calls) == ["b.PNG", "c.tif"]


def test_a_third_ctrl_c_while_the_run_lets_go_still_ends_the_process_at_once(tmp_path, fake, hard_exits,
                                                                            monkeypatch):
    """Ctrl-C pressed again and again at a run that seems stuck: the third lands while the run closes the commit gate
    a second time (it waits a few seconds for a temp file being made on a share that hangs), which skipped noting
    the files still in flight, so the process waited at exit for b's thread, blocked for good."""
    from oldphoto import runner

    root, out = scans(tmp_path), tmp_path / "out"
    run_over = threading.Event()
    real_let_go, calls = runner._let_go, []

    def let_go(gate, display):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the third press, in the middle of it
        real_let_go(gate, display)

    def press_twice(src, should_stop):
        if src.name == "b.PNG":
            press_ctrl_c_twice(should_stop)
            run_over.wait(10)  # blocked in I/O

    monkeypatch.setattr(runner, "_let_go", let_go)
    fake.before_write = press_twice
    r = run("restore", root, "--out", out, "--jobs", 1)
    run_over.set()
    assert r.exit_code == 130 and hard_exits == [130], r.output
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "interrupted", "pending"]


@pytest.mark.parametrize("failure", ["report", "bug", "ctrl-c"])
def test_a_run_that_let_go_of_a_stuck_thread_ends_at_once_whatever_ends_it(tmp_path, fake, hard_exits, monkeypatch,
                                                                         failure):
    """Ctrl-C twice while b's thread is blocked for good in I/O, then the end of the run fails: the report cannot be
    written (RunError), a bug, or a third Ctrl-C while the state is saved. The run still ends the process at once,
    after the line or traceback it printed before; it skipped that, and the process waited at exit for b's thread."""
    from oldphoto.report import Report
    from oldphoto.state import RunState

    root, out = scans(tmp_path), tmp_path / "out"
    run_over = threading.Event()

    def press_twice(src, should_stop):
        if src.name == "b.PNG":
            press_ctrl_c_twice(should_stop)
            run_over.wait(10)  # blocked in I/O

    def fail(*args, **kwargs):
        if failure == "report":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise RuntimeError("boom") if failure == "bug" else KeyboardInterrupt

    monkeypatch.setattr(*((RunState, "close") if failure == "ctrl-c" else (Report, "write")), fail)
    fake.before_write = press_twice
    r = run("restore", root, "--out", out, "--jobs", 1)
    run_over.set()
    code = {"report": 1, "bug": 1, "ctrl-c": 130}[failure]
    assert r.exit_code == code and hard_exits == [code], r.output
    last = r.stderr.splitlines()[-1]
    if failure == "report":
        assert last == f"error: {out / 'report.json'}: cannot write the report (No space left on device)"
    elif failure == "bug":
        assert last == "RuntimeError: boom" and "Traceback (most recent call last)" in r.stderr
    else:
        assert last == "stopped: interrupted by Ctrl-C"
    assert not (out / LOCK_NAME).exists()


def test_second_ctrl_c_records_a_file_whose_outputs_are_already_in_place(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"

    def press_twice(src, should_stop):
        if src.name == "b.PNG":
            press_ctrl_c_twice(should_stop)
            time.sleep(0.3)  # the run ends while this call still has to report back

    fake.after_write = press_twice
    r = run("restore", root, "--out", out, "--jobs", 1)
    assert r.exit_code == 130, r.output
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "done", "pending"]
    fake.after_write = None
    fake.calls.clear()
    assert run("restore", root, "--out", out).exit_code == 0
    assert [p.name for p in fake.calls] == ["c.tif"]  # b was recorded, not left for a conflict


_HUNG_RUN = r"""
import sys
import threading
from pathlib import Path

import oldphoto.io as oio
import oldphoto.io.writer as writer
import oldphoto.pipeline as pipeline
from oldphoto.cli import main
from restore_samples import IdentityRestorer, WhiteDetector  # the stand-in models of the test's rerun


marks = Path(sys.argv[1])
forever = threading.Event()  # never set: a network share that stopped answering
real_read = oio.read


def read(path, *args, **kwargs):
    if Path(path).name.startswith("a_hung_read"):
        (marks / "read").touch()
        forever.wait()
    return real_read(path, *args, **kwargs)


def write_png(out, *args, **kwargs):  # only b's output is a PNG: blocked with half a file written
    out.write(b"\x89PNG\r\n\x1a\n and then nothing more")
    (marks / "write").touch()
    forever.wait()


pipeline.load_models = lambda cfg, device: pipeline.Models(detector=WhiteDetector(), restorer=IdentityRestorer())
oio.read = read
writer._write_png = write_png
sys.argv = ["oldphoto", "restore", *sys.argv[2:]]
main()
"""


def test_a_second_sigterm_ends_the_process_even_when_a_worker_never_returns(tmp_path, stand_in_models):
    """A worker blocked for good in I/O (a scan on a hung network share, an output being written there) kept the
    process alive after the second SIGTERM, whatever cron or the service manager expected: the interpreter joins
    every worker thread before it exits. The run now cleans up what it owns (the temp file of the half-written
    output, the lock), saves its state and report, and exits 143 at once. In a subprocess: it ends its process."""
    import numpy as np
    import tifffile
    from PIL import Image

    root, out, marks = tmp_path / "scans", tmp_path / "out", tmp_path / "marks"
    root.mkdir()
    marks.mkdir()
    rng = np.random.default_rng(5)
    for name in ("0_done.tif", "c_pending.tif"):
        tifffile.imwrite(root / name, rng.integers(0, 255, (20, 30, 3), dtype=np.uint8), photometric="rgb")
    for name in ("a_hung_read.png", "b_hung_write.png"):
        Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L").save(root / name)
    repo = Path(__file__).resolve().parents[1]
    paths = [str(repo), str(repo / "tests"), os.environ.get("PYTHONPATH", "")]  # oldphoto, restore_samples
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-c", _HUNG_RUN, str(marks), str(root), "--out", str(out),
                                  "--jobs", "2", "--tile", "128", "--overlap", "16"],
                                 stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path)
    try:
        def soon(done, what, seconds=60.0):  # generous: the CPU may be shared; it normally takes a second or two
            deadline = time.monotonic() + seconds
            while not done() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert done(), f"{what}; stderr: {err.read_text()}"

        soon(lambda: (marks / "read").exists() and (marks / "write").exists(), "the workers never blocked")
        assert len([p for p in out.iterdir() if ".oldphoto-tmp-" in p.name]) == 1  # b's half-written output
        child.send_signal(signal.SIGTERM)
        soon(lambda: "stopping" in err.read_text(), "the first SIGTERM was not taken")
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 143, err.read_text()
    assert tree(out) == sorted([STATE_NAME, "report.json", "0_done.tif"])  # no temp file, no lock
    text = (out / STATE_NAME).read_text()
    assert text.endswith("\n") and [json.loads(line).get("rel") for line in text.splitlines()] == [None, "0_done.tif"]
    report = report_of(out)
    assert report["interrupted"] is True
    assert [f["status"] for f in report["files"]] == ["done", "interrupted", "interrupted", "pending"]
    r = run("restore", root, "--out", out, "--jobs", 2, "--tile", 128, "--overlap", 16)  # picks up the rest
    assert r.exit_code == 0, r.output
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "done", "done", "done"]


def test_jobs_keep_several_files_in_flight(tmp_path, fake):
    root = tmp_path / "in"
    for i in range(4):
        put(root / f"{i}.jpg", f"photo {i}".encode())
    barrier = threading.Barrier(2, timeout=10)

    def meet(src, should_stop):
        if src.name in ("0.jpg", "1.jpg"):
            barrier.wait()  # only passes when two files are processed at the same time

    fake.before_write = meet
    r = run("restore", root, "--out", tmp_path / "out", "--jobs", 2)
    assert r.exit_code == 0, r.output
    assert [f["relative"] for f in report_of(tmp_path / "out")["files"]] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]


def test_terminal_gets_progress_bars_and_summary(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats the captured stream as a terminal
    monkeypatch.setenv("COLUMNS", "120")
    root = scans(tmp_path)
    put(root / "z.jpg", b"BAD")
    r = run("restore", root, "--out", tmp_path / "out")
    assert r.exit_code == 1
    assert "files" in r.stderr and "4/4" in r.stderr and "files/s" in r.stderr and "ETA" in r.stderr
    assert f"error: {root / 'z.jpg'}: not a decodable image" in r.stderr
    assert "megapixels" in r.stdout and f"failed: {root / 'z.jpg'}: not a decodable image" in r.stdout


def test_explicit_non_image_is_noted_not_failed(tmp_path, fake):
    r = run("restore", put(tmp_path / "a.jpg"), put(tmp_path / "notes.txt"), "--out", tmp_path / "out")
    assert r.exit_code == 0 and "notes.txt: not a supported image type" in r.stderr


# ------------------------------------------------------------------------------------- train / eval / synth

TOY = types.ModuleType("oldphoto_toy_trainer")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    out: Path = Path("runs/toy")  # run folder
    steps: int = 10  # optimisation steps
    lr: float = 1e-3  # learning rate
    crop: tuple[int, int] = (64, 64)  # crop height, width
    sizes: tuple[int, ...] = (1, 2)  # any number of sizes
    amp: bool = False  # mixed precision
    which: str = "vae1"  # which model
    real_old: Path | None = None  # optional folder
    balance: str = "hed"

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


def toy_run(cfg, log):
    log(f"training {cfg.which} for {cfg.steps} steps")
    return {"steps": cfg.steps, "lr": cfg.lr, "crop": cfg.crop, "sizes": cfg.sizes, "amp": cfg.amp,
            "which": cfg.which, "out": cfg.out, "real_old": cfg.real_old}


def toy_export(run_dir, name):
    if not (Path(run_dir) / "best.pt").is_file():
        raise FileNotFoundError(f"{run_dir}/best.pt missing")
    return Path("weights") / f"{name}.pt"


TOY.Config, TOY.run, TOY.EvalConfig, TOY.evaluate = ToyConfig, toy_run, ToyConfig, toy_run
TOY.export = toy_export


@pytest.fixture
def toy(monkeypatch):
    import oldphoto.train as train

    monkeypatch.setitem(sys.modules, TOY.__name__, TOY)
    monkeypatch.setitem(train.TRAINERS, "toy1", TOY.__name__)
    monkeypatch.setitem(train.TRAINERS, "toy2", TOY.__name__)
    monkeypatch.setitem(train.EVALUATORS, "toy", TOY.__name__)


def test_train_builds_typed_config_from_set_pairs(toy):
    r = run("train", "toy2", "--set", "steps=5", "--set", "lr=0.5", "--set", "crop=32,48", "--set", "sizes=(3,4,5)",
            "--set", "amp=yes", "--set", "out=~/x", "--set", "real-old=/data/old")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"steps": 5, "lr": 0.5, "crop": [32, 48], "sizes": [3, 4, 5], "amp": True,
                                    "which": "toy2", "out": str(Path("~/x").expanduser()), "real_old": "/data/old"}
    assert "training toy2 for 5 steps" in r.stderr  # log lines go to stderr, the result to stdout
    r = run("eval", "toy", "--set", "real_old=none", "--set", "which=vae2")
    assert json.loads(r.stdout)["real_old"] is None and json.loads(r.stdout)["which"] == "vae2"


@pytest.mark.parametrize("pair, message", [
    ("nope=1", "unknown key 'nope'"),
    ("steps=many", "expected int, got 'many'"),
    ("amp=maybe", "expected true or false"),
    ("crop=1,2,3", "expected 2 comma-separated values"),
    ("steps", "expected KEY=VALUE"),
    ("steps=-1", "steps must be >= 0"),
])
def test_bad_set_pairs_are_usage_errors(toy, pair, message):
    r = run("train", "toy1", "--set", pair)
    assert r.exit_code == 2 and message in r.output
    if "unknown key" in message:
        assert "valid keys: out, steps, lr, crop, sizes, amp, which, real_old, balance" in r.output


def test_unknown_target_is_a_usage_error(toy):
    r = run("eval", "nothing")
    assert r.exit_code == 2 and "choose one of:" in r.output and "toy" in r.output


def test_help_config_lists_fields_defaults_and_comments(toy):
    r = run("train", "toy1", "--help-config")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert any(line.split() == ["steps", "int", "=", "10", "#", "optimisation", "steps"] for line in lines)
    assert any(line.startswith("  crop") and "(64, 64)" in line and "# crop height, width" in line for line in lines)
    assert any(line.split() == ["balance", "str", "=", "'hed'"] for line in lines)  # no comment: none shown


def test_help_config_shows_the_defaults_the_command_runs_with(toy):
    # toy1 and toy2 share a module, as vae1 and vae2 do: each runs with its own name as `which`, whatever the
    # dataclass says, and --help-config lists that default
    for name in ("toy1", "toy2"):
        r = run("train", name, "--help-config")
        assert r.exit_code == 0
        which = [line.split() for line in r.stdout.splitlines() if line.startswith("  which ")]
        assert which == [["which", "str", "=", repr(name), "#", "which", "model"]]
        assert json.loads(run("train", name).stdout)["which"] == name


def test_synth_writes_examples_from_the_corpus(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(corpus / f"p{i:02d}.jpg")
    monkeypatch.setenv("OLDPHOTO_CORPUS", str(corpus))
    out = tmp_path / "synth"
    r = run("synth", out, "--count", 2, "--seed", 3, "--size", 32)
    assert r.exit_code == 0, r.output
    written = sorted(Path(p).name for p in r.stdout.split())
    assert written == sorted(f"synth_3_{k:04d}{s}" for k in range(2) for s in (".png", ".mask.png", ".clean.png"))
    assert all(Image.open(out / n).size == (32, 32) for n in written)

    # the second generator (kept for checking) writes the same files, with other images
    r2 = run("synth", tmp_path / "second", "--count", 2, "--seed", 3, "--size", 32, "--generator", "second")
    assert r2.exit_code == 0, r2.output
    assert sorted(Path(p).name for p in r2.stdout.split()) == written
    a = np.asarray(Image.open(out / "synth_3_0000.png"))
    b = np.asarray(Image.open(tmp_path / "second" / "synth_3_0000.png"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    bad = run("synth", tmp_path / "bad", "--generator", "second", "--ageing", 0.2)
    assert bad.exit_code != 0 and "ageing applies to the training recipe only" in bad.output
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------- end to end

@pytest.fixture
def stand_in_models(monkeypatch):
    use_stand_in_models(monkeypatch)


def test_end_to_end_with_the_real_pipeline(tmp_path, stand_in_models):
    import numpy as np
    import tifffile
    from PIL import Image

    root, rgb16, gray8 = real_scans(tmp_path)
    out = tmp_path / "out"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    r = run("restore", root, "--out", out, "--tile", 128, "--overlap", 16, "--device", "cpu")
    assert r.exit_code == 1, r.output  # torn.jpg fails alone
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert sorted(files) == ["box 2/portrait.tif", "street.png", "torn.jpg"]
    assert files["torn.jpg"]["status"] == "failed" and f"error: {root / 'torn.jpg'}: " in r.stderr
    batches = report_of(out)["batches"]  # one tile each; with --jobs 2 they may share one device call
    assert batches["tiles"] == 2 and batches["calls"] in (1, 2) and batches["shared_calls"] == 2 - batches["calls"]
    for rel, (w, h) in {"box 2/portrait.tif": (90, 70), "street.png": (40, 50)}.items():
        f = files[rel]
        assert f["status"] == "done" and (f["width"], f["height"]) == (w, h) and f["outputs"] == [str(out / rel)]
        assert f["mask_coverage"] > 0 and f["seconds"]
    # the identity restorer gives back the input exactly, bit depth and layout kept
    assert np.array_equal(tifffile.imread(out / "box 2" / "portrait.tif"), rgb16)
    assert np.array_equal(np.asarray(Image.open(out / "street.png")), gray8)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()} == before

    r = run("restore", root, "--out", out, "--tile", 128, "--overlap", 16, "-q")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1  # only torn.jpg again
    assert [files["status"] for files in report_of(out)["files"]] == ["skipped", "skipped", "failed"]


def test_a_png_with_a_damaged_ancillary_chunk_is_restored_with_a_note(tmp_path, stand_in_models):
    """A tIME chunk with a bad CRC (libpng only warns about it) costs the photo nothing: restored, exit 0, the
    dropped chunk named in the file's notes in report.json; the scan is not touched."""
    import numpy as np
    from PIL import Image

    from oldphoto.io import png

    root, out = tmp_path / "scans", tmp_path / "out"
    gray = np.random.default_rng(3).integers(0, 240, (30, 20), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "plain.png")
    data = (tmp_path / "plain.png").read_bytes()
    stamp = bytearray(png.chunk(b"tIME", bytes([7, 234, 1, 2, 3, 4, 5])))
    stamp[-1] ^= 1
    scan = put(root / "old.png", data[:33] + bytes(stamp) + data[33:])
    before = scan.read_bytes()
    r = run("restore", root, "--out", out, "--tile", 128, "--overlap", 16, "--device", "cpu")
    assert r.exit_code == 0, r.output
    (f,) = report_of(out)["files"]
    assert f["status"] == "done" and "PNG tIME chunk at byte 33 dropped: CRC mismatch (damaged)" in f["notes"]
    assert np.array_equal(np.asarray(Image.open(out / "old.png")), gray) and scan.read_bytes() == before


def test_a_temp_folder_that_cannot_map_files_is_in_the_report_or_fails_the_file(tmp_path, stand_in_models,
                                                                                unmappable_folders, monkeypatch):
    """TMPDIR on a file system that cannot map files (some FUSE and network mounts): the large buffers go to the
    system temp folder, which each file's report notes name; where that cannot map them either, each file fails
    with one line naming the folders and why."""
    import tempfile

    from oldphoto.io import buffers

    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    named, system = tmp_path / "tmpdir", tmp_path / "system"
    named.mkdir()
    system.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(named))
    monkeypatch.setattr(buffers, "SYSTEM_TEMP", (str(system),))
    monkeypatch.setattr(buffers, "DISK_THRESHOLD", 0)  # every pixel buffer is a large one
    unmappable_folders(named)
    r = run("restore", root, "--out", tmp_path / "out", "--tile", 128, "--overlap", 16, "--device", "cpu")
    assert r.exit_code == 0, r.output
    note = f"pixel buffers: {named} cannot memory-map files (No such device); put in {system} instead"
    assert [(f["status"], f["notes"].count(note)) for f in report_of(tmp_path / "out")["files"]] == [("done", 1)] * 2
    unmappable_folders(system)
    r = run("restore", root, "--out", tmp_path / "again", "--tile", 128, "--overlap", 16, "--device", "cpu")
    assert r.exit_code == 1
    files = report_of(tmp_path / "again")["files"]
    assert [f["status"] for f in files] == ["failed"] * 2
    for f in files:
        assert f["error"].startswith("no temp folder can hold a pixel buffer of ") and f["error"].endswith(
            f": {named} cannot memory-map files (No such device), nor can {system} (No such device); point TMPDIR "
            "at a folder on a local disk")
        assert f"error: {f['source']}: {f['error']}\n" in r.stderr


def test_outputs_of_a_lost_state_file_are_recognised_by_their_provenance(tmp_path, stand_in_models):
    import numpy as np
    from PIL import Image

    root, rgb16, gray8 = real_scans(tmp_path)
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--save-mask", "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 1  # torn.jpg fails alone
    made = {p: p.read_bytes() for p in out.rglob("*") if p.suffix in (".tif", ".png")}
    (out / STATE_NAME).unlink()  # e.g. the folder was copied without its hidden files

    dry = run("restore", root, "--out", out, *opts, "--dry-run")
    assert "up to date  street.png  (recognised from its outputs' provenance)" in dry.stdout.splitlines()
    assert not (out / STATE_NAME).exists()
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 1, r.output
    files = {f["relative"]: f for f in report_of(out)["files"]}
    for rel, (w, h) in {"box 2/portrait.tif": (90, 70), "street.png": (40, 50)}.items():
        f = files[rel]
        assert f["status"] == "skipped" and (f["width"], f["height"]) == (w, h), f
        assert any("recognised from the provenance" in n for n in f["notes"])
        assert f["outputs"] == [str(out / rel), str(out / (rel.rsplit(".", 1)[0] + ".mask.png"))]
    assert len(made) == 4 and all(p.read_bytes() == data for p, data in made.items())  # nothing written again
    again = run("restore", root, "--out", out, *opts)  # recorded again: an ordinary skip now
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert again.exit_code == 1 and files["street.png"]["status"] == "skipped" and not files["street.png"]["notes"]

    (out / STATE_NAME).unlink()
    changed = run("restore", root, "--out", out, *opts, "--mask-dilate", 3)  # its own outputs, other settings
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "done", "failed"], changed.output
    (out / STATE_NAME).unlink()
    street = np.asarray(Image.open(root / "street.png")).copy()
    street[0, 0] ^= 1
    Image.fromarray(street, "L").save(root / "street.png")  # another photo under the same name: refused
    run("restore", root, "--out", out, *opts)
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["street.png"]["status"] == "failed" and files["box 2/portrait.tif"]["status"] == "done"


def test_a_jpeg_whose_edit_history_is_over_64_kb_is_skipped_and_recognised_after_a_lost_state_file(tmp_path,
                                                                                                  stand_in_models):
    """The history, oldphoto's event last, goes to Extended XMP when it alone does not fit in one segment; the
    outputs were then no longer recognised once the state file was lost (refused: "not made from this file")."""
    import numpy as np

    from oldphoto.io import Metadata, write

    events = "".join(f'<rdf:li rdf:parseType="Resource"><stEvt:action>saved</stEvt:action><stEvt:instanceID>'
                     f"xmp.iid:{i:032x}</stEvt:instanceID><stEvt:softwareAgent>Adobe Photoshop CC</stEvt:softwareAgent>"
                     "</rdf:li>" for i in range(500))
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
              'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"><xmpMM:History><rdf:Seq>'
              f"{events}</rdf:Seq></xmpMM:History></rdf:Description></rdf:RDF></x:xmpmeta>").encode()
    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    pixels = np.random.default_rng(5).integers(0, 240, (40, 50, 3), dtype=np.uint8)
    assert write(root / "scan.jpg", pixels, None, "JPEG", Metadata(xmp=packet)) == []  # Extended XMP already
    opts = ("--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    made = (out / "scan.jpg").read_bytes()
    assert made.count(b"http://ns.adobe.com/xmp/extension/\0") >= 2
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped"]
    (out / STATE_NAME).unlink()
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 0, r.output
    (f,) = report_of(out)["files"]
    assert f["status"] == "skipped" and any("recognised from the provenance" in n for n in f["notes"]), f
    assert (out / "scan.jpg").read_bytes() == made


@pytest.mark.parametrize("fmt", ["keep", "png", "tiff"])
def test_outputs_of_a_scan_whose_exif_holds_an_xmp_packet_are_recognised_after_a_lost_state_file(tmp_path,
                                                                                                stand_in_models, fmt):
    """The outputs carry the scan's EXIF byte for byte; a packet in it (tag 700, as some editors write, and the
    description) came before oldphoto's own XMP in the file and was taken for it, so after a lost state file the
    very outputs oldphoto made were refused ("not made from this file") until --overwrite."""
    import numpy as np
    from PIL import Image

    from oldphoto.io import provenance_xmp
    from oldphoto.io import tiff_ifd as T

    packet = provenance_xmp(None, source_name="camera.tif", source_sha256="ee" * 32, software="Camera 1.0")
    ifd = T.Ifd()
    ifd.entries[700] = T.bytes_entry(700, T.BYTE, packet)
    ifd.entries[270] = T.Entry(270, T.ASCII, len(packet) + 1, packet + b"\0")
    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    pixels = np.random.default_rng(3).integers(0, 240, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "scan.jpg", exif=b"Exif\0\0" + T.build_exif(ifd), comment=packet)
    opts = ("--format", fmt, "--save-mask", "--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    made = {p: p.read_bytes() for p in out.iterdir() if p.name.startswith("scan.")}
    restored = next(data for p, data in made.items() if ".mask" not in p.name)
    assert len(made) == 2 and restored.index(packet) < restored.rindex(b"<?xpacket begin=")  # the scan's first
    (out / STATE_NAME).unlink()
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 0, r.output
    (f,) = report_of(out)["files"]
    assert f["status"] == "skipped" and any("recognised from the provenance" in n for n in f["notes"]), f
    assert all(p.read_bytes() == data for p, data in made.items())


def test_files_recognised_after_a_lost_state_file_report_the_notes_of_the_run_that_made_them(tmp_path,
                                                                                           stand_in_models):
    """A skipped file's report lists what its outputs lack, as the run that made them said; recognised from their
    XMP after a lost state file, it listed none (the XMP did not hold them), nor did later runs."""
    import numpy as np
    from PIL import Image

    from oldphoto.io import read_provenance

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 240, (40, 50, 4), dtype=np.uint8), "RGBA").save(root / "clear.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 240, (40, 50, 3), dtype=np.uint8)).save(root / "turned.jpg", exif=exif)
    (root / "turned.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                                     'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                                     'rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:format>image/jpeg'
                                     '</dc:format></rdf:Description></rdf:RDF></x:xmpmeta>')
    opts = ("--format", "jpeg", "--save-mask", "--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    made = {f["relative"]: f["notes"] for f in report_of(out)["files"]}
    assert "alpha dropped: JPEG has no transparency" in made["clear.png"]
    assert any(n.startswith("orientation 6") for n in made["turned.jpg"]), made
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    skipped = {f["relative"]: f["notes"] for f in report_of(out)["files"]}
    assert skipped == made
    (out / STATE_NAME).unlink()
    for _ in range(2):  # recognised, then skipped by the record made from the provenance
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        files = report_of(out)["files"]
        assert [f["status"] for f in files] == ["skipped", "skipped"]
        assert {f["relative"]: [n for n in f["notes"] if "recognised from the provenance" not in n]
                for f in files} == skipped
    sidecar = next(out.glob("turned*.xmp"))
    assert read_provenance(sidecar).notes == read_provenance(out / "turned.jpg").notes == tuple(made["turned.jpg"])
    (root / "turned.xmp").write_text((root / "turned.xmp").read_text().replace("image/jpeg", "image/x-jpeg"))
    assert run("restore", root, "--out", out, *opts).exit_code == 0  # the sidecar alone rewritten: the same notes
    assert read_provenance(sidecar).notes == read_provenance(out / "turned.jpg").notes


def test_a_masks_xmp_says_only_its_own_notes_and_recognition_reports_every_outputs(tmp_path, stand_in_models):
    """A --save-mask mask's oldphoto:Notes repeated the restoration's ("alpha dropped" is not the mask's), and a run
    recognising the outputs after a lost state file read the first output's alone: with --only-mask what its overlay
    lacks (written after the mask) went unreported. A JPEG's notes on its segments (a comment over one) are in its
    packet too, so they are reported then as well."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    from oldphoto.io import read_provenance

    root = tmp_path / "scans"
    root.mkdir()
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "c" * 70000, zip=True)
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 240, (40, 50, 4), dtype=np.uint8), "RGBA").save(root / "clear.png", pnginfo=text)
    alpha = "alpha dropped: JPEG has no transparency"
    comment = "comment of 70000 bytes not written: larger than one JPEG segment"
    for mode, first, later in ((("--format", "jpeg", "--save-mask"), "clear.jpg", "clear.mask.png"),
                               (("--only-mask",), "clear.mask.png", "clear.overlay.jpg")):
        opts = (*mode, "--jobs", 1, "--tile", 128, "--overlap", 16)
        out = tmp_path / f"out{len(mode)}"
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        (made,) = report_of(out)["files"]
        assert made["status"] == "done" and comment in made["notes"], made
        if "--save-mask" in mode:
            assert alpha in made["notes"] and read_provenance(out / later).notes == ()  # nothing of the mask's own
            assert set(read_provenance(out / first).notes) == set(made["notes"])
        else:  # the overlay's comment, said in the overlay alone
            assert comment not in read_provenance(out / first).notes
            assert read_provenance(out / later).notes == (comment,)
        (out / STATE_NAME).unlink()
        for _ in range(2):  # recognised, then skipped by the record made from the provenance
            assert run("restore", root, "--out", out, *opts).exit_code == 0
            (f,) = report_of(out)["files"]
            assert f["status"] == "skipped"
            assert [n for n in f["notes"] if "recognised from the provenance" not in n] == made["notes"], mode


def _turned_scan(tmp_path: Path) -> Path:
    """tmp_path/scans holding turned.jpg: 50 x 40 noise stored with EXIF orientation 6 (upright 40 x 50)."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "scans"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.random.default_rng(9).integers(0, 240, (40, 50, 3), dtype=np.uint8)).save(root / "turned.jpg",
                                                                                                  exif=exif)
    return root


@pytest.mark.parametrize("edit", ["turn removed", "turn added"])
def test_a_sidecar_rewritten_alone_says_its_own_notes_also_once_the_state_file_is_lost(tmp_path, stand_in_models,
                                                                                        edit):
    """A sidecar rewritten alone (the restoration up to date) kept the notes on the sidecar the restoration was made
    with, in its own XMP and, after a lost state file, in the report of the run that recognised the outputs (read from
    the restoration's XMP, which stays as it was): a tiff:Orientation since removed was still said not applied, one
    since added was not said. The restoration is not rewritten; the sidecar beside it says the current one's."""
    from oldphoto.io import read_provenance

    root, out = _turned_scan(tmp_path), tmp_path / "out"
    turn, plain = ' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="3"', ""
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"{}><dc:format>image/jpeg'
              '</dc:format></rdf:Description></rdf:RDF></x:xmpmeta>')
    before, after = (turn, plain) if edit == "turn removed" else (plain, turn)
    (root / "turned.xmp").write_text(packet.format(before))
    opts = ("--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    said = [n for n in report_of(out)["files"][0]["notes"] if n.startswith("XMP sidecar turned.xmp: its tiff:")]
    assert len(said) == (edit == "turn removed"), said
    restoration = (out / "turned.jpg").read_bytes()
    (root / "turned.xmp").write_text(packet.format(after))
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (f,) = report_of(out)["files"]
    assert f["status"] == "done" and f["sidecar_only"], f
    now = [n for n in f["notes"] if not n.startswith("sidecar only")]
    assert any(n.startswith("XMP sidecar turned.xmp: its tiff:Orientation 3") for n in now) == (edit == "turn added")
    assert not set(said) & set(now)
    assert (out / "turned.jpg").read_bytes() == restoration  # left as it was, its XMP with its own
    assert read_provenance(out / "turned.xmp").notes == tuple(now)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (f,) = report_of(out)["files"]
    assert f["status"] == "skipped" and f["notes"] == now, f
    (out / STATE_NAME).unlink()
    for recognised in (True, False):  # recognised, then skipped by the record made from the provenance
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        (f,) = report_of(out)["files"]
        assert f["status"] == "skipped" and any("recognised from the provenance" in n for n in f["notes"]) == recognised
        assert [n for n in f["notes"] if "recognised from the provenance" not in n] == now, f


def test_outputs_recognised_without_a_sidecar_now_report_no_notes_on_the_one_they_were_made_with(tmp_path,
                                                                                                 stand_in_models):
    """The restoration's XMP keeps the notes on the sidecar it was made with; recognised after a lost state file once
    that sidecar and its copy beside the restoration are gone, the file was reported with them all the same."""

    root, out = _turned_scan(tmp_path), tmp_path / "out"
    (root / "turned.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="3"/>'
        '</rdf:RDF></x:xmpmeta>')
    opts = ("--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (made,) = report_of(out)["files"]
    assert any(n.startswith("XMP sidecar turned.jpg.xmp: ") for n in made["notes"]), made
    for gone in (root / "turned.jpg.xmp", out / "turned.jpg.xmp", out / STATE_NAME):
        gone.unlink()
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (f,) = report_of(out)["files"]
    assert f["status"] == "skipped" and any("recognised from the provenance" in n for n in f["notes"]), f
    assert [n for n in f["notes"] if "recognised from the provenance" not in n] == [
        n for n in made["notes"] if not n.startswith("XMP sidecar ")]


@pytest.mark.parametrize("edit", ["sidecar removed", "sidecar changed"])
def test_a_mask_made_before_it_kept_only_its_own_notes_brings_back_no_stale_note_on_the_sidecar(tmp_path,
                                                                                              stand_in_models, edit):
    """A --save-mask mask made before masks kept only their own notes repeats the restoration's, those on the
    scan's sidecar as it then was among them. Recognised after a lost state file, those were dropped from the
    restoration's (no sidecar now, or the one beside the restoration, rewritten alone since, says the current one's),
    then added back from the mask's: a tiff:Orientation the sidecar no longer has (or no sidecar at all) was said not
    applied, beside the current sidecar's own."""
    from PIL import Image, PngImagePlugin

    from oldphoto.io import provenance_xmp, read_provenance

    root, out = _turned_scan(tmp_path), tmp_path / "out"
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{}"/>'
              '</rdf:RDF></x:xmpmeta>')
    (root / "turned.jpg.xmp").write_text(packet.format(3))
    opts = ("--save-mask", "--jobs", 1, "--tile", 128, "--overlap", 16)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (made,) = report_of(out)["files"]
    stale = [n for n in made["notes"] if n.startswith("XMP sidecar turned.jpg.xmp: its tiff:Orientation 3")]
    assert stale, made
    # the mask as the version before wrote it: its oldphoto:Notes the restoration's
    mask = out / "turned.mask.png"
    prov = read_provenance(mask)
    old = provenance_xmp(None, source_name="turned.jpg", source_sha256=prov.source_sha256, software=prov.software,
                         parameters=prov.parameters["settings"], models=prov.parameters["models"],
                         mask_coverage=prov.mask_coverage, sidecar_sha256=prov.sidecar_sha256,
                         kept_notes=read_provenance(out / "turned.jpg").notes)
    with Image.open(mask) as im:
        pixels = im.copy()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", old.decode("utf-8"))
    pixels.save(mask, pnginfo=info)
    assert read_provenance(mask).notes == read_provenance(out / "turned.jpg").notes
    (out / STATE_NAME).unlink()  # its record no longer matches the mask
    if edit == "sidecar removed":
        for gone in (root / "turned.jpg.xmp", out / "turned.jpg.xmp"):
            gone.unlink()
    else:  # rewritten alone (the outputs recognised), then the state file lost again
        (root / "turned.jpg.xmp").write_text(packet.format(8))
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        (f,) = report_of(out)["files"]
        assert f["sidecar_only"] and not set(stale) & set(f["notes"]), f
        (out / STATE_NAME).unlink()
    for _ in range(2):  # recognised, then skipped by the record made from the provenance
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        (f,) = report_of(out)["files"]
        assert f["status"] == "skipped", f
        assert not set(stale) & set(f["notes"]), f["notes"]
        now = [n for n in f["notes"] if n.startswith("XMP sidecar ")]
        assert len(now) == (edit == "sidecar changed") and all("tiff:Orientation 8" in n for n in now), now


@pytest.mark.parametrize("mode", [(), ("--only-mask",)])
def test_files_recognised_from_their_provenance_report_their_mask_coverage(tmp_path, stand_in_models, mode):
    """A file skipped by its state record reports its mask coverage; one recognised from its outputs' XMP after a
    lost state file reported none (the XMP did not hold it), nor did later runs, which skip it by the new record."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1, *mode)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    coverage = {f["relative"]: f["mask_coverage"] for f in report_of(out)["files"]}
    assert all(c > 0 for c in coverage.values()), coverage
    (out / STATE_NAME).unlink()
    for _ in range(2):  # recognised, then skipped by the record made from the provenance
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        files = report_of(out)["files"]
        assert [f["status"] for f in files] == ["skipped", "skipped"]
        assert {f["relative"]: f["mask_coverage"] for f in files} == coverage


def test_outputs_of_a_lost_state_file_are_its_own_when_one_is_missing_or_the_settings_went_back(tmp_path,
                                                                                             stand_in_models):
    """After the state file is lost, an output whose XMP shows these settings made it from this very file was
    refused ("not made from this file by oldphoto") when a sibling output was missing, or when the file had since
    been recorded under other settings: it is what the run would make anyway, so it is redone or recognised."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts, "--save-mask").exit_code == 0
    (out / STATE_NAME).unlink()
    (out / "street.mask.png").unlink()
    r = run("restore", root, "--out", out, *opts, "--save-mask")
    assert r.exit_code == 0, r.output
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "done"]
    assert (out / "street.mask.png").is_file()

    assert run("restore", root, "--out", out, *opts, "--format", "tiff").exit_code == 0
    (out / STATE_NAME).unlink()
    assert run("restore", root, "--out", out, *opts, "--format", "tiff").exit_code == 0  # recognised
    r = run("restore", root, "--out", out, *opts, "--save-mask")  # back to the settings of the PNG outputs
    assert r.exit_code == 0, r.output
    street = report_of(out)["files"][1]  # the TIFF's own output path was recorded with --format tiff: redone
    assert street["status"] == "skipped" and any("recognised from the provenance" in n for n in street["notes"])


def lost_state_with_a_mask_missing(tmp_path) -> tuple[Path, Path, tuple]:
    """Scans restored with --save-mask, then the state file and street's mask deleted: (root, out, options)."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1, "--save-mask")
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (out / STATE_NAME).unlink()
    (out / "street.mask.png").unlink()
    return root, out, opts


def test_outputs_of_a_lost_state_file_replaced_by_a_run_are_not_called_new(tmp_path, stand_in_models):
    """After a lost state file, a dry run listed a source whose own outputs (by their XMP) a run replaces, since one
    is missing or they were made with other settings, as "(new)", and the run's report said nothing of it: the
    reason is the one their record would have given."""
    root, out, opts = lost_state_with_a_mask_missing(tmp_path)
    r = run("restore", root, "--out", out, *opts, "--dry-run")
    assert r.exit_code == 0 and r.stdout.splitlines()[:2] == [
        "up to date  box 2/portrait.tif  (recognised from its outputs' provenance)",
        "restore     street.png  (output missing: street.mask.png)"], r.output
    r = run("restore", root, "--out", out, *opts, "--mask-dilate", 3, "--dry-run")
    assert r.exit_code == 0 and r.stdout.splitlines()[:2] == [
        "restore     box 2/portrait.tif  (settings changed)",
        "restore     street.png  (output missing: street.mask.png)"]
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert report_of(out)["files"][1]["notes"][0] == "redone: output missing: street.mask.png"


def test_outputs_made_with_the_models_own_threshold_given_explicitly_are_recognised(tmp_path, stand_in_models):
    """--mask-threshold equal to the models' own is the default (it redoes nothing): the XMP of the outputs must
    say so too, or a lost state file left them refused forever by the very command that made them."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--only-mask", "--mask-threshold", WhiteDetector.threshold, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    (out / STATE_NAME).unlink()
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 0, r.output
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]


def test_existing_output_with_an_xmp_packet_in_an_unreadable_encoding_fails_alone(tmp_path, stand_in_models):
    """Looking for oldphoto's provenance in a file already at an output path (the state file knows nothing of it)
    must not end the run when its XMP declares an encoding the XML parser cannot use."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    odd = (b"PNG<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?><?xml version='1.0' encoding='bogus'?>"
           b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/><?xpacket end='w'?>")
    put(out / "street.png", odd)
    r = run("restore", root, "--out", out, "--jobs", 1)
    assert r.exit_code == 1 and "street.png already exists and was not made from this file" in r.stderr
    assert [f["status"] for f in report_of(out)["files"]] == ["done", "failed"]
    assert (out / "street.png").read_bytes() == odd


def test_dry_run_lists_what_a_run_would_do_and_writes_nothing(tmp_path, stand_in_models):
    root, rgb16, gray8 = real_scans(tmp_path)
    out = tmp_path / "out"
    r = run("restore", root, "--out", out, "--dry-run")
    assert r.exit_code == 1 and not out.exists(), r.output  # torn.jpg would fail: its header is damaged
    lines = r.stdout.splitlines()
    assert lines[:2] == ["restore     box 2/portrait.tif  (new)", "restore     street.png  (new)"]
    assert lines[2].startswith("fail        torn.jpg: ") and f"error: {root / 'torn.jpg'}: " in r.stderr
    assert lines[3] == "dry run: 2 to restore, 0 up to date, 1 would fail; nothing was written"

    assert run("restore", root, "--out", out, "--tile", 128).exit_code == 1
    (root / "torn.jpg").unlink()
    (out / "street.png").unlink()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    r = run("restore", root, "--out", out, "--tile", 128, "--dry-run", "--only-mask")
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        "mask        box 2/portrait.tif  (settings changed)", "mask        street.png  (settings changed)",
        "dry run: 2 to mask, 0 up to date, 0 would fail; nothing was written"]
    r = run("restore", root, "--out", out, "--tile", 128, "--dry-run", "-q")
    assert r.exit_code == 0 and r.stderr == "" and r.stdout.splitlines() == [
        "up to date  box 2/portrait.tif", "restore     street.png  (output missing: street.png)",
        "dry run: 1 to restore, 1 up to date, 0 would fail; nothing was written"]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before
    bad = run("restore", root, "--out", out, "--dry-run", "--report", tmp_path / "r.json")
    assert bad.exit_code == 2 and "--dry-run writes nothing" in bad.output


def test_end_to_end_only_mask(tmp_path, stand_in_models):
    import numpy as np
    from PIL import Image

    root, rgb16, gray8 = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "masks"
    r = run("restore", root, "--out", out, "--only-mask", "--quiet")
    assert r.exit_code == 0 and r.output == ""
    # by default --only-mask writes the detector's own mask, not grown (growing is for restoration)
    mask = np.asarray(Image.open(out / "box 2" / "portrait.mask.png"))
    truth = (rgb16 == 65535).all(axis=2)
    assert mask.shape == (70, 90) and np.array_equal(mask == 255, truth)
    assert (out / "street.overlay.jpg").exists()
    assert json.loads((out / "report.json").read_text())["settings"]["mask_dilate"] == 0

    grown = tmp_path / "grown"
    assert run("restore", root, "--out", grown, "--only-mask", "--mask-dilate", 1, "--quiet").exit_code == 0
    mask = np.asarray(Image.open(grown / "box 2" / "portrait.mask.png")) == 255
    assert mask.sum() > truth.sum() and np.array_equal(mask & truth, truth)


def test_end_to_end_scope_defects_with_save_mask(tmp_path, stand_in_models, monkeypatch):
    import numpy as np
    import tifffile
    from PIL import Image

    class Grey:  # a "restorer" that changes every pixel: only the masked ones may show it
        def __call__(self, tiles, mask):
            return torch.full_like(tiles, 0.5)

    monkeypatch.setattr(pipeline, "load_models", lambda cfg, device: pipeline.Models(detector=WhiteDetector(),
                                                                                      restorer=Grey()))
    root, rgb16, gray8 = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    r = run("restore", root, "--out", out, "--scope", "defects", "--save-mask", "--quiet")
    assert r.exit_code == 0 and r.output == ""
    files = {f["relative"]: f["outputs"] for f in report_of(out)["files"]}
    assert files["street.png"] == [str(out / "street.png"), str(out / "street.mask.png")]
    restored = tifffile.imread(out / "box 2" / "portrait.tif")
    mask = np.asarray(Image.open(out / "box 2" / "portrait.mask.png")) == 255
    truth = torch.from_numpy((rgb16 == 65535).all(axis=2)).float()[None, None]
    assert np.array_equal(mask, dilate(truth, 1)[0, 0].numpy() > 0)  # grown by 1 px, as restored
    assert np.array_equal(restored[~mask], rgb16[~mask])  # untouched, 16 bits exact
    assert (restored[mask] != rgb16[mask]).all(axis=1).mean() > 0.9  # the defects were refilled
    # rerunning skips both outputs
    assert run("restore", root, "--out", out, "--scope", "defects", "--save-mask", "-q").exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]


def test_end_to_end_a_lossless_webp_master_gives_a_lossless_webp_whatever_the_quality(tmp_path, stand_in_models):
    """--format keep: a lossless WebP master (VP8L) gives a lossless WebP, its kept pixels bit for bit, and
    --jpeg-quality redoes only a lossy master's output, also as recognised after a lost state file."""
    import numpy as np
    from PIL import Image

    from oldphoto.io import read

    def bitstreams(path):
        data = path.read_bytes()
        return {c for c in (b"VP8L", b"VP8 ", b"ALPH") if c in data}

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    rgba = np.random.default_rng(3).integers(0, 240, (40, 50, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[30:, 40:, 3] = 0  # a transparent corner, its colour kept too
    rgba[8:10, :, :3] = 255  # a scratch for the detector
    Image.fromarray(rgba).save(root / "lossless.webp", lossless=True, exact=True)
    Image.fromarray(rgba[..., :3]).save(root / "lossy.webp", quality=90)
    opts = ("--scope", "defects", "--save-mask", "--jobs", 1, "-q")
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert bitstreams(out / "lossless.webp") == {b"VP8L"} and bitstreams(out / "lossy.webp") == {b"VP8 "}
    restored = read(out / "lossless.webp", 10_000)
    mask = np.asarray(Image.open(out / "lossless.mask.png")) == 255
    assert mask[8:10].all() and mask.mean() < 0.2
    assert np.array_equal(restored.pixels[~mask], rgba[..., :3][~mask])  # untouched pixels bit for bit
    assert np.array_equal(restored.alpha, rgba[..., 3])
    made = (out / "lossless.webp").read_bytes()

    def statuses():
        return {f["relative"]: f["status"] for f in report_of(out)["files"]}

    assert run("restore", root, "--out", out, *opts, "--jpeg-quality", 80).exit_code == 0
    assert statuses() == {"lossless.webp": "skipped", "lossy.webp": "done"}  # the lossless output does not depend
    (out / STATE_NAME).unlink()  # its outputs' XMP settings: the same as planning's
    assert run("restore", root, "--out", out, *opts, "--jpeg-quality", 70).exit_code == 0
    assert statuses() == {"lossless.webp": "skipped", "lossy.webp": "done"}
    assert (out / "lossless.webp").read_bytes() == made


def test_webp_outputs_of_lossless_masters_written_lossy_before_stay_current(tmp_path, stand_in_models, monkeypatch):
    """Outputs an earlier version wrote lossy from a lossless master, at the default quality, have the settings
    fingerprint of a lossless output now: they stay current (as TIFF outputs written before their master's
    compression was kept); --overwrite writes them lossless. Those made at another quality are redone once."""
    import numpy as np
    from PIL import Image

    import oldphoto.io.raster_read as raster_read

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    Image.fromarray(np.random.default_rng(4).integers(0, 240, (30, 40, 3), dtype=np.uint8)).save(
        root / "a.webp", lossless=True)
    q80 = tmp_path / "q80"
    with monkeypatch.context() as m:
        m.setattr(raster_read, "webp_lossless", lambda fh: None)  # as before: masters not told apart
        assert run("restore", root, "--out", out, "-q").exit_code == 0
        assert run("restore", root, "--out", q80, "-q", "--jpeg-quality", 80).exit_code == 0
    assert b"VP8 " in (out / "a.webp").read_bytes()
    assert run("restore", root, "--out", out, "-q").exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped"]
    assert run("restore", root, "--out", out, "-q", "--overwrite").exit_code == 0
    assert b"VP8L" in (out / "a.webp").read_bytes()
    # made at another quality: recorded with it, which a lossless output's settings no longer hold: redone once
    assert run("restore", root, "--out", q80, "-q", "--jpeg-quality", 80).exit_code == 0
    assert [f["status"] for f in report_of(q80)["files"]] == ["done"] and b"VP8L" in (q80 / "a.webp").read_bytes()


@pytest.mark.parametrize("before, after", [(True, False), (False, True)],
                         ids=["lossless-to-lossy", "lossy-to-lossless"])
def test_a_webp_master_replaced_between_planning_and_its_read_is_recorded_as_written(tmp_path, stand_in_models,
                                                                                     monkeypatch, before, after):
    """Planning reads a WebP master's chunk headers for its fingerprint; a master replaced (lossless <-> lossy, the
    same name) before the job reads it is written as the job read it, and its state record says so: the next run at
    the same --jpeg-quality finds it up to date, not "settings changed" (one more restoration for nothing)."""
    import numpy as np
    from PIL import Image

    import oldphoto.io as oio

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    pixels = np.random.default_rng(5).integers(0, 240, (30, 40, 3), dtype=np.uint8)
    master = root / "a.webp"
    Image.fromarray(pixels).save(master, lossless=before)
    looked = oio.lossless_webp

    def then_replaced(path):
        seen = looked(path)
        Image.fromarray(pixels[::-1].copy()).save(master, lossless=after)  # another file, the same name
        return seen

    with monkeypatch.context() as m:
        m.setattr(oio, "lossless_webp", then_replaced)
        assert run("restore", root, "--out", out, "-q", "--jpeg-quality", 80).exit_code == 0
    assert (b"VP8L" if after else b"VP8 ") in (out / "a.webp").read_bytes()  # as the job read it
    assert run("restore", root, "--out", out, "-q", "--jpeg-quality", 80).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped"]


def test_an_unwritable_output_folder_fails_that_file_alone(tmp_path, stand_in_models):

    root, rgb16, gray8 = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "box 2").write_bytes(b"")  # a file where the output folder must go: as unwritable as it gets for root
    r = run("restore", root, "--out", out, "--tile", 128, "--overlap", 16, "-q")
    assert r.exit_code == 1
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {root / 'box 2' / 'portrait.tif'}: ")
    files = {f["relative"]: f["status"] for f in report_of(out)["files"]}
    assert files == {"box 2/portrait.tif": "failed", "street.png": "done"}
    assert (out / "street.png").is_file() and (out / "box 2").read_bytes() == b""
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name] == []


def test_export_publishes_a_run_under_the_given_name(toy, tmp_path):
    (tmp_path / "run").mkdir()
    r = run("export", "toy1", tmp_path / "run", "--as", "toy-v2")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: {tmp_path / 'run'}: cannot export: ")
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    r = run("export", "toy1", tmp_path / "run", "--as", "toy-v2")
    assert r.exit_code == 0 and r.stdout.strip() == str(Path("weights") / "toy-v2.pt")
    assert run("export", "vae1", tmp_path / "run", "--as", "x").exit_code == 2  # VAEs go out with their mapping
    r = run("export", "toy1", tmp_path / "run", "--as", "x", "--checkpoint", "last")
    assert r.exit_code == 2 and "--checkpoint last is for detector, refine and joint runs" in r.output


def test_a_file_whose_content_is_another_format_is_written_under_its_own_name(tmp_path, stand_in_models):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    Image.fromarray(rng.integers(0, 200, (40, 50, 3), dtype=np.uint8)).save(root / "x.jpg", "JPEG")
    odd = rng.integers(0, 200, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(odd).save(root / "x.png", "JPEG")  # a JPEG named .png: must not land on x.jpg's output
    Image.fromarray(odd).save(root / "y.png", "JPEG")
    put(out / "y.jpg", b"the curator's own file")
    r = run("restore", root, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert (out / "y.jpg").read_bytes() == b"the curator's own file"
    assert Image.open(out / "x.png").format == "PNG" and Image.open(out / "x.jpg").format == "JPEG"
    assert np.array_equal(np.asarray(Image.open(out / "x.png")), np.asarray(Image.open(root / "x.png")))
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["x.png"]["outputs"] == [str(out / "x.png")]
    assert any("content is JPEG but the name says .png" in n for n in files["x.png"]["notes"])
    assert run("restore", root, "--out", out, "-q").exit_code == 0  # and a rerun finds everything current
    assert {f["status"] for f in report_of(out)["files"]} == {"skipped"}


def test_ctrl_c_during_training_exits_130_with_one_line(toy, monkeypatch):
    from oldphoto.train.loop import Stopped

    def stopped(cfg, log):
        raise Stopped("runs/toy: stopped by Ctrl-C at step 3, checkpoint written; run the same command to resume")
    monkeypatch.setattr(TOY, "run", stopped)
    r = run("train", "toy1")
    assert r.exit_code == 130 and "Aborted" not in r.output
    assert r.stderr.splitlines()[-1] == ("stopped: runs/toy: stopped by Ctrl-C at step 3, checkpoint written; run "
                                         "the same command to resume")


@pytest.mark.parametrize("target, names, says", [
    ("toy1", "../escaped", "invalid weights name '../escaped'"),
    ("toy1", "", "invalid weights name ''"),
    ("toy1", "a-v1,b-v1", "toy1 takes 1 comma-separated name(s)"),
    ("mapping", "mapping-v9,vae1-v9", "mapping takes 1 or 3 comma-separated name(s)"),
    ("joint", "a-v1,b-v1,a-v1,c-v1", "joint takes 4 comma-separated name(s), got 'a-v1,b-v1,a-v1,c-v1' (a name "
                                     "given twice)"),
])
def test_export_names_are_checked_before_any_work(toy, tmp_path, target, names, says):
    (tmp_path / "run").mkdir()
    r = run("export", target, tmp_path / "run", "--as", names)
    assert r.exit_code == 2 and says in r.output


@pytest.mark.parametrize("args, code, says", [
    (("eval", "detector", "--set", "run=somewhere", "--set", "record=true"), 2, "cannot be used with run="),
    (("eval", "restore", "--set", "n=2", "--set", "record=true"), 2, "needs the standard set: n=2 differ"),
    (("eval", "detector", "--set", "run=RUN/nowhere", "--set", "count=1"), 1, "nowhere: no such run folder"),
    (("train", "detector", "--set", "balance=bogus", "--set", "out=RUN/det"), 1, "balance must be one of"),
    (("train", "vae2", "--set", "corpus=RUN/nowhere", "--set", "out=RUN/v"), 1, "nowhere: photo folder does not exist"),
])
def test_bad_settings_and_run_folders_are_one_line_errors(tmp_path, args, code, says):
    r = run(*[a.replace("RUN", str(tmp_path)) for a in args])
    assert r.exit_code == code and says in r.stderr, r.output
    assert "Traceback" not in r.output and (code == 2 or r.stderr.splitlines()[-1].startswith("error: "))


def test_export_of_another_models_run_names_the_folder(tmp_path):
    (tmp_path / "col").mkdir()
    (tmp_path / "col" / "config.json").write_text(json.dumps({"arch": "colorizer_unet", "config": {}}))
    r = run("export", "detector", tmp_path / "col", "--as", "detector-v99")
    assert r.exit_code == 1
    assert r.stderr.strip() == f"error: cannot export: {tmp_path / 'col'}: not a unet_detector run (it trained " \
                               f"colorizer_unet)"


def _state_records(folder: Path) -> list[str]:
    return [json.loads(line)["rel"] for line in (folder / STATE_NAME).read_text().splitlines()[1:]]


GONE = "the output folder was deleted or moved away during the run: stopped, nothing more written or recorded"
REPLACED = ("the output folder was replaced during the run (deleted or moved, and another made in its place): "
            "stopped, nothing more written or recorded")


@pytest.mark.parametrize("how", ["moved", "deleted", "replaced"])
def test_an_output_folder_lost_between_files_stops_the_run(tmp_path, fake, how):
    """The folder holding the run's lock is moved away, deleted or replaced while b.PNG is on the model: its outputs
    never go in (nor into a folder made again), c.tif is never started, nothing more is recorded, and the run ends
    with one line naming the folder, exit 1. What was finished before stays as it was."""
    root, out, moved = scans(tmp_path), tmp_path / "out", tmp_path / "out.old"

    def lose(src, stop):
        if src.name == "b.PNG":
            if how == "moved":
                out.rename(moved)
            else:
                shutil.rmtree(out)
                if how == "replaced":
                    out.mkdir()  # e.g. a script that empties the folder by making it again

    fake.before_write = lose
    r = run("restore", root, "--out", out, "--jobs", 1)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {out}: {REPLACED if how == 'replaced' else GONE}"]
    assert [p.name for p in fake.calls] == ["a.jpg", "b.PNG"]
    assert tree(out) == [] if how == "replaced" else not out.exists()  # no output, state, lock nor report there
    if how == "moved":  # a.jpg's output and record went with the folder; the run's lock was removed there
        assert tree(moved) == sorted([STATE_NAME, "a.jpg"])
        assert _state_records(moved) == ["a.jpg"]


def test_an_output_folder_lost_with_files_in_flight_stops_them_all(tmp_path, fake):
    """--jobs 2: the folder goes while a.jpg and b.PNG are both on the model; neither puts outputs in, whichever
    noticed first, and the run says so once."""
    root, out, rep = scans(tmp_path), tmp_path / "out", tmp_path / "report.json"
    both_in_flight = threading.Barrier(2, timeout=10)

    def lose(src, stop):
        if src.name == "a.jpg":
            shutil.rmtree(out)
        both_in_flight.wait()

    fake.before_write = lose
    r = run("restore", root, "--out", out, "--jobs", 2, "--report", rep, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {GONE}"]
    assert {f["relative"]: f["status"] for f in json.loads(rep.read_text())["files"]} == {
        "a.jpg": "interrupted", "album 1/b.PNG": "interrupted", "album 1/deep/c.tif": "pending"}
    assert not out.exists()


def test_a_report_asked_for_elsewhere_says_why_the_run_stopped(tmp_path, fake):
    root, out, rep = scans(tmp_path), tmp_path / "out", tmp_path / "logs" / "report.json"
    fake.before_write = lambda src, stop: src.name == "b.PNG" and shutil.rmtree(out)
    r = run("restore", root, "--out", out, "--jobs", 1, "--report", rep, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {GONE}"]
    report = json.loads(rep.read_text())
    assert report["stopped"] == GONE and report["interrupted"] is False
    assert {f["relative"]: f["status"] for f in report["files"]} == {
        "a.jpg": "done", "album 1/b.PNG": "interrupted", "album 1/deep/c.tif": "pending"}
    assert not out.exists()


def test_a_second_ctrl_c_while_the_run_stops_on_a_lost_folder_keeps_its_line_and_exit_code(tmp_path, fake,
                                                                                          hard_exits, press):
    """--jobs 2: a.jpg finds the folder gone while b.PNG is still in flight, and its thread does not return; the user
    presses Ctrl-C twice meanwhile. The run still ends on the folder's one line, exit 1 (the loss, not the signal,
    is what the next run must be told about), without waiting for b's thread; the report asked for elsewhere says
    both."""
    root, out, rep = scans(tmp_path), tmp_path / "out", tmp_path / "report.json"
    lost, run_over = threading.Event(), threading.Event()

    def lose_then_press_twice(src, should_stop):
        if src.name == "a.jpg":
            shutil.rmtree(out)
            lost.set()
            return
        assert lost.wait(10)
        deadline = time.monotonic() + 10
        while not should_stop() and time.monotonic() < deadline:  # the run has taken a.jpg's news
            time.sleep(0.01)
        press(signal.SIGINT, 2)
        run_over.wait(10)  # a thread blocked in I/O

    fake.before_write = lose_then_press_twice
    r = run("restore", root, "--out", out, "--jobs", 2, "--report", rep)
    run_over.set()
    assert r.exit_code == 1 and hard_exits == [1], r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")][-1] == f"error: {out}: {GONE}"
    report = json.loads(rep.read_text())
    assert report["stopped"] == GONE and report["interrupted"] is True
    assert [f["status"] for f in report["files"]] == ["interrupted", "interrupted", "pending"]
    assert not out.exists()


def test_an_output_folder_lost_after_the_last_file_gets_no_state_or_report(tmp_path, fake, monkeypatch):
    """Every file was done and recorded when the folder went: the run still notices before it rewrites the state
    and writes the report, and puts neither into a folder in its place."""
    root, out = scans(tmp_path), tmp_path / "out"

    def replace():  # the display is closed once the last file is recorded, before the state is rewritten
        shutil.rmtree(out)
        out.mkdir()

    monkeypatch.setattr("oldphoto.cli.QuietDisplay.close", lambda self: replace())
    r = run("restore", root, "--out", out, "--jobs", 1, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {REPLACED}"]
    assert tree(out) == []


@pytest.mark.parametrize("how", ["deleted", "replaced"])
@pytest.mark.parametrize("when", ["state", "report"])
def test_an_output_folder_lost_just_after_the_last_check_gives_the_folders_line(tmp_path, fake, monkeypatch, how,
                                                                                 when):
    """The folder goes in the instant after the run's last check, as the state is rewritten or the report written
    into it: neither can go in (the folder held is deleted), and the run ends on the folder's own line, exit 1, not
    on 'cannot rewrite it compactly' or 'cannot write the report'; a folder made in its place gets nothing."""
    from oldphoto.report import Report

    root, out = scans(tmp_path), tmp_path / "out"
    real = RunState.close if when == "state" else Report.write

    def lose_then(*args, **kw):
        shutil.rmtree(out)
        if how == "replaced":
            out.mkdir()
        return real(*args, **kw)

    monkeypatch.setattr(*((RunState, "close") if when == "state" else (Report, "write")), lose_then)
    r = run("restore", root, "--out", out, "--jobs", 1, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {REPLACED if how == 'replaced' else GONE}"]
    assert tree(out) == [] if how == "replaced" else not out.exists()


def test_an_output_folder_deleted_as_the_state_is_rewritten_still_gets_a_report_elsewhere(tmp_path, fake,
                                                                                          monkeypatch):
    root, out, rep = scans(tmp_path), tmp_path / "out", tmp_path / "logs" / "report.json"
    real = RunState.close

    def lose_then(state, compact=True):
        shutil.rmtree(out)
        real(state, compact)

    monkeypatch.setattr(RunState, "close", lose_then)
    r = run("restore", root, "--out", out, "--report", rep, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {GONE}"]
    report = json.loads(rep.read_text())  # the records went with the folder, as they had been appended
    assert report["stopped"] == GONE and [f["status"] for f in report["files"]] == ["done"] * 3


def test_an_output_folder_deleted_as_its_state_is_opened_gives_the_folders_line(tmp_path, fake, monkeypatch):
    """Deleted in the instant after the lock is taken: the state file cannot be rewritten there, and the run says
    why (the folder's line), not 'cannot write the state file (No such file or directory)'."""
    from oldphoto.lock import OutputLock

    root, out, rep = scans(tmp_path), tmp_path / "out", tmp_path / "report.json"
    real = OutputLock.acquire

    def acquire_then_lose(lock):
        real(lock)
        shutil.rmtree(out)

    monkeypatch.setattr(OutputLock, "acquire", acquire_then_lose)
    r = run("restore", root, "--out", out, "--report", rep, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {out}: {GONE}"]
    assert fake.calls == [] and not out.exists() and json.loads(rep.read_text())["stopped"] == GONE


def test_a_file_whose_record_cannot_be_saved_fails_alone(tmp_path, fake, monkeypatch):
    """The disk fills just as a file's record is appended to the state: that file fails with one line, the batch
    goes on, and the state file holds whole lines only (the next run loads it)."""
    root, out = scans(tmp_path), tmp_path / "out"
    real_fsync, full = os.fsync, {"on": False}

    def fsync(fd):
        if full["on"]:
            full["on"] = False  # space is freed again at once
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    fake.after_write = lambda src, stop: full.update(on=src.name == "b.PNG")
    monkeypatch.setattr(os, "fsync", fsync)
    r = run("restore", root, "--out", out, "--jobs", "1")
    assert r.exit_code == 1 and "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {root / 'album 1' / 'b.PNG'}: written, but cannot be recorded in the state: "
                      f"No space left on device ({out / STATE_NAME})"]
    rep = report_of(out)
    assert [(f["relative"], f["status"]) for f in rep["files"]] == [
        ("a.jpg", "done"), ("album 1/b.PNG", "failed"), ("album 1/deep/c.tif", "done")]
    lines = (out / STATE_NAME).read_text().split("\n")
    assert lines[-1] == "" and [json.loads(line).get("rel") for line in lines[1:-1]] == ["a.jpg", "album 1/deep/c.tif"]


@pytest.mark.parametrize("where", ["inside", "elsewhere"])
def test_a_state_file_that_cannot_be_read_stops_the_run_and_its_report_says_why(tmp_path, fake, where):
    """The report says why the run did nothing (read alone, one listing no file looks like a run with nothing to do),
    and the last run's report, which it replaces, is kept beside it as report.previous.json (the error line says so):
    a cron job reading report.json learns of the stop, an archivist keeps what the last run did. A second stopped run
    replaces the first one's report without keeping it, so the copy stays the last run's that did something."""
    root, out = scans(tmp_path), tmp_path / "out"
    rep = out / "report.json" if where == "inside" else tmp_path / "logs" / "report.json"
    previous = rep.with_name("report.previous.json")
    assert run("restore", root, "--out", out, "--report", rep).exit_code == 0
    last = rep.read_bytes()
    (out / STATE_NAME).write_text("garbage{\n")
    why = (f"{out / STATE_NAME}: line 1 is not valid JSON (Expecting value); delete the file "
           f"and rerun with --overwrite to rebuild it")
    for _ in range(2):
        r = run("restore", root, "--out", out, "--report", rep, "-q")
        assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {why}; the last run's report kept as {previous}"
                                                              if _ == 0 else f"error: {why}"]
        stopped = json.loads(rep.read_text())
        assert stopped["files"] == [] and stopped["stopped"] == why and not (out / LOCK_NAME).exists()
        assert previous.read_bytes() == last and len(fake.calls) == 3


def test_a_report_that_cannot_be_written_after_a_state_file_stopped_the_run_does_not_hide_why(tmp_path, fake,
                                                                                             monkeypatch):
    from oldphoto.report import Report

    root, out = scans(tmp_path), tmp_path / "out"
    put(out / STATE_NAME, b"garbage{\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Report, "write", full)
    r = run("restore", root, "--out", out, "-q")
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        f"error: {out / 'report.json'}: cannot write the report (No space left on device)",
        f"error: {out / STATE_NAME}: line 1 is not valid JSON (Expecting value); delete the file and rerun with "
        f"--overwrite to rebuild it"]


def test_a_last_report_that_cannot_be_kept_stays_as_it_was(tmp_path, fake):
    root, out = scans(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    last = (out / "report.json").read_bytes()
    (out / "report.previous.json").mkdir()  # in the way
    (out / STATE_NAME).write_text("garbage{\n")
    r = run("restore", root, "--out", out, "-q")
    why = (f"{out / STATE_NAME}: line 1 is not valid JSON (Expecting value); delete the file "
           f"and rerun with --overwrite to rebuild it")
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        f"error: {out / 'report.json'}: cannot keep the last run's report as report.previous.json (a folder is in "
        f"the way); it stays as it was, this run's is not written", f"error: {why}"]
    assert (out / "report.json").read_bytes() == last and not [p for p in os.listdir(out) if "oldphoto-tmp" in p]


def test_a_last_report_too_deeply_nested_to_parse_is_kept_not_a_traceback(tmp_path, fake):
    """A last report that is not a report of ours (hand-edited, garbage) is kept like any other, also one nested too
    deeply for the JSON parser (RecursionError, not ValueError): before, that escaped as a traceback."""
    root, out = scans(tmp_path), tmp_path / "out"
    last = b"[" * 200_000
    put(out / "report.json", last)
    put(out / STATE_NAME, b"garbage{\n")
    r = run("restore", root, "--out", out, "-q")
    why = (f"{out / STATE_NAME}: line 1 is not valid JSON (Expecting value); delete the file "
           f"and rerun with --overwrite to rebuild it")
    kept = f"; the last run's report kept as {out / 'report.previous.json'}"
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {why}{kept}"]
    assert (out / "report.previous.json").read_bytes() == last and report_of(out)["stopped"] == why


@pytest.mark.parametrize("where", ["inside", "elsewhere"])
def test_a_report_path_that_is_not_a_regular_file_is_not_read(tmp_path, fake, where, deadline):
    """report.json is a FIFO (or a device): opening it to keep it would wait for a writer for ever, a cron run hung
    with its lock held. Nothing there to keep: the run's report replaces it, as it did before reports were kept."""
    root, out = scans(tmp_path), tmp_path / "out"
    rep = out / "report.json" if where == "inside" else tmp_path / "logs" / "report.json"
    put(out / STATE_NAME, b"garbage{\n")
    rep.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(rep)
    with deadline(5, "the run blocked on the FIFO"):
        r = run("restore", root, "--out", out, "--report", rep, "-q")
    why = (f"{out / STATE_NAME}: line 1 is not valid JSON (Expecting value); delete the file "
           f"and rerun with --overwrite to rebuild it")
    assert r.exit_code == 1 and r.stderr.splitlines() == [f"error: {why}"]
    assert rep.is_file() and json.loads(rep.read_text())["stopped"] == why
    assert not rep.with_name("report.previous.json").exists() and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_state_file_that_cannot_be_compacted_is_one_error_line(tmp_path, fake, monkeypatch, when):
    """No room for the compact copy of the state file (a full disk): at the start the run does not start, at the end
    the records appended during the run stay as they are; one line naming the state file, exit 1, no traceback."""
    root, out = scans(tmp_path), tmp_path / "out"
    real_open, full = os.open, {"on": when == "start"}

    def open_(path, flags, mode=0o777, **kw):
        if full["on"] and os.path.basename(path).startswith(f".{STATE_NAME}"):  # its temp copy
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, mode, **kw)

    fake.after_write = lambda src, stop: full.update(on=src.name == "c.tif")
    monkeypatch.setattr(os, "open", open_)
    r = run("restore", root, "--out", out, "--jobs", "1")
    assert r.exit_code == 1 and "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    if when == "start":
        assert errors == [f"error: {out / STATE_NAME}: cannot write the state file (No space left on device)"]
        assert fake.calls == [] and not (out / LOCK_NAME).exists()
        rep = report_of(out)  # says why it lists no file, for a monitor that reads only the report
        assert rep["files"] == [] and rep["stopped"] == errors[0].removeprefix("error: ")
    else:
        assert errors == [f"error: {out / STATE_NAME}: cannot rewrite it compactly (No space left on device); the "
                          f"records appended during the run are kept"]
        assert [f["status"] for f in report_of(out)["files"]] == ["done"] * 3
    assert not [p for p in os.listdir(out) if "oldphoto-tmp" in p]
    full["on"], fake.after_write = False, None
    r = run("restore", root, "--out", out)  # space freed: the files done are up to date, the rest is done
    assert r.exit_code == 0 and [f["status"] for f in report_of(out)["files"]] == [
        "done" if when == "start" else "skipped"] * 3


def _fill_then_jam(monkeypatch, name: str, jam: dict | None = None) -> list[Path]:
    """The disk fills as the temp copy of the run's own file `name` (its state, its report) is written, and that temp
    file cannot be removed either (an I/O error), while jam["on"] (always, without it): -> the temp files made."""
    real_fsync, real_unlink, real_open, made = os.fsync, os.unlink, os.open, []
    jam = jam if jam is not None else {"on": True}

    def ours(path) -> bool:
        return jam["on"] and os.path.basename(path).startswith(f".{name}.oldphoto-tmp-")

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if ours(path):
            made.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return fd

    def fsync(fd):
        if ours(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    def unlink(path, *a, **kw):
        if ours(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    return made


@pytest.mark.parametrize("when", ["start", "end"])
def test_a_state_file_whose_temp_copy_cannot_be_removed_names_it(tmp_path, fake, monkeypatch, when):
    """The compact copy of the state file fails (a full disk) and cannot be removed either: one more line names it,
    as for an output's, and the state's own line gives the write's reason, not the removal's. Before, the copy was
    left unnamed (and the state's line said 'Input/output error')."""
    root, out, jam = scans(tmp_path), tmp_path / "out", {"on": when == "start"}
    fake.after_write = lambda src, stop: jam.update(on=src.name == "c.tif")
    left = _fill_then_jam(monkeypatch, STATE_NAME, jam)
    r = run("restore", root, "--out", out, "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output and len(left) == 1 and left[0].exists()
    why = (f"{out / STATE_NAME}: cannot write the state file (No space left on device)" if when == "start" else
           f"{out / STATE_NAME}: cannot rewrite it compactly (No space left on device); the records appended during "
           f"the run are kept")
    partial = f"error: {left[0]}: cannot remove this partial file (Input/output error)"
    assert sorted(r.stderr.splitlines()) == sorted([f"error: {why}", partial])


@pytest.mark.parametrize("where", ["inside", "elsewhere"])
def test_a_report_whose_temp_file_cannot_be_removed_names_it(tmp_path, fake, monkeypatch, where):
    root, out = scans(tmp_path), tmp_path / "out"
    rep = out / "report.json" if where == "inside" else tmp_path / "logs" / "report.json"
    left = _fill_then_jam(monkeypatch, "report.json")
    r = run("restore", root, "--out", out, "--report", rep, "-q")
    assert r.exit_code == 1 and "Traceback" not in r.output and len(left) == 1 and left[0].exists()
    assert r.stderr.splitlines() == [f"error: {left[0]}: cannot remove this partial file (Input/output error)",
                                     f"error: {rep}: cannot write the report (No space left on device)"]


def test_a_lock_that_cannot_be_removed_is_one_error_line(tmp_path, fake, monkeypatch):
    """The output folder became read-only (or immutable) during the run: its lock stays, the run says so in one line
    and exits 1 rather than with a traceback; the outputs, state and report written before are kept."""
    root, out = scans(tmp_path), tmp_path / "out"
    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        if os.path.basename(path) == LOCK_NAME:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    r = run("restore", root, "--out", out)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {out / LOCK_NAME}: cannot remove the lock (Operation not permitted); the next run takes it over"]
    assert [f["status"] for f in report_of(out)["files"]] == ["done"] * 3 and (out / LOCK_NAME).exists()


def test_taking_over_a_stale_lock_leaves_the_temp_files_of_a_nested_output_folder(tmp_path, fake):
    """A folder inside --out with a lock of its own is another run's --out: that run, live, may be writing the temp
    files found there, so the run that takes over the stale lock of --out must not remove them."""
    root, out = scans(tmp_path), tmp_path / "out"
    partial = put(out / ".a.jpg.oldphoto-tmp-0123abcd", b"half")
    other = put(out / "collection" / "sub" / ".z.jpg.oldphoto-tmp-4567cdef", b"being written by a live run")
    (out / "collection" / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                            "started": time.time()}))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": child.pid, "host": socket.gethostname(), "started": 1.0}))
    r = run("restore", root, "--out", out)
    assert r.exit_code == 0 and not partial.exists() and other.exists() and str(other) not in r.stderr


@pytest.mark.parametrize("fmt, name, same", [
    ("png", "scan.png", True), ("png", "SCAN.PNG", False), ("png", "scan.jpg", False),
    ("tiff", "scan.tif", True), ("tiff", "scan.tiff", False), ("jpeg", "scan.jpg", True),
    ("jpeg", "scan.jpeg", False)])
def test_a_format_that_writes_what_keep_writes_redoes_nothing(tmp_path, fake, fmt, name, same):
    """A PNG scan restored with --format keep was redone by --format png (and back again), although both write the
    same file: the format is recorded as keep when the output's path and format are keep's (not SCAN.PNG, which
    --format png writes as SCAN.png, nor .tiff, which tiff writes as .tif)."""
    from PIL import Image

    src, out = tmp_path / name, tmp_path / "out"
    Image.new("L", (8, 8)).save(src)  # the dry run reads its header
    assert run("restore", src, "--out", out).exit_code == 0 and len(fake.calls) == 1
    dry = run("restore", src, "--out", out, "--format", fmt, "--dry-run")
    assert dry.stdout.splitlines()[0].startswith("up to date" if same else "restore")
    for opts in (("--format", fmt), ()):
        assert run("restore", src, "--out", out, *opts).exit_code == 0
    assert len(fake.calls) == (1 if same else 3)


def test_outputs_of_a_format_that_writes_what_keep_writes_are_recognised_either_way(tmp_path, stand_in_models):
    """The outputs' XMP records the format as the fingerprint does: a PNG scan restored with --format png is
    recognised by a --format keep run after a lost state file (and the reverse), not refused as another's."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    for made, then in ((("--format", "png"), ()), ((), ("--format", "png"))):
        assert run("restore", root, "--out", out, *opts, *made, "--overwrite").exit_code == 0
        (out / STATE_NAME).unlink()
        r = run("restore", root, "--out", out, *opts, *then)
        assert r.exit_code == 0, r.output
        street = report_of(out)["files"][1]
        assert street["relative"] == "street.png" and street["status"] == "skipped", street
        assert any("recognised from the provenance" in n for n in street["notes"])


def test_a_skipped_file_reports_the_notes_of_the_run_that_made_its_outputs(tmp_path, fake, monkeypatch):
    """A skipped file had no notes in the report, so what the outputs lack ("alpha dropped: JPEG has no
    transparency") was said only by the run that made them: its record keeps them, but not what befell that run's
    device or temp folder, which a later run did not meet."""
    buffers = "pixel buffers: /mnt/x cannot memory-map files (No such device); put in /tmp instead"

    def short_of_memory(*args, **kw):
        outcome = fake.process_file(*args, **kw)
        outcome.notes += ["out of device memory: batch size reduced to 4", buffers]
        return outcome

    src, out = put(tmp_path / "a.jpg"), tmp_path / "out"
    monkeypatch.setattr(pipeline, "process_file", short_of_memory)
    assert run("restore", src, "--out", out).exit_code == 0
    assert report_of(out)["files"][0]["notes"] == ["fake note", "out of device memory: batch size reduced to 4",
                                                   buffers]
    os.utime(src, ns=(1, 1))  # touched: the skip's own note comes first
    assert run("restore", src, "--out", out).exit_code == 0 and len(fake.calls) == 1
    f = report_of(out)["files"][0]
    assert f["status"] == "skipped" and f["notes"] == ["source touched but unchanged (same sha256)", "fake note"]
    assert run("restore", src, "--out", out, "--mask-dilate", 5).exit_code == 0  # redone: the run's reason is not kept
    assert run("restore", src, "--out", out, "--mask-dilate", 5).exit_code == 0 and len(fake.calls) == 2
    assert report_of(out)["files"][0]["notes"] == ["fake note"]


@pytest.mark.parametrize("then", [("--format", "jpeg"), ()])
def test_a_record_of_a_format_that_writes_what_keep_writes_made_before_it_was_recorded_as_keep_stays_current(
        tmp_path, fake, monkeypatch, then):
    """A cron job that restored its JPEG scans with --format jpeg before such a format was recorded as keep had every
    photo redone after the upgrade ("settings changed"): the fingerprint as it was then still counts (so does a
    switch to keep)."""
    from PIL import Image

    src, out = tmp_path / "scan.jpg", tmp_path / "out"
    Image.new("L", (8, 8)).save(src)
    recorded = pipeline.recorded_settings
    monkeypatch.setattr(pipeline, "recorded_settings",
                        lambda cfg, models, fmt=None, suffix=None, *_: recorded(cfg, models, fmt))  # as before
    assert run("restore", src, "--out", out, "--format", "jpeg").exit_code == 0 and len(fake.calls) == 1
    monkeypatch.setattr(pipeline, "recorded_settings", recorded)
    dry = run("restore", src, "--out", out, *then, "--dry-run")
    assert dry.stdout.splitlines()[0].startswith("up to date"), dry.output
    r = run("restore", src, "--out", out, *then)
    assert r.exit_code == 0 and len(fake.calls) == 1, r.output


# ------------------------------------------------------------------------------------------ XMP sidecars

def _sidecar(caption: str) -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="3"><dc:description><rdf:Alt>'
            f'<rdf:li xml:lang="x-default">{caption}</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF>'
            '</x:xmpmeta>')


def test_a_scans_xmp_sidecar_is_carried_kept_current_and_recognised_after_a_lost_state_file(tmp_path,
                                                                                           stand_in_models):
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    (root / "street.png.xmp").write_text(_sidecar("Main street, 1932"))  # digiKam's and darktable's naming
    (root / "box 2" / "portrait.xmp").write_text(_sidecar("Aunt Rose"))  # Adobe's
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 0, r.output
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert files["street.png"]["outputs"] == [str(out / "street.png"), str(out / "street.png.xmp")]
    assert files["street.png"]["sidecar"] == str(root / "street.png.xmp")
    assert files["box 2/portrait.tif"]["outputs"] == [str(out / "box 2/portrait.tif"), str(out / "box 2/portrait.xmp")]
    assert "Main street, 1932" in (out / "street.png.xmp").read_text()
    records = [json.loads(line) for line in (out / STATE_NAME).read_text().splitlines()[1:]]
    assert [(r["rel"], r["sidecar"]["name"], [o["path"] for o in r["outputs"]]) for r in records] == [
        ("box 2/portrait.tif", "portrait.xmp", ["box 2/portrait.tif", "box 2/portrait.xmp"]),
        ("street.png", "street.png.xmp", ["street.png", "street.png.xmp"])]
    made = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix != ".json" and p.name != STATE_NAME}

    r = run("restore", root, "--out", out, *opts, "-q")  # nothing changed: silent, nothing redone
    assert r.exit_code == 0 and r.output == ""
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    assert report_of(out)["files"][1]["sidecar"] == str(root / "street.png.xmp")
    assert {p: p.stat().st_mtime_ns for p in made} == made

    (root / "street.png.xmp").write_text(_sidecar("Main street, 1933"))  # the archivist corrects the caption
    dry = run("restore", root, "--out", out, *opts, "--dry-run")
    assert dry.stdout.splitlines() == [
        "up to date  box 2/portrait.tif",
        "sidecar     street.png  (sidecar changed: street.png.xmp; the restoration stays)",
        "dry run: 0 to restore, 1 sidecar(s) to update, 1 up to date, 0 would fail; nothing was written"]
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    street = report_of(out)["files"][1]
    assert street["status"] == "done" and street["sidecar_only"], street
    assert "sidecar only (sidecar changed: street.png.xmp): street.png.xmp written, the restoration unchanged" in \
        street["notes"]
    assert "Main street, 1933" in (out / "street.png.xmp").read_text()

    (out / STATE_NAME).unlink()  # recognised by the provenance in the outputs' XMP, the sidecars' included
    dry = run("restore", root, "--out", out, *opts, "--dry-run")
    assert dry.stdout.splitlines()[:2] == ["up to date  box 2/portrait.tif  (recognised from its outputs' provenance)",
                                           "up to date  street.png  (recognised from its outputs' provenance)"]
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped", "skipped"]
    (root / "street.png.xmp").write_text(_sidecar("Main street, 1934"))
    (out / STATE_NAME).unlink()  # lost again, and the sidecar edited meanwhile: only the sidecar is not current
    assert "sidecar     street.png  (sidecar changed: street.png.xmp; the restoration stays)" in run(
        "restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()
    assert run("restore", root, "--out", out, *opts).exit_code == 0  # the state made again
    assert report_of(out)["files"][1]["sidecar_only"] and "Main street, 1934" in (out / "street.png.xmp").read_text()

    portrait_xmp = (root / "box 2" / "portrait.xmp").read_bytes()
    # its sidecar removed: its derivative's goes (known as ours by the record, or by its XMP), the restoration stays
    for lost in (False, True):
        if lost:
            (root / "box 2" / "portrait.xmp").write_bytes(portrait_xmp)
            assert run("restore", root, "--out", out, *opts).exit_code == 0 and (out / "box 2/portrait.xmp").exists()
            assert report_of(out)["files"][0]["sidecar_only"]
            (out / STATE_NAME).unlink()
        (root / "box 2" / "portrait.xmp").unlink()
        assert run("restore", root, "--out", out, *opts).exit_code == 0
        portrait = report_of(out)["files"][0]
        assert portrait["status"] == "done" and portrait["sidecar_only"], portrait
        assert (f"sidecar only (sidecar removed{'' if lost else ': portrait.xmp'}): its sidecar removed, the "
                f"restoration unchanged") in portrait["notes"]
        assert portrait["outputs"] == [str(out / "box 2/portrait.tif")] and portrait["sidecar"] is None
        assert not (out / "box 2" / "portrait.xmp").exists()
    (out / STATE_NAME).unlink()  # its own XMP still names the sidecar it was made with: recognised all the same
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[0] == \
        "up to date  box 2/portrait.tif  (recognised from its outputs' provenance)"


def _table_rows(stdout: str) -> dict[str, str]:
    """{status: files} of the summary table a run prints."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines() if line.startswith("│")]
    return {row[0]: row[1] for row in cells if len(row) > 1}


def test_an_edited_sidecar_rewrites_only_the_sidecar_and_runs_no_model(tmp_path, stand_in_models, monkeypatch):
    """A caption corrected, a sidecar added, renamed or removed: the restoration is not made again (no model runs),
    only the sidecar beside it is written or removed, recorded and reported; --overwrite still redoes everything."""
    import restore_samples

    calls = []
    detect = restore_samples.WhiteDetector.__call__
    monkeypatch.setattr(restore_samples.WhiteDetector, "__call__",
                        lambda self, t: (calls.append(1), detect(self, t))[1])
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 0 and calls
    images = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "street.png", out / "box 2" / "portrait.tif")}
    steps = [("added", lambda: (root / "street.png.xmp").write_text(_sidecar("Main street"))),
             ("changed", lambda: (root / "street.png.xmp").write_text(_sidecar("Main street, 1932"))),
             ("renamed", lambda: (root / "street.png.xmp").rename(root / "street.xmp")),
             ("removed", lambda: (root / "street.xmp").unlink())]
    for what, step in steps:
        calls.clear()
        step()
        r = run("restore", root, "--out", out, *opts, "-q")
        assert r.exit_code == 0 and r.output == "" and calls == [], (what, r.output)
        if what == "added":  # the summary table, not -q: the file counts apart from the restored ones
            step = run("restore", root, "--out", out, *opts, "--overwrite")
            assert _table_rows(step.stdout)["done"] == "2" and "sidecar only" not in step.stdout  # both restored
            (root / "street.png.xmp").write_text(_sidecar("Main street, 1931"))
            r = run("restore", root, "--out", out, *opts)
            rows = _table_rows(r.stdout)
            assert (rows["done"], rows["sidecar only"], rows["skipped"]) == ("0", "1", "1"), r.stdout
            calls.clear()
            images = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in images}
        street = report_of(out)["files"][1]
        assert street["status"] == "done" and street["sidecar_only"], (what, street)
        assert report_of(out)["totals"]["megapixels"] == 0
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in images} == images, what
        sidecars = sorted(p.name for p in out.glob("street*.xmp"))
        assert sidecars == {"added": ["street.png.xmp"], "changed": ["street.png.xmp"], "renamed": ["street.xmp"],
                            "removed": []}[what]
        record = RunState.load(out).records["street.png"]
        assert [o.path for o in record.outputs] == ["street.png"] + sidecars
        assert (record.sidecar and record.sidecar.name) == {"added": "street.png.xmp", "changed": "street.png.xmp",
                                                            "renamed": "street.xmp", "removed": None}[what]
        assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == "up to date  street.png"
    (root / "street.png.xmp").write_text(_sidecar("Main street, 1933"))
    calls.clear()
    assert run("restore", root, "--out", out, *opts, "--overwrite").exit_code == 0 and calls
    assert not report_of(out)["files"][1]["sidecar_only"]


def _restored_scans(tmp_path, sidecars: dict[str, str] | None = None) -> tuple[Path, Path, tuple]:
    """(scans, output folder, options): real_scans less the torn file, with `sidecars` ({name below scans: caption}),
    restored once."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    for name, caption in (sidecars or {}).items():
        (root / name).write_text(_sidecar(caption))
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    return root, out, opts


def test_a_sidecar_rewritten_alone_is_refused_over_another_tools_file(tmp_path, stand_in_models):
    root, out, opts = _restored_scans(tmp_path)
    put(out / "street.png.xmp", b"tags a tool gave the restoration")
    (root / "street.png.xmp").write_text(_sidecar("Main street"))
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 1 and "street.png.xmp already exists and was not made from this file by oldphoto" in r.stderr
    assert (out / "street.png.xmp").read_bytes() == b"tags a tool gave the restoration"
    assert run("restore", root, "--out", out, *opts, "--overwrite").exit_code == 0
    assert "Main street" in (out / "street.png.xmp").read_text()


def test_a_sidecar_only_result_names_its_sources_sha256_as_a_skip_does(tmp_path, stand_in_models):
    root, out, opts = _restored_scans(tmp_path)
    (root / "street.png.xmp").write_text(_sidecar("Main street"))
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    street = report_of(out)["files"][1]
    assert street["sidecar_only"] and street["sha256"] == hashlib.sha256((root / "street.png").read_bytes()).hexdigest()


def _packet_with_ids(title: str, ids: dict[str, str]) -> str:
    """An XMP packet with a dc:title and the xmpMM ids given ({"DocumentID": ..., ...}), in attribute form."""
    said = "".join(f' xmpMM:{local}="{value}"' for local, value in ids.items())
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            f'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"{said}><dc:title><rdf:Alt>'
            f'<rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title></rdf:Description></rdf:RDF>'
            '</x:xmpmeta>')


def _parent_named(packet: bytes) -> dict[str, str | None]:
    """What a packet says of its parent: xmpMM:DerivedFrom's stRef fields and xmpMM:OriginalDocumentID, with the
    packet's dc:title and its own DocumentID and InstanceID."""
    from oldphoto.io import xmp_tree

    mm, ref = "{http://ns.adobe.com/xap/1.0/mm/}", "{http://ns.adobe.com/xap/1.0/sType/ResourceRef#}"
    root, _ = xmp_tree.parse(packet, "test")
    (d,) = root.iter("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    (derived,) = d.findall(f"{mm}DerivedFrom")
    title = d.find("{http://purl.org/dc/elements/1.1/}title")
    return {"filePath": derived.findtext(f"{ref}filePath"), "documentID": derived.findtext(f"{ref}documentID"),
            "instanceID": derived.findtext(f"{ref}instanceID"), "original": d.findtext(f"{mm}OriginalDocumentID"),
            "DocumentID": d.findtext(f"{mm}DocumentID"), "InstanceID": d.findtext(f"{mm}InstanceID"),
            "title": None if title is None else title.findtext(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li")}


def _embedded_xmp(path: Path) -> bytes:
    from oldphoto.io.xmp_slot import read_xmp_slot

    with open(path, "rb") as f:
        return read_xmp_slot(f)


_SCAN_IDS = {"DocumentID": "xmp.did:abc", "InstanceID": "xmp.iid:abc"}
_SIDECAR_IDS = {"DocumentID": "xmp.did:side", "InstanceID": "xmp.iid:side", "OriginalDocumentID": "xmp.did:first"}


@pytest.mark.parametrize("embedded, beside, parent", [
    (_SCAN_IDS, {}, ("xmp.did:abc", "xmp.iid:abc", "xmp.did:abc")),  # the validator's case
    (None, _SIDECAR_IDS, ("xmp.did:side", "xmp.iid:side", "xmp.did:first")),  # no embedded packet: the sidecar's
    ({}, _SIDECAR_IDS, ("xmp.did:side", "xmp.iid:side", "xmp.did:first")),  # one without ids: the sidecar's
    (_SCAN_IDS, _SIDECAR_IDS, ("xmp.did:abc", "xmp.iid:abc", "xmp.did:abc")),  # both: the file's own, whole
    ({}, {}, (None, None, None)),
], ids=["embedded", "no-packet-sidecar", "sidecar", "both", "neither"])
def test_a_restoration_and_its_sidecar_name_one_parent(tmp_path, stand_in_models, embedded, beside, parent):
    """xmpMM:DerivedFrom and OriginalDocumentID say the same in the restoration's embedded packet, its sidecar and the
    --save-mask mask, each packet keeping the rest of its own source; a sidecar rewritten alone names the parent the
    restoration names, and the outputs are recognised after a lost state file."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    root, out = tmp_path / "scans", tmp_path / "out"
    root.mkdir()
    info = PngImagePlugin.PngInfo()
    if embedded is not None:
        info.add_itxt("XML:com.adobe.xmp", _packet_with_ids("Embedded", embedded))
    Image.fromarray(np.random.default_rng(3).integers(0, 240, (20, 24), dtype=np.uint8), "L").save(
        root / "scan.png", pnginfo=info)
    (root / "scan.png.xmp").write_text(_packet_with_ids("Sidecar", beside))
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1, "--save-mask")
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    photo, sidecar = _parent_named(_embedded_xmp(out / "scan.png")), _parent_named((out / "scan.png.xmp").read_bytes())
    expected = dict(zip(("documentID", "instanceID", "original"), parent), filePath="scan.png")
    assert {k: photo[k] for k in expected} == {k: sidecar[k] for k in expected} == expected, (photo, sidecar)
    assert {k: _parent_named(_embedded_xmp(out / "scan.mask.png"))[k] for k in expected} == expected
    # each keeps its own source's other properties; one derivative: the same ids
    assert (photo["title"], sidecar["title"]) == ("Embedded" if embedded is not None else None, "Sidecar")
    assert (photo["DocumentID"], photo["InstanceID"]) == (sidecar["DocumentID"], sidecar["InstanceID"])
    image_bytes = (out / "scan.png").read_bytes()

    # the sidecar edited, now giving other ids: rewritten alone, it names the parent the restoration names
    (root / "scan.png.xmp").write_text(_packet_with_ids("Sidecar, edited", {"DocumentID": "xmp.did:new"}))
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert report_of(out)["files"][0]["sidecar_only"]
    rewritten = _parent_named((out / "scan.png.xmp").read_bytes())
    assert (out / "scan.png").read_bytes() == image_bytes and rewritten["title"] == "Sidecar, edited"
    assert {k: rewritten[k] for k in expected} == expected
    assert (rewritten["DocumentID"], rewritten["InstanceID"]) == (photo["DocumentID"], photo["InstanceID"])

    (out / STATE_NAME).unlink()  # the sidecar goes with the restoration by its InstanceID, as before
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[0] == \
        "up to date  scan.png  (recognised from its outputs' provenance)"
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    assert [f["status"] for f in report_of(out)["files"]] == ["skipped"]
    assert (out / "scan.png").read_bytes() == image_bytes


def test_a_restoration_another_tool_gave_a_new_instance_id_is_redone_for_its_sidecar(tmp_path, stand_in_models):
    """A tool that saved the restoration (a new xmpMM:InstanceID) without a history event of its own: oldphoto's event
    is still the last, but names another instance. Its bytes are not those recorded: kept, the file fails (see
    test_edited_outputs). Not told so (its mtime set back), a sidecar rewritten alone would link oldphoto's event to
    the other tool's instance; the file is redone instead."""
    import re

    root, out, opts = _restored_scans(tmp_path, {"box 2/portrait.tif.xmp": "Aunt Rose"})
    portrait = out / "box 2" / "portrait.tif"
    data = portrait.read_bytes()  # the same size: the state finds the restoration as it was made
    written = portrait.stat().st_mtime_ns
    other = b"xmp.iid:00000000-1111-2222-3333-444444444444"
    edited, n = re.subn(rb"(<xmpMM:InstanceID>)xmp\.iid:[0-9a-f-]{36}", lambda m: m.group(1) + other, data)
    assert n == 1 and len(edited) == len(data)
    portrait.write_bytes(edited)
    (root / "box 2" / "portrait.tif.xmp").write_text(_sidecar("Aunt Rose, 1931"))
    r = run("restore", root, "--out", out, *opts)
    assert r.exit_code == 1 and f"{portrait} was changed since oldphoto wrote it and would be described anew by the " \
        f"sidecar beside it (sidecar changed: portrait.tif.xmp): move it away, or use --overwrite" in r.stderr
    assert portrait.read_bytes() == edited
    os.utime(portrait, ns=(written, written))  # as if untouched: the stat alike, nothing read
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    result = report_of(out)["files"][0]
    assert result["status"] == "done" and not result["sidecar_only"], result
    assert "redone: sidecar changed: portrait.tif.xmp" in result["notes"]
    assert other not in portrait.read_bytes() and other not in (out / "box 2" / "portrait.tif.xmp").read_bytes()


def test_a_restoration_whose_xmp_lacks_its_provenance_is_redone_for_its_sidecar(tmp_path, fake):
    """The sidecar describes the restoration by its XMP: one without oldphoto's entry there (here the stand-in's
    outputs, as a packet that could not be written) is restored again, as before."""
    put(tmp_path / "scans" / "a.jpg", b"A-photo")
    out = tmp_path / "out"
    assert run("restore", tmp_path / "scans", "--out", out).exit_code == 0
    put(tmp_path / "scans" / "a.jpg.xmp", b"<x:xmpmeta/>")
    assert run("restore", tmp_path / "scans", "--out", out).exit_code == 0 and len(fake.calls) == 2
    assert "redone: sidecar added: a.jpg.xmp" in report_of(out)["files"][0]["notes"]


def test_a_file_where_a_sidecar_would_go_is_replaced_only_with_overwrite(tmp_path, fake):
    """A sidecar a tool wrote for a restoration (digiKam tagging the derivatives) is not oldphoto's to replace."""
    put(tmp_path / "scans" / "a.jpg", b"A-photo")
    put(tmp_path / "scans" / "a.jpg.xmp", b"<x:xmpmeta/>")
    out = tmp_path / "out"
    put(out / "a.jpg.xmp", b"tags given to the restoration")
    r = run("restore", tmp_path / "scans", "--out", out)
    assert r.exit_code == 1 and "a.jpg.xmp already exists and was not made from this file by oldphoto" in r.stderr
    assert (out / "a.jpg.xmp").read_bytes() == b"tags given to the restoration" and fake.calls == []
    assert run("restore", tmp_path / "scans", "--out", out, "--overwrite").exit_code == 0
    assert (out / "a.jpg.xmp").read_bytes() == b"sidecar:<x:xmpmeta/>"


def test_a_sidecar_adobe_naming_cannot_assign_is_carried_for_none_and_masks_get_none(tmp_path, fake):
    root = tmp_path / "scans"
    for name in ("pair.tif", "pair.jpg", "pair.xmp", "one.png", "one.png.xmp"):
        put(root / name)
    out = tmp_path / "out"
    assert run("restore", root, "--out", out).exit_code == 0
    files = {f["relative"]: f for f in report_of(out)["files"]}
    assert tree(out) == sorted([STATE_NAME, "report.json", "one.png", "one.png.xmp", "pair.jpg", "pair.tif"])
    assert files["pair.tif"]["sidecar"] is None and files["one.png"]["sidecar"] == str(root / "one.png.xmp")
    assert ("XMP sidecar pair.xmp not carried: pair.jpg, pair.tif share its name, which does not say whose it is; "
            "name it pair.tif.xmp to carry it with pair.tif") in files["pair.tif"]["notes"]
    masks = tmp_path / "masks"  # (pair.tif and pair.jpg would have the same mask: one of each is enough here)
    assert run("restore", root / "one.png", root / "pair.tif", "--out", masks, "--only-mask").exit_code == 0
    assert tree(masks) == sorted([STATE_NAME, "report.json", "one.mask.png", "one.overlay.jpg", "pair.mask.png",
                                  "pair.overlay.jpg"])
    assert not any("sidecar" in n for f in report_of(masks)["files"] for n in f["notes"])
    put(root / "one.png.xmp", b"<x:xmpmeta>edited</x:xmpmeta>")  # a sidecar does not make masks stale
    calls = len(fake.calls)
    assert run("restore", root / "one.png", "--out", masks, "--only-mask").exit_code == 0 and len(fake.calls) == calls


def test_a_file_too_large_to_be_a_sidecar_does_not_redo_its_scan_every_run(tmp_path, stand_in_models):
    """A .xmp over 64 MiB beside a scan (a misnamed file) is not carried; its scan was recorded as without a sidecar,
    so every later run redid it ("sidecar added") and read the file again. Recorded as it is, it is left alone until
    it changes."""
    root, _, _ = real_scans(tmp_path)
    (root / "torn.jpg").unlink()
    with open(root / "street.png.xmp", "wb") as f:
        f.truncate((64 << 20) + 1)  # sparse: no disk used
    out = tmp_path / "out"
    opts = ("--tile", 128, "--overlap", 16, "--jobs", 1)
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    street = {f["relative"]: f for f in report_of(out)["files"]}["street.png"]
    assert street["status"] == "done" and street["sidecar"] is None and not (out / "street.png.xmp").exists()
    assert "XMP sidecar street.png.xmp not carried: larger than 64 MiB: not an XMP sidecar" in street["notes"]
    dry = run("restore", root, "--out", out, *opts, "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.splitlines()[:2] == ["up to date  box 2/portrait.tif",
                                                                  "up to date  street.png"], dry.output
    os.utime(root / "street.png.xmp", ns=(1, 1))  # changed: looked at again
    assert "sidecar     street.png  (sidecar changed: street.png.xmp; the restoration stays)" in run(
        "restore", root, "--out", out, *opts, "--dry-run").stdout


def test_a_sidecar_named_for_an_image_in_another_case_is_noted_on_it(tmp_path, fake):
    put(tmp_path / "scans" / "lower.JPG", b"A-photo")
    put(tmp_path / "scans" / "lower.jpg.xmp", b"<x:xmpmeta/>")
    out = tmp_path / "out"
    assert run("restore", tmp_path / "scans", "--out", out).exit_code == 0
    lower = report_of(out)["files"][0]
    assert lower["sidecar"] is None and lower["outputs"] == [str(out / "lower.JPG")]
    assert ("XMP sidecar lower.jpg.xmp not carried: its name differs in case from this file's; rename it to "
            "lower.JPG.xmp to carry it") in lower["notes"]


def _deny_sidecar_reads(monkeypatch, *names: str) -> set[str]:
    """Sidecars of these names cannot be read (as root a chmod does not stop a read, so the read is replaced); the set
    returned is live: clear it and they can be read again."""
    import oldphoto.io.sidecar as sidecar_io

    read, denied = sidecar_io.read_sidecar_bytes, set(names)

    def reading(path):
        if Path(path).name in denied:
            raise ImageError(path, "cannot read: Permission denied")
        return read(path)

    monkeypatch.setattr(sidecar_io, "read_sidecar_bytes", reading)
    return denied


def test_an_unreadable_sidecar_is_tried_again_only_once_it_changed(tmp_path, stand_in_models, monkeypatch):
    """A scan's sidecar whose read fails (permissions: as root a chmod does not stop a read, so the read is replaced)
    is recorded as it is: later runs skip the file, with the note, until a chmod (its ctime) or an edit moves it; then
    only the sidecar is written. Before, every run was a sidecar-only job "sidecar added", forever."""
    import restore_samples

    calls = []
    detect = restore_samples.WhiteDetector.__call__
    monkeypatch.setattr(restore_samples.WhiteDetector, "__call__",
                        lambda self, t: (calls.append(1), detect(self, t))[1])
    denied = _deny_sidecar_reads(monkeypatch, "street.png.xmp")
    root, out, opts = _restored_scans(tmp_path, {"street.png.xmp": "Main street"})
    note = "XMP sidecar street.png.xmp not carried: cannot read: Permission denied"
    assert note in report_of(out)["files"][1]["notes"] and not (out / "street.png.xmp").exists()
    record = RunState.load(out).records["street.png"]
    assert record.sidecar.unreadable and record.sidecar.sha256 is None and record.sidecar.ctime_ns
    for again in range(2):
        calls.clear()
        assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == "up to date  street.png"
        r = run("restore", root, "--out", out, *opts, "-q")
        street = report_of(out)["files"][1]
        assert r.exit_code == 0 and r.output == "" and calls == [], again
        assert street["status"] == "skipped" and note in street["notes"] and street["sidecar"] is None, street
    # a record of an earlier version has no sidecar for it: one sidecar-only job records it, then it is up to date
    state = RunState.open(out)
    state.record("street.png", dataclasses.replace(state.records["street.png"], sidecar=None))
    state.close()
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == (
        "sidecar     street.png  (sidecar unreadable: street.png.xmp (cannot read: Permission denied); the "
        "restoration stays)")
    assert run("restore", root, "--out", out, *opts).exit_code == 0 and calls == []
    assert report_of(out)["files"][1]["sidecar_only"] and RunState.load(out).records["street.png"].sidecar.unreadable
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == "up to date  street.png"
    # the archivist fixes the permissions: a chmod moves its ctime alone, and the next run carries it
    denied.clear()
    sidecar = root / "street.png.xmp"
    mtime = sidecar.stat().st_mtime_ns
    os.chmod(sidecar, 0o644)
    assert sidecar.stat().st_mtime_ns == mtime
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == (
        "sidecar     street.png  (sidecar readable again: street.png.xmp; the restoration stays)")
    assert run("restore", root, "--out", out, *opts).exit_code == 0 and calls == []
    street = report_of(out)["files"][1]
    assert street["sidecar_only"] and note not in street["notes"]
    assert "Main street" in (out / "street.png.xmp").read_text()
    assert not RunState.load(out).records["street.png"].sidecar.unreadable
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == "up to date  street.png"


def test_an_unreadable_sidecar_replaced_by_a_file_too_large_to_be_one_is_not_said_readable_again(
        tmp_path, stand_in_models, monkeypatch):
    """The dry run and the run's reason say what the run finds: a file too large to be a sidecar is not read, so it is
    "changed", not "readable again"; then it is recorded as it is and skipped."""
    import oldphoto.io.provenance as provenance

    denied = _deny_sidecar_reads(monkeypatch, "street.png.xmp")
    root, out, opts = _restored_scans(tmp_path, {"street.png.xmp": "Main street"})
    assert RunState.load(out).records["street.png"].sidecar.unreadable
    denied.clear()
    monkeypatch.setattr(provenance, "SIDECAR_LIMIT", 400)
    (root / "street.png.xmp").write_text(_sidecar("Main street" + " and the square" * 10))
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == (
        "sidecar     street.png  (sidecar changed: street.png.xmp; the restoration stays)")
    assert run("restore", root, "--out", out, *opts).exit_code == 0
    street = report_of(out)["files"][1]
    assert street["notes"][0] == "sidecar only (sidecar changed: street.png.xmp): its sidecar removed, " \
                                 "the restoration unchanged", street
    assert "XMP sidecar street.png.xmp not carried: larger than 0 MiB: not an XMP sidecar" in street["notes"]
    assert run("restore", root, "--out", out, *opts, "--dry-run").stdout.splitlines()[1] == "up to date  street.png"
