"""Writes are atomic: a failure (read-only folder, full disk, Ctrl-C) leaves no partial or temp file, and an
existing output stays as it was."""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest

from io_samples import gradient
from oldphoto.errors import ImageError
from oldphoto.io import atomic, read, write

FORMATS = ["JPEG", "PNG", "TIFF", "WEBP"]
PX = gradient(48, 64, 3, np.uint16)


def _only(folder, *names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


@pytest.mark.parametrize("fmt", FORMATS)
def test_success_replaces_and_leaves_no_temp(tmp_path, fmt):
    target = tmp_path / "out.img"
    target.write_bytes(b"old content")
    write(target, PX, None, fmt, None)
    _only(tmp_path, "out.img")
    assert read(target, 10_000).format == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_leaves_nothing_behind(tmp_path, monkeypatch, fmt):
    target = tmp_path / "out.img"
    target.write_bytes(b"old content")
    calls = []
    fail_at = 1 if fmt in ("JPEG", "WEBP") else 3  # Pillow writes a small JPEG/WebP in one go

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) >= fail_at:  # PNG/TIFF: part-way, after some bytes reached the temp file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    real_write = os.write
    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(ImageError) as info:
        write(target, PX, None, fmt, None)
    monkeypatch.undo()
    assert str(target) in str(info.value) and "No space left on device" in str(info.value)
    _only(tmp_path, "out.img")
    assert target.read_bytes() == b"old content"


def test_keyboard_interrupt_removes_the_temp_file(tmp_path, monkeypatch):
    seen = []

    def interrupted(fd, data):
        seen.append(os.listdir(tmp_path))
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "out.tif", PX, None, "TIFF", None)
    monkeypatch.undo()
    assert any(n.startswith(".out.tif.oldphoto-tmp-") for n in seen[0])  # the temp file existed mid-write
    _only(tmp_path)


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions do not stop writing (see the simulated case)")
        with pytest.raises(ImageError, match="Permission denied"):
            write(folder / "x.png", PX, None, "PNG", None)
        _only(folder)
    finally:
        folder.chmod(0o755)


def test_permission_denied_simulated(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kwargs):
        if atomic.TEMP_MARK in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", denied)
    with pytest.raises(ImageError) as info:
        write(tmp_path / "x.png", PX, None, "PNG", None)
    assert "x.png" in str(info.value) and "Permission denied" in str(info.value)
    _only(tmp_path)


def test_missing_output_folder(tmp_path):
    with pytest.raises(ImageError, match="No such file or directory"):
        write(tmp_path / "nope" / "x.png", PX, None, "PNG", None)
    _only(tmp_path)


def test_format_too_small_for_image_is_refused_before_writing(tmp_path):
    wide = np.zeros((2, 16_384, 3), np.uint8)
    with pytest.raises(ImageError, match="WEBP cannot hold 16384 x 2 pixels"):
        write(tmp_path / "x.webp", wide, None, "WEBP", None)
    _only(tmp_path)


