"""`distributed=True` in a one-process gloo group: EpochSampler on train, DistributedSampler on val."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from vitcompress.data import AugmentConfig, EpochSampler, build_loaders


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
    assert isinstance(train.sampler, EpochSampler) and isinstance(val.sampler, DistributedSampler)
    assert not val.sampler.shuffle and train.sampler.seed == 3
    assert (train.sampler.num_replicas, train.sampler.rank) == (1, 0)
    assert len(train.sampler) == info.train_size and len(val.sampler) == info.val_size

    train.sampler.set_epoch(0)
    epoch0 = list(train.sampler)
    assert list(train.sampler) == epoch0  # same epoch, same order
    train.sampler.set_epoch(1)
    epoch1 = list(train.sampler)
    assert epoch1 != epoch0 and sorted(i for i, _ in epoch1) == sorted(i for i, _ in epoch0)
    assert list(val.sampler) == list(range(info.val_size))
    assert targets(val) == [int(t) for t in val.dataset.targets]


def test_repeated_augmentation_under_ddp(process_group: None) -> None:
    aug = AugmentConfig(aug_repeats=3)
    train, _, info = build_loaders("digits", input_size=(1, 8, 8), batch_size=64, distributed=True, aug=aug)
    assert train.sampler.repeats == 3
    indices = [index for index, _ in train.sampler]
    # timm's RepeatAugSampler: each image three times in a row, the epoch kept at (about) one pass's length.
    assert len(indices) == info.train_size // 256 * 256
    whole = indices[: len(indices) // 3 * 3]
    assert whole[0::3] == whole[1::3] == whole[2::3]
    x, _ = next(iter(train))
    assert not torch.equal(x[0], x[1])  # the copies are augmented differently
