"""Shared pytest configuration and fixtures for the nni-enas tests."""

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        'markers',
        'nnictl: end-to-end test that starts a real NNI experiment with nnictl (slow; '
        'deselect with -m "not nnictl")',
    )


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (use with ``pytestmark = pytest.mark.usefixtures(...)``).

    Tiny tensors: one thread is faster, and far faster when other processes share the 2 cores
    (OpenMP threads spin-wait for each other); the subprocess runs get ``OMP_NUM_THREADS=1``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
