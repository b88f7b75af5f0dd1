"""Family-independent access to a model's transformer layers and token layout (for distillation and masks)."""

from __future__ import annotations

from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.family import find_family, unwrap


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """Blocks in execution order, as the model's family adapter lists them (over all stages).

    A model of no registered family (e.g. a teacher of another timm family) gives its `blocks`, if it has any,
    so that it can still serve the distillation terms; else a one-line VitCompressError.
    """
    model = unwrap(model)
    family = find_family(model)
    if family is not None:
        return family.blocks(model)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Module) and len(list(blocks.children())):
        return list(blocks.children())
    raise VitCompressError(f"{type(model).__name__} has no transformer blocks")


def num_prefix_tokens(model: nn.Module) -> int:
    """Class/distillation/register tokens in front of the patch tokens (0 for Swin)."""
    model = unwrap(model)
    family = find_family(model)
    return family.num_prefix_tokens(model) if family is not None else int(getattr(model, "num_prefix_tokens", 0))


def head_dim(attn: nn.Module) -> int:
    """Channels per attention head (timm's Swin WindowAttention stores only its fused qkv width)."""
    value = getattr(attn, "head_dim", None)
    return int(value) if value is not None else attn.qkv.out_features // (3 * attn.num_heads)


def window_layout(layer: nn.Module) -> tuple[tuple[int, ...], ...] | None:
    """(feature resolution, window, shift) of a Swin block, None for a ViT block (one global window)."""
    if not hasattr(layer, "shift_size"):
        return None
    return tuple(layer.input_resolution), tuple(layer.window_size), tuple(layer.shift_size)


MASK_PARAMS = ("dim_mask", "hidden_mask", "token_mask")
"""Names of the ViT-Slim mask parameters: the one rule for "is a mask" (a substring match on "mask" would also
take BEiT's `mask_token` or any user parameter with "mask" in its name)."""


def is_mask_param(name: str) -> bool:
    """Whether the parameter or state-dict key `name` is a ViT-Slim mask."""
    return name.rsplit(".", 1)[-1] in MASK_PARAMS
