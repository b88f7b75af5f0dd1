"""What every timm family adapter reads the same way: the registered name, patch embedding, drop-path rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError


def architecture_name(model: nn.Module) -> str:
    """The timm name the model was created under; rebuilding goes through `timm.create_model(name, ...)`."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not arch:
        raise VitCompressError(
            f"this {type(model).__name__} has no registered architecture name; create it with "
            "timm.create_model('<name>', ...) so vitcompress can rebuild it"
        )
    return arch


def patch_embed_kwargs(model: nn.Module) -> dict[str, Any]:
    pe = model.patch_embed
    return {
        "img_size": list(pe.img_size) if pe.img_size is not None else None,
        "patch_size": list(pe.patch_size),
        "in_chans": pe.proj.in_channels,
        "num_classes": model.num_classes,
        "global_pool": model.global_pool,
        "embed_dim": model.embed_dim,
    }


def drop_prob(module: nn.Module) -> float:
    """Rate of a DropPath module (0 for the Identity timm puts there when the rate is 0)."""
    return float(getattr(module, "drop_prob", 0.0))


def shape_signature(model: nn.Module) -> list[tuple[Any, ...]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def verify_rebuild(
    model: nn.Module,
    desc: dict[str, Any],
    build: Callable[[dict[str, Any]], nn.Module],
    signature: Callable[[nn.Module], list[tuple[Any, ...]]] = shape_signature,
) -> None:
    """Refuse a model whose description does not rebuild it: same state-dict shapes (and what `signature` adds).

    Built on the meta device, so only shapes are compared and even ViT-H or Swin-L costs nothing here.
    """
    with torch.device("meta"):
        rebuilt = build(desc)
    ours, theirs = signature(model), signature(rebuilt)
    if ours != theirs:
        diff = next((a, b) for a, b in zip(ours + [None], theirs + [None], strict=False) if a != b)
        raise VitCompressError(
            f"{desc['architecture']} built with non-standard arguments vitcompress cannot read back "
            f"(first difference: {diff[0]} vs rebuilt {diff[1]}); please report this model configuration"
        )
