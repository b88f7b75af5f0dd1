"""Seeding. The loop reseeds every epoch from (seed, epoch, rank), so a resumed run replays the same random
streams as an uninterrupted one without storing generator states, whatever the world size."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device).

    Call it with the same seed on every rank before building the model; DDP broadcasts rank 0's weights at
    wrap time anyway, but identical construction keeps non-parameter state (e.g. random buffers) identical.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for one epoch on one rank, distinct for every (seed, epoch, rank) triple.

    Ranks must differ so their augmentations and dropout masks differ; epochs must differ so data order does.
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A seed for one micro-batch of one epoch on one rank: dropout, drop-path and Mixup draw from it, so a run
    resumed between two steps draws exactly what the uninterrupted run drew."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1)[0])
