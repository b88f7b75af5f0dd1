from __future__ import annotations

import pytest
import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics import count_params


class TiedBlocks(nn.Module):
    """Weight-multiplexing in miniature: one Linear reused by two layers, one Parameter tied."""

    def __init__(self) -> None:
        super().__init__()
        shared = nn.Linear(4, 4)  # 16 + 4
        self.layers = nn.ModuleList([shared, shared, nn.Linear(4, 4)])  # + 20
        self.out = nn.Linear(4, 4, bias=False)
        self.out.weight = self.layers[2].weight  # tied: adds nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


def test_tied_parameters_and_shared_modules_count_once() -> None:
    model = TiedBlocks()
    by_name = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert by_name == 20 * 3 + 16  # what a naive count by name would say
    assert count_params(model) == 40


def test_trainable_only_skips_frozen(vit: nn.Module) -> None:
    total = count_params(vit)
    vit.patch_embed.requires_grad_(False)
    frozen = sum(p.numel() for p in vit.patch_embed.parameters())
    assert count_params(vit, trainable_only=True) == total - frozen
    assert count_params(vit) == total


def test_matches_timm_reference(vit: nn.Module) -> None:
    assert count_params(vit) == sum(p.numel() for p in vit.parameters())


def test_lazy_module_is_refused() -> None:
    with pytest.raises(VitCompressError, match="run one forward pass"):
        count_params(nn.LazyLinear(3))
