import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small operations: one intra-op thread is faster on a shared machine
    (two threads spin-wait on each other when other jobs hold the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
