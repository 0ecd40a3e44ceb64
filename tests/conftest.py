"""Shared by every test: one torch thread; SIGINT as a terminal delivers it, for the tests that send it; the
weights registry pointed at a test's own folder; mmap refused in chosen folders."""

import contextlib
import errno
import mmap
import os
import signal
import types
from pathlib import Path

import pytest
import torch

from oldphoto import registry


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny networks; on the 2 shared cores a second OpenMP thread only spins (tiny nets ran 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def deadline():
    """deadline(seconds, why): a context in which a call that blocks for good (opening a FIFO without a writer) raises
    TimeoutError(why) after `seconds` instead of hanging the test run (SIGALRM; the handler before is put back)."""

    @contextlib.contextmanager
    def within(seconds: int, why: str):
        def expired(signum, frame):
            raise TimeoutError(why)

        old = signal.signal(signal.SIGALRM, expired)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    return within


@pytest.fixture
def sigint_default():
    """SIGINT handled as Python does by default (KeyboardInterrupt), for tests that send it: a test run started
    with `nohup ... &` inherits SIGINT ignored, which the code under test rightly keeps ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def registry_at(monkeypatch):
    """registry_at(folder) -> folder: the weights registry reads `folder` for the rest of the test. The cached
    manifest is dropped then and at the end, so neither the test nor the next one sees another folder's entries."""
    def point(folder):
        monkeypatch.setattr(registry, "weights_dir", lambda: folder)
        registry.entries.cache_clear()
        return folder

    yield point
    registry.entries.cache_clear()


@pytest.fixture
def unmappable_folders(monkeypatch):
    """unmappable_folders(*folders, code=errno.ENODEV) -> Maps: mmap fails with `code` on the files in `folders`, as
    on a file system that cannot map files (some FUSE and network mounts). Maps.refused and Maps.mapped: the folder
    of each file mapping was refused or made for, in order."""
    real = mmap.mmap
    maps = types.SimpleNamespace(refused=[], mapped=[], folders=set(), code=errno.ENODEV)

    def mapping(fileno, *args, **kwargs):
        if fileno < 0:  # anonymous memory
            return real(fileno, *args, **kwargs)
        where = Path(os.readlink(f"/proc/self/fd/{fileno}")).parent  # a temp file's name ends in " (deleted)"
        if where in maps.folders:
            maps.refused.append(where)
            raise OSError(maps.code, os.strerror(maps.code))
        maps.mapped.append(where)
        return real(fileno, *args, **kwargs)

    def refuse_in(*folders, code=errno.ENODEV):
        maps.folders.update(Path(os.path.realpath(f)) for f in folders)
        maps.code = code
        monkeypatch.setattr(mmap, "mmap", mapping)
        return maps

    return refuse_in
