"""Adapter for timm's SwinTransformerV2 family (SwinV2-T/S/B/L, any window, pretrained-window scaling).

Swin V2 is Swin with three changes, each an option of the shared Swin surgeries and the attention core:
- cosine attention: cos(q, k) · exp(logit_scale), a learned scale per head (shared by a multiplexed group);
- a continuous position bias: an MLP (`cpb_mlp`) of the window's log-spaced relative coordinates gives the bias
  table, 16·sigmoid; the MLP belongs to the block's weights (shared by a group, its last layer sliced with the
  heads), the coordinates to the layer's window;
- post-norm blocks (`x + norm(attn(x))`) and separate q/v biases.

ViT-Slim keeps heads whole here: the cosine normalises over all of a head's dims, so only removing a head is
exact. The cost model counts the position-bias MLP in every layer that runs it (it is a matmul).
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models.swin_transformer_v2 import (
    SwinTransformerV2,
    SwinTransformerV2Block,
    SwinTransformerV2Stage,
    WindowAttention,
)
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models._timm import architecture_name, drop_prob, patch_embed_kwargs, verify_rebuild
from vitcompress.models.family import register_family
from vitcompress.models.swin import SwinFamily, check_plain_swin, per_stage, swin_signature

FAMILY = "swin_v2"


def check_plain_swin_v2(model: SwinTransformerV2) -> None:
    check_plain_swin(model, SwinTransformerV2Stage, SwinTransformerV2Block, WindowAttention)


def describe_swin_v2(model: SwinTransformerV2) -> dict[str, Any]:
    """Constructor arguments that rebuild `model`'s architecture (checked on the meta device, windows and shifts
    included)."""
    arch = architecture_name(model)
    check_plain_swin_v2(model)
    firsts = [stage.blocks[0] for stage in model.layers]
    kwargs: dict[str, Any] = {
        **patch_embed_kwargs(model),
        "depths": [len(stage.blocks) for stage in model.layers],
        "num_heads": [blk.attn.num_heads for blk in firsts],
        "window_size": per_stage([list(blk.window_size) for blk in firsts]),
        "always_partition": bool(firsts[0].always_partition),
        "strict_img_size": bool(model.patch_embed.strict_img_size),
        "mlp_ratio": per_stage([blk.mlp.fc1.out_features / blk.dim for blk in firsts]),
        "qkv_bias": firsts[0].attn.q_bias is not None,
        "pretrained_window_sizes": [int(blk.attn.pretrained_window_size[0]) for blk in firsts],
        "drop_rate": float(model.head.drop.p),
        "drop_path_rate": drop_prob(model.layers[-1].blocks[-1].drop_path1),
    }
    desc = {"family": FAMILY, "architecture": arch, "kwargs": kwargs}
    verify_rebuild(model, desc, build_swin_v2, swin_signature)
    return desc


def build_swin_v2(desc: dict[str, Any]) -> SwinTransformerV2:
    kwargs = dict(desc["kwargs"])
    for key in ("img_size", "patch_size", "depths", "num_heads", "mlp_ratio", "pretrained_window_sizes"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    window = kwargs.get("window_size")
    if isinstance(window, list):
        kwargs["window_size"] = tuple(tuple(w) if isinstance(w, list) else w for w in window)
    if isinstance(kwargs.get("mlp_ratio"), tuple):
        raise VitCompressError("per-stage MLP ratios cannot be rebuilt for Swin V2 (timm takes one ratio)")
    try:
        return timm.create_model(desc["architecture"], pretrained=False, **kwargs)
    except (AssertionError, RuntimeError, TypeError, ValueError) as e:
        raise VitCompressError(f"cannot rebuild timm model {desc['architecture']!r}: {e}") from e


class SwinV2Family(SwinFamily):
    """Swin's surgeries with V2's post-norm blocks, cosine attention and continuous position bias."""

    name = FAMILY
    supported = "timm SwinTransformerV2"
    post_norm = True
    per_head = True
    stage_type, block_type, attn_type = SwinTransformerV2Stage, SwinTransformerV2Block, WindowAttention

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SwinTransformerV2)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return describe_swin_v2(model)

    def build(self, desc: dict[str, Any], init: bool = True) -> nn.Module:
        return build_swin_v2(desc)


register_family(SwinV2Family())
