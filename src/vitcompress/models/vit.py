"""Adapter for timm's VisionTransformer family (ViT, DeiT, DeiT distilled, DeiT-III, register tokens, avg pooling).

A plain timm model is described by its registered architecture name plus the constructor arguments read back
from its modules, so it can be rebuilt without the code that made it (and without pretrained weights). The
family's surgeries live with their method: `multiplexing.vit` (multiplexed blocks), `slim.masked` /
`slim.pruned` (masked and sliced attention); `vit_structure` reads the slim cost structure (`slim.cost`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import timm
import torch
from timm.models.vision_transformer import Attention, Block, ResPostBlock, VisionTransformer
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models._timm import architecture_name, drop_prob, patch_embed_kwargs, verify_rebuild
from vitcompress.models.attention import qkv_bias_parts
from vitcompress.models.family import IsotropicFamily, register_family
from vitcompress.models.mlp import SUPPORTED as MLP_KINDS
from vitcompress.models.mlp import mlp_kind

if TYPE_CHECKING:
    from vitcompress.slim.cost import Structure

FAMILY = "vit"


def check_plain_blocks(model: VisionTransformer) -> None:
    """Refuse block variants our surgeries do not model (e.g. parallel blocks, gated or rotary attention)."""
    for i, blk in enumerate(model.blocks):
        if type(blk) not in (Block, ResPostBlock) or type(blk.attn) is not Attention:
            raise VitCompressError(
                f"block {i} is {type(blk).__name__}/{type(getattr(blk, 'attn', None)).__name__}; vitcompress "
                "supports timm's Block or ResPostBlock with Attention (ViT, DeiT, DeiT-III, reg tokens, q/k-norm)"
            )
        if blk.attn.gate is not None:
            raise VitCompressError(f"block {i} uses gated attention, which vitcompress does not support yet")
        if mlp_kind(blk.mlp) is None:
            raise VitCompressError(f"block {i} has a {type(blk.mlp).__name__} MLP; vitcompress supports {MLP_KINDS}")


def mlp_ratio(mlp: nn.Module, dim: int) -> float:
    """The `mlp_ratio` timm turns back into this MLP's width (`int(dim * ratio)`; a packed GLU's is both halves)."""
    width = getattr(mlp, mlp_kind(mlp).inputs[0]).out_features
    ratio = width / dim
    return ratio if int(dim * ratio) == width else (width + 0.5) / dim  # float rounding must not lose a unit


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
        "mlp_ratio": mlp_ratio(blk.mlp, model.embed_dim),
        "qkv_bias": blk.attn.qkv.bias is not None,
        "qk_norm": not isinstance(blk.attn.q_norm, nn.Identity),
        "proj_bias": blk.attn.proj.bias is not None,
        "init_values": 1e-5 if not isinstance(getattr(blk, "ls1", nn.Identity()), nn.Identity) else None,
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
    verify_rebuild(model, desc, build_vit)
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


def vit_structure(model: nn.Module) -> Structure:
    """The slim cost structure (`slim.cost.Structure`) of a plain, multiplexed or masked timm ViT/DeiT (or another
    isotropic family read the same way): one stage, one global attention window over the prefix and kept patch
    tokens, no position-bias table; a multiplexed group's shared weights are one owner."""
    from vitcompress.metrics.macs import count_module_macs
    from vitcompress.slim import cost

    blocks = list(model.blocks)
    depth, attn0 = len(blocks), blocks[0].attn
    shared = getattr(model, "blocks_shared", None)
    owner = tuple(int(blk.group) for blk in blocks) if shared is not None else tuple(range(depth))
    owners = max(owner) + 1
    kind = mlp_kind(blocks[0].mlp)
    holders = [(shared[o], shared[o]) if shared is not None else (blocks[o].attn, blocks[o].mlp)
               for o in range(owners)]
    weights = [cost.owner_weights(attn, mlp, kind) for attn, mlp in holders]
    proj, fc1, fc2 = weights[0]["proj"], weights[0][kind.inputs[0]], weights[0]["fc2"]
    attn_norm = tuple(cost.norm_entries(getattr(blk.attn, "norm", None)) for blk in blocks)
    mlp_norm = tuple(cost.norm_entries(getattr(blk.mlp, "norm", None)) for blk in blocks)
    inner_norms = sum(attn_norm) * attn0.num_heads * attn0.head_dim + sum(mlp_norm) * fc2.in_features
    grid = model.patch_embed.grid_size
    patches, prefix = grid[0] * grid[1], model.num_prefix_tokens
    fixed_macs = cost.patch_embed_macs(model)
    for head in (model.head, getattr(model, "head_dist", None)):
        if isinstance(head, nn.Linear):
            fixed_macs += head.in_features * head.out_features
    pool = getattr(model, "attn_pool", None)
    if pool is not None:  # attention pooling (MAP): a fixed cost, it reads every token at the full width
        weight = next(pool.parameters())
        x = torch.zeros(1, prefix + patches, model.embed_dim, device=weight.device, dtype=weight.dtype)
        fixed_macs += count_module_macs(pool, x)
    return cost.Structure(
        owner=owner,
        stage=(0,) * depth,
        dim=(model.embed_dim,) * depth,
        tokens=(patches,) * depth,
        prefix=(prefix,) * depth,
        padded_tokens=(patches,) * depth,
        window_area=(0,) * depth,
        head_mix=tuple(getattr(blk.attn, "transform", None) is not None for blk in blocks),
        conv_kernel=tuple(cost.conv_kernel(blk) for blk in blocks),
        attn_norm=attn_norm,
        mlp_norm=mlp_norm,
        heads=(attn0.num_heads,) * owners,
        head_dims=(attn0.head_dim,) * owners,
        hiddens=(fc2.in_features,) * owners,
        table_rows=(0,) * owners,
        has_tokens=True,
        per_head=not isinstance(attn0.q_norm, nn.Identity),
        qkv_bias=qkv_bias_parts(holders[0][0]),
        proj_bias=proj.bias is not None,
        fc1_bias=fc1.bias is not None,
        fc2_bias=fc2.bias is not None,
        fixed_macs=int(fixed_macs),
        fixed_params=cost.fixed_params(model, weights, inner_norms),
        mlp_rows=kind.rows_per_unit,
    )


class VitFamily(IsotropicFamily):
    name = FAMILY
    supported = "timm VisionTransformer (ViT/DeiT/DeiT-III)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer)

    def check(self, model: nn.Module) -> None:
        check_plain_blocks(model)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return describe_vit(model)

    def build(self, desc: dict[str, Any], init: bool = True) -> nn.Module:
        return build_vit(desc)

    def multiplex(self, model, config):
        from vitcompress.multiplexing.vit import multiplex_vit

        return multiplex_vit(model, config)

    def check_masks(self, model, config) -> None:
        from vitcompress.slim.masked import check_vit_masks

        check_vit_masks(model, config)

    def attach_masks(self, model, config):
        from vitcompress.slim.masked import attach_vit_masks

        return attach_vit_masks(model, config)

    def is_masked(self, model) -> bool:
        from vitcompress.slim.masked import MaskedBlocks

        return isinstance(model.blocks, MaskedBlocks)

    def mask_tensors(self, model):
        from vitcompress.slim.masked import vit_mask_tensors

        return vit_mask_tensors(model)

    def structure(self, model):
        return vit_structure(model)

    def apply_selection(self, model, selection) -> None:
        from vitcompress.slim.pruned import apply_vit_selection

        apply_vit_selection(model, selection)


register_family(VitFamily())
