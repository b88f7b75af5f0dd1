"""Adapter for timm's Eva family: EVA-02, DINOv3 (`vit_*_dinov3`), Perception Encoder (`vit_pe_*`), RoPE ViTs.

What differs from VisionTransformer, and how each surgery handles it:
- rotary position embeddings, passed by the model to every block (`rope=`): the attention core applies them to
  q and k of the patch tokens after q/k-norm, as timm does; mixed RoPE's per-head tables follow the kept heads;
- q/k/v projections: fused `qkv` (with EVA's separate q/v biases) or separate `q_proj`/`k_proj`/`v_proj`, kept as
  they are (state-dict keys unchanged);
- LayerScale as `gamma_1`/`gamma_2`, MLPs of every kind (`Mlp`, packed `GluMlp`, `SwiGLU`), register tokens.

ViT-Slim keeps attention heads whole on this family: a rotary embedding turns dims in pairs (interleaved or
half-split), and fused q/v biases follow timm's [q | k | v] row layout, so removing whole heads is what stays
exact for every member. MLP units are pruned one by one. Token masks are not supported here yet (the rotary
tables would have to follow the kept tokens). MACs count matmuls only; rotary embeddings, gating and norms are
element-wise and not counted.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import timm
import torch
from timm.layers import AttentionRope
from timm.models.eva import Eva, EvaAttention, EvaBlock
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models._timm import architecture_name, drop_prob, patch_embed_kwargs, verify_rebuild
from vitcompress.models.attention import AttentionCore
from vitcompress.models.family import IsotropicFamily, register_family
from vitcompress.models.layers import is_mask_param
from vitcompress.models.mlp import SUPPORTED as MLP_KINDS
from vitcompress.models.mlp import MlpCore, hidden_units, mlp_kind

FAMILY = "eva"


def check_plain_eva(model: Eva) -> None:
    """Refuse block variants the surgeries do not model, in one line naming the block and what is supported."""
    for i, blk in enumerate(model.blocks):
        attn = blk.attn
        if type(blk) is not EvaBlock or type(attn) not in (EvaAttention, AttentionRope):
            raise VitCompressError(
                f"block {i} is {type(blk).__name__}/{type(attn).__name__}; vitcompress supports Eva's pre-norm "
                "EvaBlock with EvaAttention or AttentionRope"
            )
        if getattr(attn, "gate", None) is not None:
            raise VitCompressError(f"block {i} uses gated attention, which vitcompress does not support yet")
        if getattr(attn, "num_kv_heads", attn.num_heads) != attn.num_heads:
            raise VitCompressError(f"block {i} uses grouped-query attention (num_kv_heads), which vitcompress does "
                                   "not support yet")
        if mlp_kind(blk.mlp) is None:
            raise VitCompressError(f"block {i} has a {type(blk.mlp).__name__} MLP; vitcompress supports {MLP_KINDS}")


def _mlp_ratio(mlp: nn.Module, dim: int) -> float:
    """The `mlp_ratio` timm's Eva turns back into this MLP's hidden units (`int(dim * ratio)`, for every kind)."""
    units = hidden_units(mlp)
    ratio = units / dim
    return ratio if int(dim * ratio) == units else (units + 0.5) / dim  # float rounding must not lose a unit


def describe_eva(model: Eva) -> dict[str, Any]:
    """Constructor arguments that rebuild `model`'s architecture with `timm.create_model` (checked on meta)."""
    arch = architecture_name(model)
    check_plain_eva(model)
    blk: EvaBlock = model.blocks[0]
    attn = blk.attn
    kwargs: dict[str, Any] = {
        **patch_embed_kwargs(model),
        "depth": len(model.blocks),
        "num_heads": attn.num_heads,
        "mlp_ratio": _mlp_ratio(blk.mlp, model.embed_dim),
        "qkv_fused": attn.qkv is not None,
        "qk_norm": not isinstance(attn.q_norm, nn.Identity),
        "class_token": model.cls_token is not None,
        "num_reg_tokens": 0 if model.reg_token is None else int(model.reg_token.shape[1]),
        "dynamic_img_size": bool(model.dynamic_img_size),
        "drop_rate": float(model.head_drop.p),
        "drop_path_rate": drop_prob(model.blocks[-1].drop_path1),
    }
    if all(isinstance(b.attn, AttentionRope) for b in model.blocks):
        # Some names (Sapiens2) set it per block, a list as long as their registered depth: give this depth's.
        kwargs["num_kv_heads"] = [int(b.attn.num_kv_heads) for b in model.blocks]
    if blk.gamma_1 is not None:
        kwargs["init_values"] = 1e-5  # the value is a weight, loaded afterwards; only its presence is structure
    desc = {"family": FAMILY, "architecture": arch, "kwargs": kwargs}
    verify_rebuild(model, desc, build_eva)
    return desc