def test_staged_writes_replace_their_paths_only_on_commit(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.tif"
    a.write_bytes(b"old a")
    staging = atomic.Staging()
    write(a, gradient(20, 30, 3, np.uint8), None, "PNG", None, staging=staging)
    write(b, gradient(20, 30, 1, np.uint16), None, "TIFF", None, staging=staging)
    assert a.read_bytes() == b"old a" and not b.exists()  # complete, but still under temp names
    staging.commit()
    assert read(a, 10**6).pixels.shape == (20, 30, 3) and read(b, 10**6).pixels.dtype == np.uint16
    staging.discard()  # nothing left to remove after a commit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.tif"]


def test_discarded_staging_leaves_every_path_as_it_was(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"old a")
    staging = atomic.Staging()
    write(a, gradient(20, 30, 3, np.uint8), None, "PNG", None, staging=staging)
    write(tmp_path / "c.png", gradient(20, 30, 3, np.uint8), None, "PNG", None, staging=staging)
    staging.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"] and a.read_bytes() == b"old a"


def test_a_folder_in_the_way_stops_the_set_before_any_rename(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"old a")
    b.mkdir()
    staging = atomic.Staging()
    write(a, gradient(20, 30, 3, np.uint8), None, "PNG", None, staging=staging)
    write(b, gradient(20, 30, 3, np.uint8), None, "PNG", None, staging=staging)
    with pytest.raises(IsADirectoryError) as info:
        staging.commit()
    assert info.value.filename == str(b) and a.read_bytes() == b"old a"  # nothing was renamed
    staging.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_closing_temp_files_removes_those_of_writes_in_progress_and_refuses_new_ones(tmp_path):
    """A run letting go of its output folder without waiting for the threads writing there (a second Ctrl-C; one may
    be blocked for good on a hung share) removes their temp files: staged or half written, none is left behind."""
    temps = atomic.TempFiles()
    done = atomic.Staging(temps)
    write(tmp_path / "done.png", PX, None, "PNG", None, staging=done)
    done.commit()
    staged = atomic.Staging(temps)
    write(tmp_path / "staged.png", PX, None, "PNG", None, staging=staged)
    half = atomic.atomic_output(tmp_path / "half.png", atomic.Staging(temps))
    half.__enter__().write(b"\x89PNG and no more")
    assert len(list(tmp_path.glob(".*"))) == 2
    assert temps.close() == []
    _only(tmp_path, "done.png")
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "late.png", PX, None, "PNG", None, staging=atomic.Staging(temps))
    with pytest.raises(KeyboardInterrupt):
        staged.commit()  # refused, its temp file gone: nothing is put in place (a run's commit gate refuses it first)
    _only(tmp_path, "done.png")
    half.__exit__(None, None, None)  # the thread that wrote half a file comes back after all: nothing left either
    _only(tmp_path, "done.png")


def test_a_failed_write_whose_temp_file_cannot_be_removed_says_why_and_names_it(tmp_path, monkeypatch):
    """The disk fills as the file is written, and its temp file cannot be removed either: the write's error is the
    full disk (not hidden by the removal's), and closing its temp files (closing_temps) names the one left."""
    real_unlink = os.unlink

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def unlink(path, *a, **kw):
        if atomic.TEMP_MARK in os.path.basename(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(atomic.PartialFiles) as caught:
            with atomic.closing_temps(atomic.TempFiles(tmp_path, folder)) as temps:
                atomic.write_bytes(tmp_path / "state.jsonl", b"{}\n", temps)
    finally:
        os.close(folder)
    e = caught.value
    assert (e.errno, e.strerror) == (errno.ENOSPC, os.strerror(errno.ENOSPC))
    [(tmp, why)] = e.left
    assert tmp.parent == tmp_path and tmp.exists() and why.errno == errno.EIO and why.filename == str(tmp)


def test_closing_temp_files_does_not_wait_for_good_on_one_being_made(tmp_path, monkeypatch):
    import threading
    import time

    answer, entered = threading.Event(), threading.Event()
    real = atomic._open_new

    def hung(name, dir_fd=None):
        entered.set()
        answer.wait(10)  # a share that does not answer, then does
        return real(name, dir_fd)

    monkeypatch.setattr(atomic, "_open_new", hung)
    temps, errors = atomic.TempFiles(), []

    def writer():
        try:
            temps.create(tmp_path / "x.png")
        except BaseException as e:  # noqa: BLE001 - what the thread ended with is the result
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    assert entered.wait(10)
    t0 = time.monotonic()
    assert temps.close(timeout=0.2) == []
    assert time.monotonic() - t0 < 5
    answer.set()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], KeyboardInterrupt)
    _only(tmp_path)  # made after the run let go, and removed at once by its own thread


def held(folder):
    """TempFiles working through a descriptor open on `folder` (as a run's lock holds one), which it duplicates."""
    fd = os.open(folder, getattr(os, "O_PATH", os.O_RDONLY))
    try:
        return atomic.TempFiles(folder, fd)
    finally:
        os.close(fd)


