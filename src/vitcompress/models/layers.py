"""Family-independent access to a model's transformer layers and token layout (for distillation and masks)."""

from __future__ import annotations

from torch import nn

from vitcompress.models.spec import unwrap


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """Blocks in execution order: ViT's `blocks`, or every stage's blocks for Swin."""
    model = unwrap(model)
    if hasattr(model, "blocks"):
        return list(model.blocks)
    if hasattr(model, "layers"):
        return [blk for stage in model.layers for blk in stage.blocks]
    raise TypeError(f"{type(model).__name__} has no transformer blocks")


def num_prefix_tokens(model: nn.Module) -> int:
    """Class/distillation/register tokens in front of the patch tokens (0 for Swin)."""
    return int(getattr(unwrap(model), "num_prefix_tokens", 0))
