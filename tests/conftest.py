"""Tiny timm ViT variants shared by the multiplex and export tests.

Each variant exercises one token layout or block option of timm's VisionTransformer family; all of them are built
tiny (32×32 images, 8×8 patches → a 4×4 grid) so a forward pass costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10)

# name -> (timm architecture, overrides of TINY)
VARIANTS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(embed_dim=48, num_heads=3)),
    "deit3_layerscale": ("deit3_small_patch16_224", dict(embed_dim=64, num_heads=4, depth=2)),
    "reg4_gap_fc_norm": ("vit_base_patch16_reg4_gap_256", {}),
    "reg_tokens": ("vit_tiny_patch16_224", dict(reg_tokens=4, depth=4)),
    "avg_pool_no_cls": ("vit_tiny_patch16_224", dict(class_token=False, global_pool="avg")),
    "qk_norm": ("vit_tiny_patch16_224", dict(qk_norm=True, embed_dim=64, num_heads=4, depth=2)),
}


def build_vit(variant: str = "vit", seed: int = 0, **overrides) -> nn.Module:
    """A tiny, randomly initialised (seeded) timm model of `variant`, in eval mode."""
    arch, variant_overrides = VARIANTS[variant]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**TINY, **variant_overrides, **overrides})
    return model.eval()


def perturb_(model: nn.Module, scale: float = 0.05, seed: int = 2) -> nn.Module:
    """Add seeded noise to every parameter, so identity-initialised transforms stop being identities."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    """Every tiny variant; narrow it with `@pytest.mark.parametrize("variant", [...], indirect=True)`."""
    return request.param


@pytest.fixture
def make_vit() -> Callable[..., nn.Module]:
    return build_vit


@pytest.fixture
def perturb() -> Callable[..., nn.Module]:
    return perturb_


@pytest.fixture
def images() -> torch.Tensor:
    """Two seeded 32×32 images."""
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
