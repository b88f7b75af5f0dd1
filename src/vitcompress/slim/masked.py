"""Masked ViT/DeiT blocks for the ViT-Slim search: soft masks on attention dims, MLP units and tokens.

State-dict keys are the plain model's plus the masks (`blocks.3.attn.dim_mask`, `blocks.3.mlp.hidden_mask`,
`blocks.3.token_mask`; on a multiplexed model `blocks_shared.1.dim_mask` / `.hidden_mask`), so stripping the
masks gives back a state dict the unmasked architecture loads as is.

Token masks are exact. Layer l has a value v_l = clamp(tanh(θ_l)/tanh(θ_init), 0, 1) per patch position and a
cumulative keep K_l = K_{l-1}·v_l (prefix tokens: 1). Attention logits towards key j get + log K_l[j] (after any
head mixing), so K = 0 means exactly zero attention on that token as a key or value, in every head; the
residual updates of token i are multiplied by K_l[i], so a dropped token's state freezes. A dropped token thus
influences nothing, and the extracted model can gather the kept tokens and run fewer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import AttentionCore
from vitcompress.models.mlp import SUPPORTED, MlpCore, hidden_units, mlp_kind
from vitcompress.models.sliced_norm import check_sliceable
from vitcompress.slim.config import SlimConfig


class MaskedSharedWeights(nn.Module):
    """A multiplexed group's shared weights (its linears and any bias table) plus the masks its layers share."""

    def __init__(self, shared: nn.Module, dim_mask_shape: tuple[int, int] | None, hidden: int | None) -> None:
        super().__init__()
        for name, child in shared.named_children():
            self.add_module(name, child)
        for name, param in shared.named_parameters(recurse=False):  # e.g. Swin's bias table, EVA's q/v biases
            self.register_parameter(name, param)
        for name, buf in shared.named_buffers(recurse=False):
            self.register_buffer(name, buf, persistent=False)
        device = shared.proj.weight.device
        self.dim_mask = nn.Parameter(torch.ones(dim_mask_shape, device=device)) if dim_mask_shape else None
        self.hidden_mask = nn.Parameter(torch.ones(hidden, device=device)) if hidden else None


def masked_attention(attn: nn.Module, mask: bool, per_head: bool) -> AttentionCore:
    """timm Attention (or a multiplexed core) with a (heads, head_dim) mask on q, k and v ((heads, 1) on q/k-norm
    models: whole heads). A plain layer owns its mask; a multiplexed layer's lives in its group (rebound by
    `MaskedBlock.bind`). Masked attention always runs the manual path, so token key biases and mixing fit in."""
    if isinstance(attn, AttentionCore):  # multiplexed: weights and mask come from the bound group
        return attn
    shape = (attn.num_heads, 1 if per_head else attn.head_dim) if mask else None
    return AttentionCore.of(attn, mask_shape=shape)


def masked_mlp(mlp: nn.Module, mask: bool) -> MlpCore:
    """A timm MLP (or a multiplexed core) with one mask value per hidden unit, after the (gated) activation:
    owned on a plain layer, in the bound group on a multiplexed one."""
    if isinstance(mlp, MlpCore):
        return mlp
    return MlpCore.of(mlp, mask=mask)


