"""Tiny models and data for the train tests and the torchrun worker (imported by name, not collected)."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 4


def tiny_vit(seed: int = 0, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    """A 2-block, 32-wide ViT on 32x32 images; `seed` fixes its initialisation."""
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=num_classes,
        **kwargs,
    )


def toy_dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    """Learnable: each class is a fixed random image plus noise, so a few steps already lower the loss."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(NUM_CLASSES, 3, 32, 32, generator=g)
    targets = torch.arange(n) % NUM_CLASSES
    images = prototypes[targets] + 0.5 * torch.randn(n, 3, 32, 32, generator=g)
    return TensorDataset(images, targets)


def toy_loader(n: int = 64, batch_size: int = 16, shuffle: bool = True) -> DataLoader:
    return DataLoader(toy_dataset(n), batch_size=batch_size, shuffle=shuffle)


def untimed_records(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl without the fields that measure time, which differ between identical runs."""
    from vitcompress.train.loop import TIMING_KEYS

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
