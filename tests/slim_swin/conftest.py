"""Tiny timm Swins for the Swin slimming tests, seeded random mask values, and one torch thread.

Every config uses shifted windows; together they cover a stage that is a single window (timm drops its shift),
maps padded up to whole windows (qkv runs on more tokens than the MLP), and head widths unequal to C/heads.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from vitcompress.slim.attach import mask_tensors

ARCH = "swin_tiny_patch4_window7_224"
BASE = dict(patch_size=4, num_classes=10)

CONFIGS: dict[str, dict] = {
    # 16x16 then 8x8 maps, window 4: the odd layer of both stages is shifted.
    "w4_64": dict(img_size=64, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4)),
    # 14x14 then 7x7 maps, window 7: stage 2 is one window, so timm does not shift it.
    "w7_56": dict(img_size=56, window_size=7, embed_dim=32, depths=(2, 2), num_heads=(2, 4)),
    # 10x10 then 5x5 maps, window 4: both padded to whole windows; head_dim 12, so attention width != C.
    "w4_40_pad": dict(img_size=40, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), head_dim=12),
}

_BUILT: dict[str, nn.Module] = {}


def build_swin(config: str = "w4_64", seed: int = 0, **overrides) -> nn.Module:
    """A tiny, seeded timm Swin of `config` in eval mode (a fresh copy on every call; each built once)."""
    key = repr((config, seed, sorted(overrides.items())))
    if key not in _BUILT:
        torch.manual_seed(seed)
        _BUILT[key] = timm.create_model(ARCH, pretrained=False, **{**BASE, **CONFIGS[config], **overrides})
    return copy.deepcopy(_BUILT[key]).eval()


def swin_images(model: nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    height, width = model.patch_embed.img_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def size_of(model: nn.Module) -> tuple[int, int, int]:
    return (3, *model.patch_embed.img_size)


def randomize_masks(masked: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded mask values as a search might leave them, in [-0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensors in mask_tensors(masked).values():
            for t in tensors:
                t.copy_(torch.rand(t.shape, generator=gen) * 2 - 0.5)
    return masked


@pytest.fixture(params=list(CONFIGS))
def swin_config(request: pytest.FixtureRequest) -> str:
    return request.param