class MaskedBlock(nn.Module):
    """A timm Block or MultiplexedBlock with masked attention/MLP and (optionally) a token mask θ."""

    def __init__(self, block: nn.Module, attn: bool, mlp: bool, per_head: bool, num_patches: int | None,
                 token_init: float) -> None:
        super().__init__()
        self.norm1 = block.norm1
        self.attn = masked_attention(block.attn, attn, per_head)
        self.post_norm = type(block).__name__ == "ResPostBlock" or bool(getattr(block, "post_norm", False))
        self.ls1, self.drop_path1 = getattr(block, "ls1", nn.Identity()), block.drop_path1
        if hasattr(block, "mlp_transform"):  # multiplexed: layer-local depth-wise conv on the patch grid
            self.mlp_transform = block.mlp_transform
            self.num_prefix_tokens, self.grid = block.num_prefix_tokens, block.grid
        self.norm2 = block.norm2
        self.mlp = masked_mlp(block.mlp, mlp)
        self.ls2, self.drop_path2 = getattr(block, "ls2", nn.Identity()), block.drop_path2
        self.token_init = token_init
        device = block.norm1.weight.device if hasattr(block.norm1, "weight") else None
        self.token_mask = (nn.Parameter(torch.full((num_patches,), float(token_init), device=device))
                           if num_patches else None)

    def bind(self, shared: MaskedSharedWeights) -> None:
        self.attn.bind(shared)
        self.mlp.bind(shared)

    def token_value(self) -> Tensor:
        """v = clamp(tanh(θ)/tanh(θ_init), 0, 1): exactly 1 at init, exactly 0 for θ ≤ 0."""
        return (torch.tanh(self.token_mask) / math.tanh(self.token_init)).clamp(0.0, 1.0)

    def forward(self, x: Tensor, keep: Tensor | None = None, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise VitCompressError("masked ViT-Slim blocks take no attn_mask / is_causal; call the model without")
        if keep is None and self.token_mask is not None:
            raise VitCompressError(
                "token-masked blocks must run through model.blocks (it carries the cumulative keep); "
                "gradient checkpointing via timm's set_grad_checkpointing is not supported on them"
            )
        bias, scale = None, None
        if keep is not None:
            # log K, with K = 0 -> -inf exactly and no 0·inf in the backward pass.
            bias = torch.where(keep > 0, keep.clamp_min(1e-30).log(), float("-inf")).view(1, 1, 1, -1)
            scale = keep.view(1, -1, 1)
        if self.post_norm:  # timm's ResPostBlock: the norms follow the branches
            update = self.drop_path1(self.norm1(self.attn(x, key_bias=bias)))
        else:
            update = self.drop_path1(self.ls1(self.attn(self.norm1(x), key_bias=bias)))
        x = x + (update if scale is None else update * scale)
        if getattr(self, "mlp_transform", None) is not None:
            x = self.mlp_transform.forward_tokens(x, self.num_prefix_tokens, self.grid)
        if self.post_norm:
            update = self.drop_path2(self.norm2(self.mlp(x)))
        else:
            update = self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x + (update if scale is None else update * scale)


class MaskedBlocks(nn.ModuleList):
    """`model.blocks` of a masked model: runs the blocks, carrying the cumulative token keep K through them.

    With average pooling (and `model.norm` an identity, checked at attach time) the last layer's pooled tokens
    are rescaled by K·n/ΣK, so timm's plain mean becomes the K-weighted mean: dropped tokens leave the pool.
    """

    def __init__(self, blocks: list[MaskedBlock], num_prefix: int, tokens: bool, pool_from: int | None) -> None:
        super().__init__(blocks)
        self.num_prefix, self.tokens, self.pool_from = num_prefix, tokens, pool_from

    def keeps(self) -> list[Tensor]:
        """Cumulative keep K_l over patch positions, per layer (empty without token masks)."""
        out, keep = [], None
        for blk in self:
            if blk.token_mask is None:
                return []
            v = blk.token_value()
            keep = v if keep is None else keep * v
            out.append(keep)
        return out

    def forward(self, x: Tensor) -> Tensor:
        if not self.tokens:
            for blk in self:
                x = blk(x)
            return x
        prefix = x.new_ones(self.num_prefix)
        keep = None
        for blk, k in zip(self, self.keeps(), strict=True):
            keep = torch.cat([prefix, k.to(x.dtype)])
            x = blk(x, keep)
        if self.pool_from is not None:
            pooled = keep[self.pool_from:]
            weight = pooled * (pooled.numel() / pooled.sum().clamp_min(1e-12))
            x = torch.cat([x[:, : self.pool_from], x[:, self.pool_from:] * weight.view(1, -1, 1)], dim=1)
        return x


def is_per_head(model: nn.Module) -> bool:
    """q/k-norm models keep attention heads whole (a LayerNorm over fewer dims would be another function)."""
    return not isinstance(model.blocks[0].attn.q_norm, nn.Identity)



def check_vit_masks(model: nn.Module, config: SlimConfig) -> None:
    """Refuse what the masked ViT does not model exactly, in one line naming the block and the fix."""
    for i, blk in enumerate(model.blocks):
        kind = type(blk).__name__
        if kind not in ("Block", "ResPostBlock", "MultiplexedBlock") or type(blk.attn).__name__ not in (
                "Attention", "AttentionCore"):
            raise VitCompressError(
                f"block {i} is {kind}/{type(blk.attn).__name__}; ViT-Slim masks support timm's Block/Attention "
                "and vitcompress's multiplexed blocks"
            )
        if mlp_kind(blk.mlp) is None:
            raise VitCompressError(f"block {i} has a {type(blk.mlp).__name__} MLP; ViT-Slim masks support {SUPPORTED}")
        if getattr(blk.attn, "gate", None) is not None:
            raise VitCompressError(f"block {i} uses gated attention, which ViT-Slim masks do not support")
        check_inner_norms(f"block {i}", blk, config, "scale_attn_norm", "scale_mlp_norm")
        if config.tokens and getattr(blk, "mlp_transform", None) is not None:
            raise VitCompressError(
                "token masks cannot be combined with the multiplexed depth-wise-conv MLP transformation, which "
                "needs the full patch grid; use SlimConfig(tokens=False) or multiplex with mlp_transform=False"
            )
    check_no_grad_checkpointing(model)
    if config.tokens:
        _check_token_pooling(model)


def check_inner_norms(where: str, block: nn.Module, config: SlimConfig, attn_norm: str, mlp_norm: str) -> None:
    """Refuse masks on a layer whose inner norm (over all its attention dims or MLP units) extraction cannot
    slice exactly: a LayerNorm can be (`models.sliced_norm`), other norms not; `attn_norm`/`mlp_norm` name
    timm's option."""
    if config.attn:
        check_sliceable(block.attn.norm, where, attn_norm, "attn")
    if config.mlp:
        check_sliceable(block.mlp.norm, where, mlp_norm, "mlp")


def check_no_grad_checkpointing(model: nn.Module) -> None:
    if getattr(model, "grad_checkpointing", False):
        raise VitCompressError("turn off gradient checkpointing (model.set_grad_checkpointing(False)) before masking")


def _check_token_pooling(model: nn.Module) -> None:
    if model.dynamic_img_size:
        raise VitCompressError("token masks need a fixed patch grid; build the model with dynamic_img_size=False")
    if model.attn_pool is not None or model.global_pool not in ("token", "avg"):
        raise VitCompressError(
            f"token masks support class-token or average pooling, not global_pool={model.global_pool!r}; "
            "use SlimConfig(tokens=False)"
        )
    if model.global_pool == "avg" and not isinstance(model.norm, nn.Identity):
        raise VitCompressError(
            "token masks with average pooling need the final norm after pooling (fc_norm), so dropped tokens "
            "can be left out of the mean exactly; this model normalises before pooling: use SlimConfig(tokens=False)"
        )


def pool_from(model: nn.Module) -> int | None:
    """First token index the average pool reads (None for class-token pooling)."""
    if model.global_pool != "avg":
        return None
    return 0 if model.pool_include_prefix else model.num_prefix_tokens


def attach_vit_masks(model: nn.Module, config: SlimConfig) -> nn.Module:
    """Replace, in place, the blocks of a (plain or multiplexed) ViT by masked ones."""
    per_head = is_per_head(model)
    shared = getattr(model, "blocks_shared", None)
    blk0 = model.blocks[0]
    if shared is not None:
        heads, head_dim = blk0.attn.num_heads, blk0.attn.head_dim
        for g, weights in enumerate(shared):
            mask_shape = (heads, 1 if per_head else head_dim) if config.attn else None
            shared[g] = MaskedSharedWeights(weights, mask_shape, hidden_units(weights) if config.mlp else None)
    num_patches = model.patch_embed.num_patches if config.tokens else None
    layers = []
    for blk in model.blocks:
        layer = MaskedBlock(blk, config.attn, config.mlp, per_head, num_patches, config.token_init)
        if shared is not None:
            layer.bind(shared[blk.group])
            layer.group = blk.group
        layers.append(layer)
    model.blocks = MaskedBlocks(layers, model.num_prefix_tokens, config.tokens,
                                pool_from(model) if config.tokens else None)
    return model


def vit_mask_tensors(model: nn.Module) -> dict[str, list[Tensor]]:
    shared = getattr(model, "blocks_shared", None)
    owners_attn = [w.dim_mask for w in shared] if shared is not None else [b.attn.dim_mask for b in model.blocks]
    owners_mlp = [w.hidden_mask for w in shared] if shared is not None else [b.mlp.hidden_mask for b in model.blocks]
    out: dict[str, list[Tensor]] = {}
    if owners_attn[0] is not None:
        out["attn"] = owners_attn
    if owners_mlp[0] is not None:
        out["mlp"] = owners_mlp
    if model.blocks[0].token_mask is not None:
        out["tokens"] = [b.token_mask for b in model.blocks]
    return out
