"""`distributed=True` in a one-process gloo group: DistributedSampler on both splits, set_epoch reshuffles."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from vitcompress.data import build_loaders


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def process_group() -> Iterator[None]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{free_port()}")
    try:
        yield
    finally:
        dist.destroy_process_group()


def targets(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(t) for _, y in loader for t in y]


def test_distributed_samplers(process_group: None) -> None:
    train, val, info = build_loaders("digits", input_size=(1, 8, 8), batch_size=256, distributed=True, seed=3)
    assert isinstance(train.sampler, DistributedSampler) and isinstance(val.sampler, DistributedSampler)
    assert train.sampler.shuffle and not val.sampler.shuffle and train.sampler.seed == 3
    assert len(train.sampler) == info.train_size and len(val.sampler) == info.val_size

    train.sampler.set_epoch(0)
    epoch0 = list(train.sampler)
    assert list(train.sampler) == epoch0  # same epoch, same order
    train.sampler.set_epoch(1)
    assert list(train.sampler) != epoch0 and sorted(train.sampler) == sorted(epoch0)
    assert list(val.sampler) == list(range(info.val_size))
    assert targets(val) == [int(t) for t in val.dataset.targets]