def test_a_held_folder_moved_away_gets_its_outputs_whole_and_keeps_no_temp_file(tmp_path):
    """The folder is moved while a source's outputs are staged and another's are half written: the staged set lands
    whole in the folder where it now is, and closing removes the half-written temp file there too (by name, the
    renames failed halfway and the temp files stayed in the moved folder)."""
    out, moved = tmp_path / "out", tmp_path / "moved"
    out.mkdir()
    temps = held(out)
    staging = atomic.Staging(temps)
    temps.makedirs(out / "album" / "deep")
    write(out / "album" / "deep" / "a.png", PX, None, "PNG", None, staging=staging)
    write(out / "b.tif", PX, None, "TIFF", None, staging=staging)
    half = atomic.atomic_output(out / "album" / "c.png", atomic.Staging(temps))
    half.__enter__().write(b"\x89PNG and no more")
    out.rename(moved)
    staging.commit()
    assert temps.close() == []
    assert not out.exists()
    assert sorted(p.relative_to(moved).as_posix() for p in moved.rglob("*") if p.is_file()) == [
        "album/deep/a.png", "b.tif"]
    assert read(moved / "album" / "deep" / "a.png", 10**6).pixels.shape == PX.shape
    half.__exit__(None, None, None)
    assert sorted(p.name for p in moved.rglob("*") if p.is_file()) == ["a.png", "b.tif"]


@pytest.mark.parametrize("again", [False, True])
def test_a_held_folder_deleted_gets_nothing_and_is_not_made_again(tmp_path, again):
    """Deleted (and, again, made anew under its name): nothing is renamed into, made in or fsynced through the folder
    under the name; the errors name the paths in full."""
    out = tmp_path / "out"
    (out / "album").mkdir(parents=True)
    temps = held(out)
    staging = atomic.Staging(temps)
    write(out / "album" / "a.png", PX, None, "PNG", None, staging=staging)
    shutil.rmtree(out)
    if again:
        out.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        staging.commit()
    assert info.value.filename.startswith(str(out / "album" / ".a.png.oldphoto-tmp-"))
    staging.discard()
    with pytest.raises(FileNotFoundError) as info:
        temps.makedirs(out / "album" / "deep")
    assert info.value.filename == str(out / "album" / "deep")
    with pytest.raises(ImageError, match="No such file or directory"):
        write(out / "b.png", PX, None, "PNG", None, staging=atomic.Staging(temps))
    assert temps.close() == []
    assert (list(out.iterdir()) == []) if again else not out.exists()
    with pytest.raises(KeyboardInterrupt):  # closed: every later call is refused
        temps.makedirs(out / "album")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _held_path(folder):
    return os.open(folder, getattr(os, "O_PATH", os.O_RDONLY))  # as the run's lock holds its folder


LEFT = [".a.jpg.oldphoto-tmp-0123abcd", "album/.b.png.oldphoto-tmp-9f9f9f9f", "album/deep/.c.tif.oldphoto-tmp-00aa11bb",
        "z/.d.png.oldphoto-tmp-12345678"]


