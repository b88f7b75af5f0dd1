"""Run by test_train_distributed.py under `torchrun --nproc_per_node=2`: batch 4 per rank, 2 accumulation steps."""

import dataclasses
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from train_toys import tiny_vit, toy_dataset

from vitcompress.data.samplers import EpochSampler, SeededDataset
from vitcompress.train import CrossEntropyObjective, TrainConfig, cleanup, fit, setup_distributed

ACCUM_CFG = TrainConfig(epochs=2, lr=2e-3, min_lr=1e-4, warmup_epochs=0.5, seed=5, clip_grad=1.0)
N, MICRO_BATCH, ACCUM = 64, 4, 2


def accum_loader(world_size: int, rank: int, batch: int) -> DataLoader:
    """Interleaved shards of one permutation: 2 ranks x 2 micro-batches of 4 cover the 16 images that one
    process with batch 16 takes in the same step."""
    data = toy_dataset(n=N)
    return DataLoader(SeededDataset(data), batch, sampler=EpochSampler(data, world_size, rank, seed=5))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = setup_distributed()
    model = tiny_vit(seed=0)
    cfg = dataclasses.replace(ACCUM_CFG, grad_accum_steps=ACCUM)
    fit(model, accum_loader(info.world_size, info.rank, MICRO_BATCH), None, CrossEntropyObjective(), cfg, None,
        progress=False)
    if info.rank == 0:
        save_file(model.state_dict(), out / "accum.safetensors")
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
