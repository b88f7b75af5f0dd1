"""Masked Swin for the ViT-Slim search: soft masks on window-attention dims and MLP hidden units.

Child replacement only: every block's `attn` becomes a `MaskedWindowAttention` and its `mlp` a `MaskedSwinMlp`,
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

import torch
from timm.layers import Mlp
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage, WindowAttention
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim, transformer_layers
from vitcompress.models.spec import unwrap
from vitcompress.multiplexing.swin import MultiplexedSwinBlock, MultiplexedWindowAttention
from vitcompress.multiplexing.vit import MultiplexedMlp
from vitcompress.slim.config import SlimConfig
from vitcompress.slim.masked import MaskedMlp, MaskedSharedWeights
from vitcompress.slim.swin_cost import shared_groups

HOOKS = ("q_norm", "k_norm", "v_tap")  # identity hook points of the multiplexed attention (distillation reads them)


def rel_pos_bias(table: Tensor, index: Tensor, window_area: int) -> Tensor:
    """(columns, N, N) relative-position bias of a window from a (rows, columns) table."""
    return table[index.view(-1)].view(window_area, window_area, -1).permute(2, 0, 1)


def mask_windows(attn: Tensor, mask: Tensor) -> Tensor:
    """Apply a window mask to logits (B·nW, H, N, N): timm's additive (nW, N, N) float mask (0 / -100), or the
    multiplexed block's boolean one (True = may attend), which gives masked keys exactly -inf."""
    nw, heads, n = mask.shape[0], attn.shape[1], attn.shape[-1]
    attn = attn.reshape(-1, nw, heads, n, n)
    attn = attn.masked_fill(~mask.unsqueeze(1), float("-inf")) if mask.dtype == torch.bool else attn + mask.unsqueeze(1)
    return attn.reshape(-1, heads, n, n)


class MaskedSwinSharedWeights(MaskedSharedWeights):
    """A multiplexed Swin group's shared linears and bias table, plus the masks its layers share."""

    def __init__(self, shared: nn.Module, dim_mask_shape: tuple[int, int] | None, hidden: int | None) -> None:
        super().__init__(shared, dim_mask_shape, hidden)
        self.relative_position_bias_table = shared.relative_position_bias_table


