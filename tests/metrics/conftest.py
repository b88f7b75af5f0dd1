"""Tiny timm models shared by the metrics tests (built fresh per test: metrics must not mutate them)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
TINY_SWIN = dict(img_size=32, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4))


def tiny_vit(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY_VIT, **overrides})


def tiny_swin(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **{**TINY_SWIN, **overrides})


def set_fused_attn(model: nn.Module, fused: bool) -> int:
    """Switch every timm attention module between SDPA and manual attention; return how many."""
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for module in modules:
        module.fused_attn = fused
    return len(modules)


@pytest.fixture
def vit() -> nn.Module:
    return tiny_vit()


@pytest.fixture
def swin() -> nn.Module:
    return tiny_swin()
