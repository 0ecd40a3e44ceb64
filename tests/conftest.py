"""Shared by every test: one torch thread; SIGINT as a terminal delivers it, for the tests that send it; the
weights registry pointed at a test's own folder."""

import signal

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