class MaskedWindowAttention(nn.Module):
    """timm's WindowAttention (or the multiplexed one) with a (heads, head_dim) mask on q, k and v.

    Owns qkv/proj/bias table/dim_mask on a plain Swin; on a multiplexed one the block passes its group's linears
    and table, and the mask lives in the bound shared group.
    """

    def __init__(self, attn: nn.Module, mask: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, head_dim(attn), attn.scale
        self.window_size, self.window_area = tuple(attn.window_size), attn.window_area
        owns = hasattr(attn, "qkv")
        if owns:
            self.relative_position_bias_table = attn.relative_position_bias_table
            self.qkv = attn.qkv
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        for name in HOOKS:
            if hasattr(attn, name):
                setattr(self, name, getattr(attn, name))
        self.transform = getattr(attn, "transform", None)
        self.attn_drop = attn.attn_drop
        if owns:
            self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        device = attn.qkv.weight.device if owns else None
        shape = (self.num_heads, self.head_dim)
        self.dim_mask = nn.Parameter(torch.ones(shape, device=device)) if owns and mask else None
        self.masked = mask
        self._shared: MaskedSwinSharedWeights | None = None

    def bind(self, shared: MaskedSwinSharedWeights) -> None:
        object.__setattr__(self, "_shared", shared)  # registered once, under the stage's blocks_shared

    def forward(self, x: Tensor, qkv: nn.Linear | None = None, proj: nn.Linear | None = None,
                table: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x: (B·nW, N, C) windows; qkv/proj/table: a multiplexed group's (None: this module's own)."""
        w = self._shared if self._shared is not None else self
        qkv = w.qkv if qkv is None else qkv
        proj = w.proj if proj is None else proj
        table = w.relative_position_bias_table if table is None else table
        B_, N, _ = x.shape
        q, k, v = qkv(x).reshape(B_, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.masked:
            m = w.dim_mask.unsqueeze(1)  # (H, 1, d)
            q, k, v = q * m, k * m, v * m
        if hasattr(self, "v_tap"):
            v = self.v_tap(v)
        attn = (q * self.scale) @ k.transpose(-2, -1) + rel_pos_bias(table, self.relative_position_index, N)
        if self.transform is not None:
            attn = self.transform.pre(attn)
        if mask is not None:  # after the mixing: no head can pull mass back onto a masked key
            attn = mask_windows(attn, mask)
        attn = attn.softmax(dim=-1)
        if self.transform is not None:
            attn = self.transform.post(attn)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(B_, N, self.num_heads * self.head_dim)
        return self.proj_drop(proj(x))

    def set_window_size(self, *args, **kwargs) -> None:
        raise VitCompressError("a masked Swin cannot change its window size; resize the model, then attach masks")

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, window_size={self.window_size}"


class MaskedSwinMlp(MaskedMlp):
    """timm Mlp (or the multiplexed one) with one mask value per hidden unit after the activation."""

    def forward(self, x: Tensor, fc1: nn.Linear | None = None, fc2: nn.Linear | None = None) -> Tensor:
        # A multiplexed block passes its group's fc1/fc2: the very linears bound here with the group's mask.
        return super().forward(x)


def check_swin_supported(model: nn.Module, config: SlimConfig) -> None:
    """Refuse what the masked Swin does not model exactly (token masks, other block or MLP types)."""
    if config.tokens:
        raise VitCompressError(
            "token masks are not supported on Swin: the paper searched Swin without token masks; use attn/mlp "
            "masks, SlimConfig(tokens=False)"
        )
    for s, stage in enumerate(model.layers):
        if type(stage) is not SwinTransformerStage:
            raise VitCompressError(f"stage {s} is {type(stage).__name__}, not timm's SwinTransformerStage")
        for b, blk in enumerate(stage.blocks):
            kinds = (type(blk), type(blk.attn), type(blk.mlp))
            if kinds not in ((SwinTransformerBlock, WindowAttention, Mlp),
                             (MultiplexedSwinBlock, MultiplexedWindowAttention, MultiplexedMlp)):
                raise VitCompressError(
                    f"stage {s} block {b} is {'/'.join(k.__name__ for k in kinds)}; ViT-Slim masks support timm's "
                    "SwinTransformerBlock/WindowAttention/Mlp and vitcompress's multiplexed Swin blocks"
                )
            if config.mlp and not isinstance(blk.mlp.norm, nn.Identity):
                raise VitCompressError(
                    f"stage {s} block {b} normalises the MLP hidden layer; MLP masks are not supported here: "
                    "use SlimConfig(mlp=False)"
                )


def attach_swin(model: nn.Module, config: SlimConfig) -> nn.Module:
    """Replace, in place, every block's attention and MLP of a (plain or multiplexed) Swin by masked ones."""
    for stage in model.layers:
        shared = getattr(stage, "blocks_shared", None)
        if shared is None:
            continue
        for g, w in enumerate(shared):
            heads = w.relative_position_bias_table.shape[1]
            shape = (heads, w.qkv.out_features // (3 * heads)) if config.attn else None
            shared[g] = MaskedSwinSharedWeights(w, shape, w.fc1.out_features if config.mlp else None)
            for blk in stage.blocks:
                if blk._shared is w:
                    blk.bind(shared[g])
    for blk in transformer_layers(model):
        blk.attn = MaskedWindowAttention(blk.attn, config.attn)
        blk.mlp = MaskedSwinMlp(blk.mlp, config.mlp)
        if isinstance(blk, MultiplexedSwinBlock):
            blk.attn.bind(blk._shared)
            blk.mlp.bind(blk._shared)
    return model


def is_masked_swin(model: nn.Module) -> bool:
    return any(isinstance(blk.attn, MaskedWindowAttention) for blk in transformer_layers(unwrap(model)))


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
