import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # These models are tiny: with other processes on the same few cores, extra intra-op threads spin and wait
    # instead of helping (one thread is ~10x faster here on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
