"""Shared by every test: one torch thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny networks; on the 2 shared cores a second OpenMP thread only spins (tiny nets ran 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
