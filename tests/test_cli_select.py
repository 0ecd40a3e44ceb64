"""`oldphoto restore --include / --exclude / --files-from` through the command line, with stand-in models."""

import pytest

from oldphoto.state import STATE_NAME
from restore_samples import fake_pipeline, put, report_of, run, tree


@pytest.fixture(autouse=True)
def no_hard_exit(monkeypatch):
    monkeypatch.setattr("oldphoto.cli._hard_exit", lambda code: None)


@pytest.fixture
def fake(monkeypatch):
    return fake_pipeline(monkeypatch)


def box(tmp_path):
    root = tmp_path / "archive"
    for name in ["box12/scan_0001.tif", "box12/scan_0001_access.jpg", "box12/scan_0002.TIF",
                 "box12/scan_0002_ACCESS.JPG", "rejected/scan_0009.tif", "rejected/old/scan_0008.tif"]:
        put(root / name, name.encode())
    return root


def test_include_and_exclude_choose_the_scans_and_the_report_counts_those_left_out(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--include", "*.tif", "--exclude", "rejected/", "--jobs", 1)
    assert r.exit_code == 0, r.output
    assert tree(out) == sorted([STATE_NAME, "report.json", "box12/scan_0001.tif", "box12/scan_0002.TIF"])
    assert [p.name for p in fake.calls] == ["scan_0001.tif", "scan_0002.TIF"]
    rep = report_of(out)
    assert rep["selection"] == {"include": ["*.tif"], "exclude": ["rejected/"], "files_from": None, "left_out": 2,
                                "folders_left_out": 1}
    assert rep["totals"]["files"] == 2  # the left out are no files of the run
    assert "2 to do, 0 up to date, 2 left out by --include/--exclude (and 1 folder(s) not entered); out:" in r.stderr
    assert any(line.split() == ["left", "out", "2"] for line in r.stdout.replace("│", " ").splitlines())


def test_without_a_selection_the_report_says_none(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out)
    assert r.exit_code == 0 and report_of(out)["selection"] is None and "left out" not in r.output


def test_a_rerun_with_other_filters_redoes_nothing_and_deletes_nothing(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    assert run("restore", root, "--out", out, "--exclude", "*_access.*").exit_code == 0
    before = {p: (out / p).read_bytes() for p in tree(out) if p != "report.json"}
    records = (out / STATE_NAME).read_text()
    fake.calls.clear()
    r = run("restore", root, "--out", out, "--include", "box12/*.tif")
    assert r.exit_code == 0 and fake.calls == []
    assert {f["relative"]: f["status"] for f in report_of(out)["files"]} == {"box12/scan_0001.tif": "skipped",
                                                                          "box12/scan_0002.TIF": "skipped"}
    after = {p: (out / p).read_bytes() for p in tree(out) if p != "report.json"}
    assert after == before  # the files now left out keep their outputs ...
    assert (out / STATE_NAME).read_text() == records  # ... and their records
    r = run("restore", root, "--out", out)  # all of them: only the access copies are new
    assert sorted(p.name for p in fake.calls) == ["scan_0001_access.jpg", "scan_0002_ACCESS.JPG"]


def test_files_from_takes_the_listed_scans_and_fails_the_bad_lines_alone(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    put(root / "box12" / "readme.txt")
    listed = tmp_path / "selection.txt"
    listed.write_text(f"# from the catalogue\nbox12/scan_0002.TIF\n\nbox12/nope.tif\n"
                      f"{root / 'rejected/old/scan_0008.tif'}\nbox12/readme.txt\nbox12/scan_0001_access.jpg\n")
    r = run("restore", root, "--out", out, "--files-from", listed, "--exclude", "*_access.*", "--jobs", 1)
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {listed}:4: 'box12/nope.tif': not found in the input folder {root}",
                      f"error: {listed}:6: 'box12/readme.txt': not a supported image type "
                      f"(.j2k .jp2 .jpeg .jpg .png .tif .tiff .webp)"]
    assert [p.name for p in fake.calls] == ["scan_0002.TIF", "scan_0008.tif"]
    assert tree(out) == sorted([STATE_NAME, "report.json", "box12/scan_0002.TIF", "rejected/old/scan_0008.tif"])
    rep = report_of(out)
    assert rep["totals"]["failed"] == 2 and rep["totals"]["done"] == 2
    assert [(f["source"], f["status"]) for f in rep["files"] if f["status"] == "failed"] == [
        (f"{listed}:4", "failed"), (f"{listed}:6", "failed")]
    assert rep["selection"]["files_from"] == str(listed) and rep["selection"]["left_out"] == 1


def test_files_from_stdin(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    r = run("restore", root, "--out", out, "--files-from", "-", input=b"box12/scan_0001.tif\nmissing.tif\n")
    assert r.exit_code == 1 and [p.name for p in fake.calls] == ["scan_0001.tif"]
    assert f"error: <stdin>:2: 'missing.tif': not found in the input folder {root}" in r.stderr


def test_dry_run_shows_the_selection(tmp_path, fake):
    from PIL import Image

    root, out = tmp_path / "archive", tmp_path / "out"
    for name in ["a.tif", "a_access.jpg", "rejected/b.tif"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(root / name)
    r = run("restore", root, "--out", out, "--dry-run", "--exclude", "*_access.*", "--exclude", "rejected/")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["restore     a.tif  (new)",
                                     "dry run: 1 to restore, 0 up to date, 0 would fail, 1 left out by --exclude "
                                     "(and 1 folder(s) not entered); nothing was written"]
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--include", ""], "--include: empty pattern"),
    (["--exclude", "/archive/rejected/*"], "--exclude: '/archive/rejected/*' is absolute"),
    (["--files-from", "MISSING"], "--files-from MISSING: cannot read the list (No such file or directory)"),
    (["--files-from", "LATIN1"], "--files-from LATIN1: not UTF-8 text (byte 0xe9 on line 1)"),
])
def test_bad_selections_are_usage_errors_in_one_line(tmp_path, fake, args, message):
    root, out = box(tmp_path), tmp_path / "out"
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.tif\n".encode("latin-1"))
    args = [str(tmp_path / "nope.txt") if a == "MISSING" else str(tmp_path / "latin1.txt") if a == "LATIN1" else a
            for a in args]
    message = message.replace("MISSING", str(tmp_path / "nope.txt")).replace("LATIN1", str(tmp_path / "latin1.txt"))
    r = run("restore", root, "--out", out, *args)
    assert r.exit_code == 2 and r.stderr.splitlines()[-1].startswith(f"Error: {message}")
    assert fake.calls == [] and not out.exists()


def test_a_named_file_the_patterns_would_leave_out_is_taken_with_a_note(tmp_path, fake):
    root, out = box(tmp_path), tmp_path / "out"
    access = root / "box12" / "scan_0001_access.jpg"
    r = run("restore", access, root / "box12" / "scan_0001.tif", "--out", out, "--exclude", "*_access.*")
    assert r.exit_code == 0 and sorted(p.name for p in fake.calls) == ["scan_0001.tif", "scan_0001_access.jpg"]
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {access}: named as an input, so taken, though --exclude would leave it out"]