def _leftovers(out):
    for rel in LEFT + ["notes.oldphoto-tmp-0123abcd", ".x.oldphoto-tmp-draft", "album/b.png",
                       "other/.e.png.oldphoto-tmp-cafe0123", "other/.oldphoto.lock"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"half")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_leftover_temps_are_removed_through_the_held_folder_wherever_it_went(tmp_path):
    """Found and removed through the descriptor, in path order, named by the folder's old path: a folder moved before
    (or while) they are removed keeps none, a folder made under its name is not touched, a folder with a lock of its
    own (another run's output folder) and a link to a folder are left out, and no descriptor stays open."""
    out, moved = tmp_path / "out", tmp_path / "moved"
    _leftovers(out)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / ".f.png.oldphoto-tmp-0badf00d").write_bytes(b"not under out")
    (out / "link").symlink_to(tmp_path / "elsewhere")
    (out / ".g.png.oldphoto-tmp-77777777").symlink_to(tmp_path / "elsewhere")  # a link: removed, not followed
    before = _fds()
    fd = _held_path(out)
    try:
        out.rename(moved)
        _leftovers(out)  # a folder made in its place: not the run's
        found = list(atomic.remove_leftover_temps(out, fd, ".oldphoto.lock"))
    finally:
        os.close(fd)
    assert _fds() == before
    expected = sorted(LEFT + [".g.png.oldphoto-tmp-77777777"])
    assert found == [atomic.Leftover(out / rel, None) for rel in expected]
    assert not any((moved / rel).exists() or (moved / rel).is_symlink() for rel in expected)
    assert all((out / rel).exists() for rel in LEFT)
    assert (moved / "other" / ".e.png.oldphoto-tmp-cafe0123").exists() and (moved / "album" / "b.png").exists()
    assert (tmp_path / "elsewhere" / ".f.png.oldphoto-tmp-0badf00d").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_leftover_temps_that_cannot_be_removed_or_searched_are_named_and_no_descriptor_stays_open(tmp_path,
                                                                                                   monkeypatch):
    """A file that cannot be removed and a folder that cannot be listed are yielded with why, by their full paths;
    a folder gone since it was listed is not an error; leaving the walk early closes what it opened."""
    out = tmp_path / "out"
    _leftovers(out)
    real_unlink, real_scandir = os.unlink, os.scandir

    def unlink(name, *, dir_fd=None):
        if name == ".b.png.oldphoto-tmp-9f9f9f9f":
            raise PermissionError(errno.EPERM, "Operation not permitted", name)
        return real_unlink(name, dir_fd=dir_fd)

    def scandir(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/deep"):
            raise PermissionError(errno.EACCES, "Permission denied")
        listing = real_scandir(fd)
        if os.readlink(f"/proc/self/fd/{fd}") == str(out) and (out / "z").exists():
            shutil.rmtree(out / "z")  # gone after its folder was listed
        return listing

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "scandir", scandir)
    before = _fds()
    fd = _held_path(out)
    try:
        found = list(atomic.remove_leftover_temps(out, fd, ".oldphoto.lock"))
        walk = atomic.remove_leftover_temps(out, fd, ".oldphoto.lock")
        assert next(walk).path == out / LEFT[1]  # the first already removed
        walk.close()  # left with two folders open
    finally:
        os.close(fd)
    assert _fds() == before
    assert [(f.path, f.folder, f.error and (f.error.filename, f.error.strerror)) for f in found] == [
        (out / LEFT[0], False, None),
        (out / LEFT[1], False, (str(out / LEFT[1]), "Operation not permitted")),
        (out / "album" / "deep", True, (str(out / "album" / "deep"), "Permission denied"))]
    assert (out / LEFT[1]).exists() and (out / LEFT[2]).exists()


def test_a_hashed_staging_keeps_the_sha256_of_each_file_as_it_holds_its_bytes(tmp_path):
    """Read back once complete, not taken from the stream: bytes a writer went back and changed (a TIFF's offsets
    patched after its pixels) count as they ended up; a file over one read chunk is hashed whole."""
    import hashlib

    staging = atomic.Staging(hashed=True)
    big, small = tmp_path / "big.tif", tmp_path / "small.xmp"
    data = np.random.default_rng(1).integers(0, 256, (5 << 20) // 2, dtype=np.uint8).tobytes()
    with atomic.atomic_output(big, staging) as f:
        f.write(data)
        f.seek(3)
        f.write(b"patched")
    with atomic.atomic_output(small, staging) as f:
        f.write(b"<x:xmpmeta/>")
    assert not big.exists()  # digests are known before anything goes in
    staging.commit()
    assert staging.sha256 == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (big, small)}
    assert big.read_bytes()[3:10] == b"patched"

    plain = atomic.Staging()  # the state file and the report: not read back
    with atomic.atomic_output(tmp_path / "report.json", plain) as f:
        f.write(b"{}")
    plain.commit()
    assert plain.sha256 == {}
