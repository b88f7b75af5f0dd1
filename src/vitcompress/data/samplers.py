"""A train sampler whose order is a pure function of (seed, epoch), so a run resumed mid-epoch replays it.

`EpochSampler` wraps torch's `DistributedSampler` (or timm's `RepeatAugSampler` for repeated augmentation), both
of which shuffle from the epoch number alone, and adds two things the training loop needs for an exact resume:

- `set_start(n)`: the next pass begins at this rank's n-th sample, so the batches already trained on are
  skipped without loading them.
- Each index comes with a per-sample seed, `(index, seed)`; `SeededDataset` seeds torch, `random` and NumPy
  with it before the sample's transform runs. Augmentation then depends on the sample's place in the epoch,
  not on which worker process loaded it or on what that worker loaded before: the same after a restart, with
  any number of workers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser): cheap enough to call per sample."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 29
    return h >> 1


def seed_all(seed: int) -> None:
    """Seed torch's CPU generator, `random` and NumPy's global generator (what timm's transforms draw from).

    Only the CPU generator: `torch.manual_seed` would also reseed every CUDA generator, which the training
    step's dropout and drop-path draw from, and which `preserved_rngs` cannot put back.
    """
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def preserved_rngs() -> Iterator[None]:
    """Put torch's CPU generator, `random` and NumPy's global generator back as they were on exit.

    Loading in the training process (workers=0) seeds them per sample; without this the training step's own
    draws (drop-path, Mixup) would continue from the last sample's seed, and so differ with the worker count.
    """
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


class EpochSampler(Sampler):
    """Shuffled, sharded over ranks, optionally repeated; yields `(index, sample_seed)` pairs.

    Args:
        dataset: The train dataset (only its length is used).
        num_replicas: World size; each rank sees its own interleaved shard of one global permutation.
        rank: This process's rank.
        seed: The run's seed; the permutation of epoch e depends on (seed, e) only.
        repeats: Repeated augmentation (timm's `RepeatAugSampler`, each image `repeats` times per epoch on
            different ranks); 0 for plain sharded shuffling.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: float = 0):
        self.num_replicas, self.rank, self.seed, self.repeats = num_replicas, rank, seed, repeats
        if repeats:
            from timm.data.distributed_sampler import RepeatAugSampler  # deferred: timm imports all its models

            self.base: Sampler = RepeatAugSampler(dataset, num_replicas=num_replicas, rank=rank, num_repeats=repeats)
        else:
            self.base = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=0)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s permutation; also resets the start to the epoch's first sample."""
        self.epoch = epoch
        # Both base samplers seed their shuffle from set_epoch's value alone; folding the run's seed in makes
        # two seeds give two orders.
        self.base.set_epoch(mix_seed(self.seed, epoch) % 2**62)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Begin the next pass at this rank's `start`-th sample of the epoch (call after `set_epoch`)."""
        self.start = start

    def __len__(self) -> int:
        # The whole epoch, whatever the start: the loop's schedule is in steps per full epoch.
        return len(self.base)

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler stands: enough, with the run's config, to rebuild the rest of the epoch."""
        return {
            "epoch": self.epoch,
            "start": self.start,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "repeats": self.repeats,
        }

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.base):
            if position < self.start:
                continue
            # The global position (over all ranks), so a sample's seed does not depend on the world size.
            global_position = self.rank + position * self.num_replicas
            yield int(index), mix_seed(self.seed, self.epoch, global_position)


class SeededDataset(Dataset):
    """Wraps a dataset so that `(index, seed)` items are fetched with the global RNGs seeded by `seed`.

    Plain integer indices pass through unseeded, so the wrapped dataset also serves ordinary samplers. A base
    dataset with a batched `__getitems__` (the built-in digits) gets one seed per batch: its first item's.
    The global generators are put back afterwards (`preserved_rngs`), so loading in the training process
    leaves the training step's randomness as it was.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        # Attribute access falls through to the wrapped dataset (e.g. `.reader`, `.targets`).
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if not isinstance(item, tuple):
            return self.dataset[item]
        with preserved_rngs():
            return self._seeded(*item)

    def _seeded(self, index: int, seed: int) -> Any:
        seed_all(seed)
        return self.dataset[index]

    def __getitems__(self, items: list) -> list:
        batched = getattr(self.dataset, "__getitems__", None)
        if not items or not isinstance(items[0], tuple):
            return batched(list(items)) if batched else [self.dataset[item] for item in items]
        with preserved_rngs():
            if batched is None:
                return [self._seeded(index, seed) for index, seed in items]
            seed_all(items[0][1])
            return batched([index for index, _ in items])