def build_eva(desc: dict[str, Any]) -> Eva:
    kwargs = dict(desc["kwargs"])
    for key in ("img_size", "patch_size"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return timm.create_model(desc["architecture"], pretrained=False, **kwargs)
    except (AssertionError, RuntimeError, TypeError, ValueError) as e:
        raise VitCompressError(f"cannot rebuild timm model {desc['architecture']!r}: {e}") from e


def _token_grid(num_tokens: int, num_prefix: int, grid: tuple[int, int]) -> tuple[int, int]:
    n = num_tokens - num_prefix
    if n == grid[0] * grid[1]:
        return grid
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"cannot lay {n} patch tokens on a grid for the MLP transformation")
    return side, side


class MultiplexedEvaBlock(nn.Module):
    """One layer of a multiplexed Eva: its own norms, LayerScale, drop-path and transformations around its
    group's shared attention and MLP weights (bound, registered once in `model.blocks_shared`)."""

    def __init__(self, block: EvaBlock, group: int, num_prefix_tokens: int, grid: tuple[int, int],
                 attn_transform: bool, mlp_transform: bool, kernel_size: int) -> None:
        from vitcompress.multiplexing.transforms import AttentionTransform, DepthwiseConvTransform

        super().__init__()
        self.group, self.num_prefix_tokens, self.grid = group, num_prefix_tokens, tuple(grid)
        self.norm1 = copy.deepcopy(block.norm1)
        mixing = AttentionTransform(block.attn.num_heads) if attn_transform else None
        self.attn = AttentionCore.of(block.attn, owns=False, transform=mixing, share_children=False)
        self.gamma_1 = None if block.gamma_1 is None else nn.Parameter(block.gamma_1.detach().clone())
        self.drop_path1 = copy.deepcopy(block.drop_path1)
        dim = block.norm2.weight.shape[0]
        eps = getattr(block.norm2, "eps", 1e-6)
        self.mlp_transform = DepthwiseConvTransform(dim, kernel_size, eps) if mlp_transform else None
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlp = MlpCore.of(block.mlp, owns=False, share_children=False)
        self.gamma_2 = None if block.gamma_2 is None else nn.Parameter(block.gamma_2.detach().clone())
        self.drop_path2 = copy.deepcopy(block.drop_path2)
        self._shared: nn.Module | None = None

    def bind(self, shared: nn.Module) -> None:
        object.__setattr__(self, "_shared", shared)  # registered once, under model.blocks_shared
        self.attn.bind(shared)
        self.mlp.bind(shared)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        out = self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask, is_causal=is_causal)
        x = x + self.drop_path1(out if self.gamma_1 is None else self.gamma_1 * out)
        if self.mlp_transform is not None:
            grid = _token_grid(x.shape[1], self.num_prefix_tokens, self.grid)
            x = self.mlp_transform.forward_tokens(x, self.num_prefix_tokens, grid)
        out = self.mlp(self.norm2(x))
        return x + self.drop_path2(out if self.gamma_2 is None else self.gamma_2 * out)

    def extra_repr(self) -> str:
        return f"group={self.group}"


