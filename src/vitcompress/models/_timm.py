"""What every timm family adapter reads the same way: the registered name, patch embedding, drop-path rate."""

from __future__ import annotations

from typing import Any

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
