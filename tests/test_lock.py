import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from oldphoto.lock import LOCK_NAME, FolderLost, LockHeld, OutputLock, pid_alive, process_start_time


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    return child.pid


def write_lock(folder, pid, host=None, started=None):
    (folder / LOCK_NAME).write_text(json.dumps(
        {"pid": pid, "host": host or socket.gethostname(), "started": time.time() if started is None else started}))


def test_lock_file_names_its_owner_and_is_removed_on_release(tmp_path):
    with OutputLock(tmp_path) as lock:
        data = json.loads((tmp_path / LOCK_NAME).read_text())
        assert data["pid"] == os.getpid() and data["host"] == socket.gethostname()
        assert abs(data["started"] - time.time()) < 60
        assert lock.took_over is None
    assert not (tmp_path / LOCK_NAME).exists()


def test_second_lock_on_same_folder_is_refused(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(LockHeld, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            OutputLock(tmp_path).acquire()
    OutputLock(tmp_path).acquire()  # free again after release


def test_lock_of_a_live_process_is_respected(tmp_path):
    write_lock(tmp_path, os.getpid())
    with pytest.raises(LockHeld, match="in use by"):
        OutputLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    with OutputLock(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over.pid == pid
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_from_another_host_is_not_judged(tmp_path):
    write_lock(tmp_path, dead_pid(), host="some-other-host.example")
    with pytest.raises(LockHeld, match="some-other-host.example"):
        OutputLock(tmp_path).acquire()


@pytest.mark.skipif(process_start_time(os.getpid()) is None, reason="needs /proc")
def test_reused_pid_makes_the_lock_stale(tmp_path):
    # The lock claims our pid, but was written long before this process started: the pid was reused.
    write_lock(tmp_path, os.getpid(), started=process_start_time(os.getpid()) - 3600)
    with OutputLock(tmp_path) as lock:
        assert lock.took_over is not None


def test_empty_lock_is_stale_only_when_old(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text("")
    with pytest.raises(LockHeld, match="still starting"):
        OutputLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with OutputLock(tmp_path) as lock:
        assert lock.took_over is None  # nothing readable to report, but the lock is ours now
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_released_on_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputLock(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = OutputLock(tmp_path)
    lock.acquire()
    write_lock(tmp_path, 12345, host="other")  # someone replaced it meanwhile
    lock.release()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "other"


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        OutputLock(tmp_path).acquire()
    monkeypatch.setattr(os, "write", real_write)
    assert not (tmp_path / LOCK_NAME).exists()  # the next run (space freed) is not refused as "still starting"
    with OutputLock(tmp_path):
        pass


def test_check_folder_tells_the_locked_folder_from_one_in_its_place(tmp_path):
    out, moved = tmp_path / "out", tmp_path / "moved"
    out.mkdir()
    lock = OutputLock(out)
    with pytest.raises(RuntimeError, match="before the lock was taken"):
        lock.check_folder()
    lock.acquire()
    lock.check_folder()  # untouched, and with files added: still the run's
    (out / "a.jpg").write_bytes(b"x")
    lock.check_folder()
    out.rename(moved)
    with pytest.raises(FolderLost, match=f"^{out}: the output folder was deleted or moved away during the run$"):
        lock.check_folder()
    out.mkdir()  # a new folder under the name, even with a copy of the lock in it, is not the one locked
    (out / LOCK_NAME).write_bytes((moved / LOCK_NAME).read_bytes())
    with pytest.raises(FolderLost, match=r"the output folder was replaced during the run \(deleted or moved"):
        lock.check_folder()
    lock.release()  # and is left alone: the lock there is not in the folder this lock was taken in, which gets it
    assert (out / LOCK_NAME).exists() and not (moved / LOCK_NAME).exists()


def test_a_folder_deleted_and_made_again_is_told_apart_though_its_inode_number_is_free_again(tmp_path):
    """Deleting a folder frees its inode number, which ext4 hands straight to the next folder made (rm -rf out;
    mkdir out): by (st_dev, st_ino) alone the new folder was taken for the locked one. The lock keeps the folder
    itself open, so its number cannot be given to another folder while the run holds it."""
    for i in range(5):  # each try on a fresh folder: a file system may or may not reuse the number at once
        out = tmp_path / f"out{i}"
        out.mkdir()
        lock = OutputLock(out)
        lock.acquire()
        shutil.rmtree(out)
        out.mkdir()
        with pytest.raises(FolderLost, match="replaced during the run"):
            lock.check_folder()
        lock.release()
        assert list(out.iterdir()) == []  # what is in the new folder is not the run's to touch


def test_the_folder_is_let_go_of_on_release(tmp_path):
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for lose in (False, True):
        out = tmp_path / f"out{lose}"
        out.mkdir()
        lock = OutputLock(out)
        lock.acquire()
        if lose:
            shutil.rmtree(out)
        lock.release()
    if before is not None:
        assert set(os.listdir("/proc/self/fd")) == before