def multiplex_eva(teacher: Eva, config) -> tuple[nn.Module, list[list[int]]]:
    """The multiplexed student of a timm Eva: returns (student, groups)."""
    from vitcompress.multiplexing.groups import resolve_groups
    from vitcompress.multiplexing.vit import shared_weights

    check_plain_eva(teacher)
    groups = resolve_groups(config, [len(teacher.blocks)])
    group_of = {layer: gi for gi, g in enumerate(groups) for layer in g}
    teacher_blocks = teacher.blocks
    teacher.blocks = nn.ModuleList()  # copy everything but the blocks; they are rebuilt from the teacher's
    try:
        student = copy.deepcopy(teacher)
    finally:
        teacher.blocks = teacher_blocks
    shared = nn.ModuleList(
        shared_weights([teacher_blocks[i] for i in g], config.init, config.init_index) for g in groups)
    layers = []
    for i, blk in enumerate(teacher_blocks):
        layer = MultiplexedEvaBlock(blk, group_of[i], teacher.num_prefix_tokens, tuple(teacher.patch_embed.grid_size),
                                    config.attn_transform, config.mlp_transform, config.kernel_size)
        layer.bind(shared[group_of[i]])
        layers.append(layer)
    student.blocks = nn.ModuleList(layers)
    student.blocks_shared = shared
    return student.train(teacher.training).requires_grad_(True), groups


def check_eva_masks(model: nn.Module, config) -> None:
    from vitcompress.slim.masked import check_inner_norms, check_no_grad_checkpointing

    for i, blk in enumerate(model.blocks):
        check_inner_norms(f"block {i}", blk, config, "scale_attn_inner", "scale_mlp")
    if config.tokens:
        raise VitCompressError("token masks are not supported on Eva models yet (their rotary tables would have to "
                               "follow the kept tokens); use SlimConfig(tokens=False)")
    check_no_grad_checkpointing(model)


def attach_eva_masks(model: nn.Module, config) -> nn.Module:
    """Masks on a (plain or multiplexed) Eva, in place: one per attention head (heads stay whole) and per MLP
    unit; owned by each layer, or by each multiplexed group."""
    from vitcompress.slim.masked import MaskedSharedWeights

    heads = model.blocks[0].attn.num_heads
    shared = getattr(model, "blocks_shared", None)
    if shared is not None:
        for g, w in enumerate(shared):
            shared[g] = MaskedSharedWeights(w, (heads, 1) if config.attn else None,
                                            hidden_units(w) if config.mlp else None)
        for blk in model.blocks:
            blk.bind(shared[blk.group])
        return model
    for blk in model.blocks:
        blk.attn = AttentionCore.of(blk.attn, mask_shape=(heads, 1) if config.attn else None)
        blk.mlp = MlpCore.of(blk.mlp, mask=config.mlp)
    return model


def eva_mask_tensors(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    shared = getattr(model, "blocks_shared", None)
    owners = list(shared) if shared is not None else None
    attn = [w.dim_mask for w in owners] if owners else [b.attn.dim_mask for b in model.blocks]
    mlp = [w.hidden_mask for w in owners] if owners else [b.mlp.hidden_mask for b in model.blocks]
    return {kind: masks for kind, masks in (("attn", attn), ("mlp", mlp)) if masks[0] is not None}


class EvaFamily(IsotropicFamily):
    name = FAMILY
    supported = "timm Eva (EVA-02, DINOv3, Perception Encoder, RoPE ViT)"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, Eva)

    def check(self, model: nn.Module) -> None:
        check_plain_eva(model)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        return describe_eva(model)

    def build(self, desc: dict[str, Any], init: bool = True) -> nn.Module:
        return build_eva(desc)

    def multiplex(self, model, config):
        return multiplex_eva(model, config)

    def check_masks(self, model, config) -> None:
        check_eva_masks(model, config)

    def attach_masks(self, model, config):
        return attach_eva_masks(model, config)

    def is_masked(self, model) -> bool:
        return any(is_mask_param(name) for name, _ in model.named_parameters())

    def mask_tensors(self, model):
        return eva_mask_tensors(model)

    def structure(self, model):
        from vitcompress.models.vit import vit_structure  # not at import: the families register in a fixed order

        return dataclasses.replace(vit_structure(model), per_head=True)  # heads whole on Eva (see above)

    def apply_selection(self, model, selection) -> None:
        from vitcompress.slim.pruned import apply_vit_selection

        if selection.tokens is not None:
            raise VitCompressError("token selections are not supported on Eva models yet; select attn/mlp only")
        apply_vit_selection(model, selection, self.structure(model))


register_family(EvaFamily())
