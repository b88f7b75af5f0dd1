"""Tiny timm Swin configurations for the Swin tests.

Each one exercises a window layout: shifted windows in every stage, a window as large as the map (timm then drops
the shift, unless always_partition), and maps that do not divide into windows (padding, shifted over the padding).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

ARCH = "swin_tiny_patch4_window7_224"
BASE = dict(patch_size=4, num_classes=10)

CONFIGS: dict[str, dict] = {
    # 16x16 then 8x8 maps, window 4: every odd layer of both stages is shifted; stage 2 has 4 layers.
    "w4_64": dict(img_size=64, window_size=4, embed_dim=24, depths=(2, 4), num_heads=(2, 4)),
    # 14x14 then 7x7 maps, window 7: stage 2 is a single window, so timm does not shift it.
    "w7_56": dict(img_size=56, window_size=7, embed_dim=32, depths=(2, 2), num_heads=(2, 4)),
    # 10x10 then 5x5 maps, window 4: both padded to whole windows, shifted over the padded map.
    "w4_40_pad": dict(img_size=40, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4)),
    # 14x14 then 7x7 maps, window 7, always_partition: stage 2 is one window and still shifted (masked).
    "w7_56_always": dict(img_size=56, window_size=7, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                         always_partition=True),
}


_BUILT: dict[str, nn.Module] = {}


def build_swin(config: str = "w4_64", seed: int = 0, arch: str = ARCH, **overrides) -> nn.Module:
    """A tiny, randomly initialised (seeded) timm Swin of `config`, in eval mode (a fresh copy on every call)."""
    key = repr((config, seed, arch, sorted(overrides.items())))
    if key not in _BUILT:  # timm's weight init dominates the cost of these tests; build each model once
        torch.manual_seed(seed)
        _BUILT[key] = timm.create_model(arch, pretrained=False, **{**BASE, **CONFIGS[config], **overrides})
    return copy.deepcopy(_BUILT[key]).eval()


def swin_images(model: nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    height, width = model.patch_embed.img_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(CONFIGS))
def swin_config(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_swin() -> Callable[..., nn.Module]:
    return build_swin
