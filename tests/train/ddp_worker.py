"""Run by test_train_distributed.py under `torchrun --nproc_per_node=2`: train, dump weights and history."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, DistributedSampler
from train_toys import tiny_vit, toy_dataset

from vitcompress.train import CrossEntropyObjective, TrainConfig, cleanup, fit, setup_distributed

CFG = TrainConfig(epochs=2, lr=2e-3, min_lr=1e-4, warmup_epochs=0.5, log_every=1, ema_decay=0.9)
GLOBAL_BATCH = 16


def loaders(world_size: int, rank: int) -> tuple[DataLoader, DataLoader]:
    """Shards of one shuffled order; with world_size=1 this is the single-process equivalent."""
    data = toy_dataset(n=64)
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    val_sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=False)
    batch = GLOBAL_BATCH // world_size
    return DataLoader(data, batch, sampler=sampler), DataLoader(data, 32, sampler=val_sampler)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = setup_distributed()
    # Deliberately different inits per rank: DDP must start every rank from rank 0's weights.
    model = tiny_vit(seed=info.rank)
    train, val = loaders(info.world_size, info.rank)
    history = fit(model, train, val, CrossEntropyObjective(), CFG, out / "run", progress=False)
    save_file(model.state_dict(), out / f"rank{info.rank}.safetensors")
    (out / f"history{info.rank}.json").write_text(json.dumps(history.records))
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
