"""EpochSampler and SeededDataset: the train batches are a pure function of (seed, epoch, position).

That is what an exact resume needs: the same batches after a restart, with any number of workers, from any
position inside the epoch, and per-sample augmentation that does not depend on the world size.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vitcompress.data import AugmentConfig, DataConfig, EpochSampler, SeededDataset, build_loaders

N = 40
DATA = list(range(N))  # a "dataset" of 40 samples: only its length matters to the sampler
DEIT = AugmentConfig(aa="rand-m9-mstd0.5-inc1", reprob=0.25, color_jitter=0.3)


def epoch(sampler: EpochSampler, e: int, start: int = 0) -> list[tuple[int, int]]:
    sampler.set_epoch(e)
    sampler.set_start(start)
    return list(sampler)


def batches(loader: DataLoader, n: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb)


def scramble_global_rngs(seed: int) -> None:
    """What a fresh process differs in: torch's, `random`'s and NumPy's global states."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------- the sampler alone


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a, b, other = EpochSampler(DATA, seed=1), EpochSampler(DATA, seed=1), EpochSampler(DATA, seed=2)
    assert epoch(a, 0) == epoch(b, 0) and epoch(a, 3) == epoch(b, 3)
    assert [i for i, _ in epoch(a, 0)] != [i for i, _ in epoch(other, 0)]
    assert [i for i, _ in epoch(a, 0)] != [i for i, _ in epoch(a, 1)]
    assert sorted(i for i, _ in epoch(a, 0)) == DATA


def test_seed_counts_before_any_set_epoch() -> None:
    # A loop that never calls set_epoch still gets the seed's order, not one shared by every seed.
    assert [i for i, _ in EpochSampler(DATA, seed=1)] != [i for i, _ in EpochSampler(DATA, seed=2)]
    assert list(EpochSampler(DATA, seed=1)) == epoch(EpochSampler(DATA, seed=1), 0)


@pytest.mark.parametrize("start", [0, 1, 16, 39, 40])
def test_set_start_yields_exactly_the_tail(start: int) -> None:
    sampler = EpochSampler(DATA, seed=5)
    full = epoch(sampler, 2)
    assert epoch(sampler, 2, start) == full[start:]
    assert len(sampler) == N  # the epoch's length whatever the start
    sampler.set_epoch(2)
    assert list(sampler) == full  # set_epoch resets the start


def test_two_ranks_partition_the_epoch_with_world_size_free_seeds() -> None:
    whole = epoch(EpochSampler(DATA, seed=3), 1)
    shards = [epoch(EpochSampler(DATA, num_replicas=2, rank=r, seed=3), 1) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == N // 2
    assert not {i for i, _ in shards[0]} & {i for i, _ in shards[1]}
    # Rank r holds global positions r, r + 2, ...: the same (index, seed) pairs as one rank's epoch.
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2]


def test_repeated_augmentation_over_two_ranks() -> None:
    shards = [epoch(EpochSampler(DATA, num_replicas=2, rank=r, seed=3, repeats=3), 0) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == N // 2  # timm keeps the epoch at one pass's length
    merged = [pair for pairs in zip(*shards, strict=True) for pair in pairs]  # back in global order
    indices = [i for i, _ in merged]
    whole = indices[: len(indices) // 3 * 3]
    assert whole[0::3] == whole[1::3] == whole[2::3]  # each image three times in a row ...
    for i in set(whole[0::3]):
        assert i in {j for j, _ in shards[0]} and i in {j for j, _ in shards[1]}  # ... on both ranks
    assert len({s for _, s in merged}) == len(merged)  # and each copy gets its own augmentation seed
    assert merged == epoch(EpochSampler(DATA, seed=3, repeats=3), 0)  # the same pairs as on one rank


def test_seeded_dataset_seeds_each_item_and_restores_the_generators() -> None:
    noisy = SeededDataset(_Noise())
    scramble_global_rngs(0)
    state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    a, b = noisy[(0, 11)], noisy.__getitems__([(0, 11), (1, 12)])
    assert a == b[0] and a != b[1] and noisy[3] == 3  # plain indices pass through
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert all(np.array_equal(x, y) for x, y in zip(np.random.get_state(), state[2], strict=True))


class _Noise(torch.utils.data.Dataset):
    """Items are draws from all three global generators (or the index itself, unseeded)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> object:
        return (torch.rand(()).item(), random.random(), np.random.rand()) if index < 2 else index


# ---------------------------------------------------------------- the train loader


@pytest.fixture
def folder(make_image_folder: Callable[..., Path]) -> str:
    return str(make_image_folder(per_class=4))  # 12 train images


def test_workers_do_not_change_the_batches(folder: str) -> None:
    runs = [
        batches(build_loaders(DataConfig(folder, batch_size=4, workers=workers), (3, 16, 16), aug=DEIT, seed=1)[0])
        for workers in (0, 2)
    ]
    assert_same_batches(*runs)
    digits = [batches(build_loaders("digits", (1, 8, 8), batch_size=64, num_workers=w)[0], 3) for w in (0, 2)]
    assert_same_batches(*digits)


def test_resume_inside_an_epoch_replays_its_tail(folder: str) -> None:
    train = build_loaders(folder, (3, 16, 16), batch_size=4, aug=DEIT, seed=2)[0]
    train.sampler.set_epoch(1)
    full = batches(train)
    train.sampler.set_epoch(1)
    train.sampler.set_start(2 * 4)  # two batches done
    assert_same_batches(batches(train), full[2:])


@pytest.mark.parametrize("spec", ["digits", "folder"])
def test_a_new_process_replays_epoch_one(folder: str, spec: str) -> None:
    """The batches of epoch 1 do not depend on what the process did before (here: train through epoch 0).

    Building the loaders again in this process stands for a restarted one: what a fresh process has
    differently is its global generator states (scrambled here) and the objects built in it (built again
    here, and nothing is cached at module level). The batches depend on neither: the order comes from
    `(seed, epoch)`, and every sample's augmentation reseeds the global generators from its position.
    """
    spec = folder if spec == "folder" else spec
    aug = DEIT if spec == folder else AugmentConfig()
    size, bs = ((3, 16, 16), 4) if spec == folder else ((1, 8, 8), 256)
    first = build_loaders(spec, size, batch_size=bs, aug=aug, seed=4)[0]
    first.sampler.set_epoch(0)
    epoch0 = batches(first)
    first.sampler.set_epoch(1)
    epoch1 = batches(first)
    scramble_global_rngs(12345)
    second = build_loaders(spec, size, batch_size=bs, aug=aug, seed=4)[0]
    second.sampler.set_epoch(1)
    assert_same_batches(batches(second), epoch1)
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


def test_loading_leaves_the_training_generators_alone() -> None:
    train = build_loaders("digits", (1, 8, 8), batch_size=64)[0]
    scramble_global_rngs(1)
    expected = torch.rand(3), random.random(), np.random.rand()
    scramble_global_rngs(1)
    batches(train, 2)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]
