"""Helpers for the ViT-Slim tests: random mask values (no search needed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitcompress.slim.attach import mask_tensors


def randomize_masks(masked: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded mask values as a search might leave them: attn/mlp in [-0.5, 1.5), token θ in [-1, 5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for kind, tensors in mask_tensors(masked).items():
            for t in tensors:
                noise = torch.rand(t.shape, generator=gen)
                t.copy_(noise * 6 - 1 if kind == "tokens" else noise * 2 - 0.5)
    return masked


@pytest.fixture
def randomize():
    return randomize_masks
