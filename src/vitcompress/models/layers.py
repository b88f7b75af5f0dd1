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


def head_dim(attn: nn.Module) -> int:
    """Channels per attention head (timm's Swin WindowAttention stores only its fused qkv width)."""
    value = getattr(attn, "head_dim", None)
    return int(value) if value is not None else attn.qkv.out_features // (3 * attn.num_heads)


def window_layout(layer: nn.Module) -> tuple[tuple[int, ...], ...] | None:
    """(feature resolution, window, shift) of a Swin block, None for a ViT block (one global window)."""
    if not hasattr(layer, "shift_size"):
        return None
    return tuple(layer.input_resolution), tuple(layer.window_size), tuple(layer.shift_size)
