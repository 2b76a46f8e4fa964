"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: small tensors on a 2-core CPU shared with other jobs run many times slower
    with OpenMP's two spinning threads. Test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
