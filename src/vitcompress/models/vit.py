"""Adapter for timm's VisionTransformer family (ViT, DeiT, DeiT distilled, DeiT-III, register tokens, avg pooling).

A plain timm model is described by its registered architecture name plus the constructor arguments read back
from its modules, so it can be rebuilt without the code that made it (and without pretrained weights).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models._timm import architecture_name, drop_prob, patch_embed_kwargs

FAMILY = "vit"


def is_vit(model: nn.Module) -> bool:
    return isinstance(model, VisionTransformer)


def check_plain_blocks(model: VisionTransformer) -> None:
    """Refuse block variants our surgeries do not model (e.g. parallel blocks, gated or rotary attention)."""
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise VitCompressError(
                f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}; vitcompress "
                "supports timm's standard Block with Attention (ViT, DeiT, DeiT-III, reg tokens, q/k-norm)"
            )
        if blk.attn.gate is not None:
            raise VitCompressError(f"block {i} uses gated attention, which vitcompress does not support yet")


def grid_size(model: VisionTransformer) -> tuple[int, int]:
    return tuple(model.patch_embed.grid_size)


def describe_vit(model: VisionTransformer) -> dict[str, Any]:
    """Constructor arguments that rebuild `model`'s architecture with `timm.create_model`."""
    arch = architecture_name(model)
    check_plain_blocks(model)
    blk: Block = model.blocks[0]
    kwargs: dict[str, Any] = {
        **patch_embed_kwargs(model),
        "depth": len(model.blocks),
        "num_heads": blk.attn.num_heads,
        "mlp_ratio": blk.mlp.fc1.out_features / model.embed_dim,
        "qkv_bias": blk.attn.qkv.bias is not None,
        "qk_norm": not isinstance(blk.attn.q_norm, nn.Identity),
        "proj_bias": blk.attn.proj.bias is not None,
        "init_values": 1e-5 if not isinstance(blk.ls1, nn.Identity) else None,
        "class_token": bool(model.has_class_token),
        "reg_tokens": int(model.num_reg_tokens),
        "no_embed_class": bool(model.no_embed_class),
        "pos_embed": "learn" if model.pos_embed is not None else "none",
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "final_norm": not (isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.Identity)),
        "dynamic_img_size": bool(model.dynamic_img_size),
        "drop_rate": float(model.head_drop.p),
        "drop_path_rate": drop_prob(model.blocks[-1].drop_path1),
    }
    desc = {"family": FAMILY, "architecture": arch, "kwargs": kwargs}
    _verify_rebuild(model, desc)
    return desc


def build_vit(desc: dict[str, Any], device: torch.device | str | None = None) -> VisionTransformer:
    """Rebuild a randomly initialised model from `describe_vit`'s output."""
    kwargs = dict(desc["kwargs"])
    for key in ("img_size", "patch_size"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        model = timm.create_model(desc["architecture"], pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError) as e:
        raise VitCompressError(f"cannot rebuild timm model {desc['architecture']!r}: {e}") from e
    return model.to(device) if device is not None else model


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def _verify_rebuild(model: nn.Module, desc: dict[str, Any]) -> None:
    # Built on the meta device: only shapes are compared, so even ViT-H costs nothing here.
    with torch.device("meta"):
        rebuilt = build_vit(desc)
    ours, theirs = _signature(model), _signature(rebuilt)
    if ours != theirs:
        diff = next((a, b) for a, b in zip(ours + [None], theirs + [None], strict=False) if a != b)
        raise VitCompressError(
            f"{desc['architecture']} built with non-standard arguments vitcompress cannot read back "
            f"(first difference: {diff[0]} vs rebuilt {diff[1]}); please report this model configuration"
        )
