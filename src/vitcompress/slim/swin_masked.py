"""Masked Swin for the ViT-Slim search: soft masks on window-attention dims and MLP hidden units.

Child replacement only: every block's `attn` becomes a masked `AttentionCore` and its `mlp` a masked `MlpCore`,
so timm's block forward (cyclic shift, padding, window partition, its shift mask) and the multiplexed block's
forward (its own per-layer mask) run unchanged around them. State-dict keys are the plain model's plus the masks
(`layers.1.blocks.0.attn.dim_mask`, `layers.1.blocks.0.mlp.hidden_mask`; on a multiplexed Swin
`layers.1.blocks_shared.0.dim_mask` / `.hidden_mask`, one per shared group).

Attention masks have one value per (head, head dim) and multiply q, k and v of that dim alike, as on ViT. The
attention is computed by hand: logits + relative-position bias (one bias-table column per head), head mixing if
multiplexed, the window mask, softmax, @v. A head whose dims are all masked still has its bias as logits; its
output is zero (v is zero), so extraction may drop it, with its bias-table column, unless head mixing reads it.
There are no token masks: the paper searched Swin with attention and MLP masks only.
"""

from __future__ import annotations

from timm.layers import Mlp
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import AttentionCore
from vitcompress.models.layers import head_dim, is_mask_param, transformer_layers
from vitcompress.models.mlp import MlpCore, hidden_units
from vitcompress.models.spec import family_of, unwrap
from vitcompress.models.swin import shared_groups
from vitcompress.multiplexing.swin import MultiplexedSwinBlock
from vitcompress.slim.config import SlimConfig
from vitcompress.slim.masked import MaskedSharedWeights, masked_mlp


def masked_window_attention(attn: nn.Module, mask: bool, per_head: bool = False) -> AttentionCore:
    """timm's WindowAttention (or a multiplexed core) with a (heads, head_dim) mask on q, k and v ((heads, 1):
    whole heads, for Swin V2's cosine attention): owned on a plain Swin, in the bound group on a multiplexed one."""
    if isinstance(attn, AttentionCore):
        return attn
    return AttentionCore.of(attn, mask_shape=(attn.num_heads, 1 if per_head else head_dim(attn)) if mask else None)


def check_swin_supported(model: nn.Module, config: SlimConfig) -> None:
    """Refuse what the masked Swin does not model exactly (token masks, other block or MLP types)."""
    if config.tokens:
        raise VitCompressError(
            "token masks are not supported on Swin: the paper searched Swin without token masks; use attn/mlp "
            "masks, SlimConfig(tokens=False)"
        )
    family = family_of(model)
    plain = (family.block_type, family.attn_type, Mlp)
    for s, stage in enumerate(model.layers):
        if type(stage) is not family.stage_type:
            raise VitCompressError(f"stage {s} is {type(stage).__name__}, not timm's {family.stage_type.__name__}")
        for b, blk in enumerate(stage.blocks):
            kinds = (type(blk), type(blk.attn), type(blk.mlp))
            if kinds not in (plain, (MultiplexedSwinBlock, AttentionCore, MlpCore)):
                raise VitCompressError(
                    f"stage {s} block {b} is {'/'.join(k.__name__ for k in kinds)}; ViT-Slim masks support timm's "
                    f"{'/'.join(k.__name__ for k in plain)} and vitcompress's multiplexed Swin blocks"
                )
            if config.mlp and not isinstance(blk.mlp.norm, nn.Identity):
                raise VitCompressError(
                    f"stage {s} block {b} normalises the MLP hidden layer; MLP masks are not supported here: "
                    "use SlimConfig(mlp=False)"
                )


def attach_swin(model: nn.Module, config: SlimConfig) -> nn.Module:
    """Replace, in place, every block's attention and MLP of a (plain or multiplexed) Swin by masked ones."""
    per_head = family_of(model).per_head
    for stage in model.layers:
        shared = getattr(stage, "blocks_shared", None)
        if shared is None:
            continue
        heads = stage.blocks[0].attn.num_heads
        for g, w in enumerate(shared):
            shape = (heads, 1 if per_head else w.qkv.out_features // (3 * heads)) if config.attn else None
            shared[g] = MaskedSharedWeights(w, shape, hidden_units(w) if config.mlp else None)
            for blk in stage.blocks:
                if blk._shared is w:
                    blk.bind(shared[g])
    for blk in transformer_layers(model):
        blk.attn = masked_window_attention(blk.attn, config.attn, per_head)
        blk.mlp = masked_mlp(blk.mlp, config.mlp)
        if isinstance(blk, MultiplexedSwinBlock):
            blk.bind(blk._shared)
    return model


def is_masked_swin(model: nn.Module) -> bool:
    # Cores without masks are multiplexed or slimmed layers; only a masked Swin has mask parameters.
    return any(is_mask_param(name) for name, _ in unwrap(model).named_parameters())


def swin_mask_tensors(model: nn.Module) -> dict[str, list[Tensor]]:
    """attn/mlp mask parameters per owner: each layer's, or each multiplexed group's in global group order."""
    model = unwrap(model)
    shared = shared_groups(model)
    if shared is not None:
        attn, mlp = [w.dim_mask for w in shared], [w.hidden_mask for w in shared]
    else:
        blocks = transformer_layers(model)
        attn, mlp = [b.attn.dim_mask for b in blocks], [b.mlp.hidden_mask for b in blocks]
    return {kind: masks for kind, masks in (("attn", attn), ("mlp", mlp)) if masks[0] is not None}
