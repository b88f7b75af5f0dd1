"""Physically smaller Swin: window attention with ragged heads, sliced MLPs, and the slicing itself.

As on ViT (`slim.pruned`), heads of equal width form a group and each group runs one fused attention with the
*original* head's scale; qkv rows and proj columns are laid out group by group (`pruned.QKV_LAYOUT`). Each
head's relative-position bias column goes with it: a removed head loses its column, and the table's columns
follow the qkv layout.

Head mixing (multiplexed attention transformation). A head with no dims left still feeds the mixing: its
logits are its relative-position bias (q and k are zero in the reference), so with a transformation every head
keeps its slot and its bias column; only its q/k/v dims go. Without one, such a head is removed.

Embedding widths are never pruned, so patch embedding, patch merging, norms and the head are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, get_relative_position_index
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim, transformer_layers
from vitcompress.models.swin import padded_size, shifted_window_mask
from vitcompress.multiplexing.swin import MultiplexedSwinBlock
from vitcompress.slim.pruned import (
    GroupedQKV,
    head_order,
    merge_heads,
    slice_linear,
    slice_proj,
    slice_qkv,
    width_groups,
)
from vitcompress.slim.selection import Selection
from vitcompress.slim.swin_cost import shared_groups, swin_structure_of
from vitcompress.slim.swin_masked import HOOKS, mask_windows, rel_pos_bias


def slice_table(table: nn.Parameter, kept: list[list[int]], mixing: bool) -> nn.Parameter:
    """The bias table's columns of the kept heads in qkv layout order (all columns, in place, with head mixing)."""
    if mixing:
        return table
    order = torch.as_tensor(head_order(kept), dtype=torch.long, device=table.device)
    return nn.Parameter(table.detach()[:, order], requires_grad=table.requires_grad)


class PrunedWindowAttention(nn.Module):
    """timm WindowAttention (or the multiplexed one) whose heads keep `head_dims[h]` dims each.

    Owns qkv/proj/bias table on a plain Swin; a multiplexed layer passes its group's (sliced) ones to forward.
    """

    def __init__(self, attn: nn.Module, kept: list[list[int]]) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, head_dim(attn), attn.scale
        self.window_size, self.window_area = tuple(attn.window_size), attn.window_area
        self.head_dims = [len(dims) for dims in kept]
        self.attn_dim = sum(self.head_dims)
        self.transform = getattr(attn, "transform", None)
        owns = hasattr(attn, "qkv")
        if owns:
            self.relative_position_bias_table = slice_table(attn.relative_position_bias_table, kept,
                                                            self.transform is not None)
            self.qkv = slice_qkv(attn.qkv, kept, self.head_dim)
        # Recomputed on the weights' device once the model is assembled (`refresh_window_buffers`).
        self.register_buffer("relative_position_index", attn.relative_position_index, persistent=False)
        for name in HOOKS:
            if hasattr(attn, name):
                setattr(self, name, getattr(attn, name))
        self.attn_drop = attn.attn_drop
        if owns:
            self.proj = slice_proj(attn.proj, kept, self.head_dim)
        self.proj_drop = attn.proj_drop
        self.groups = width_groups(kept)  # (width, heads), in qkv/proj/table layout order
        self.split_qkv = GroupedQKV(self.groups)
        self.register_buffer("mixed_heads", torch.as_tensor(head_order(kept), dtype=torch.long), persistent=False)

    def forward(self, x: Tensor, qkv: nn.Linear | None = None, proj: nn.Linear | None = None,
                table: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x: (B·nW, N, C) windows; mask: timm's additive or the multiplexed boolean window mask, or None."""
        qkv = self.qkv if qkv is None else qkv
        proj = self.proj if proj is None else proj
        table = self.relative_position_bias_table if table is None else table
        B_, N, _ = x.shape
        if not self.attn_dim:  # every head removed: zero output, as the masked model's all-zero v gives
            return self.proj_drop(proj(x.new_zeros(B_, N, 0)))
        groups = self.split_qkv(qkv(x))
        if hasattr(self, "q_norm"):
            groups = [(self.q_norm(q), self.k_norm(k), v) for q, k, v in groups]
        if hasattr(self, "v_tap"):
            groups = [(q, k, self.v_tap(v)) for q, k, v in groups]
        bias = rel_pos_bias(table, self.relative_position_index, N)
        if self.transform is None:
            outs = self._grouped(groups, bias, mask, B_)
        else:
            outs = self._mixed(groups, bias, mask, B_, N)
        return self.proj_drop(proj(merge_heads(outs)))

    def _grouped(self, groups: list[tuple[Tensor, Tensor, Tensor]], bias: Tensor, mask: Tensor | None,
                 B_: int) -> list[Tensor]:
        drop = self.attn_drop.p if self.training else 0.0
        outs, start = [], 0
        for qg, kg, vg in groups:
            heads = qg.shape[1]
            attn_mask = bias[start:start + heads].unsqueeze(0)  # this group's bias columns
            start += heads
            if mask is not None:  # per window: (nW, h, N, N), repeated over the batch as timm's fused path does
                nw = mask.shape[0]
                attn_mask = mask_windows(attn_mask.expand(nw, -1, -1, -1), mask)
                attn_mask = attn_mask.unsqueeze(0).expand(B_ // nw, -1, -1, -1, -1).flatten(0, 1)
            outs.append(F.scaled_dot_product_attention(qg, kg, vg, attn_mask=attn_mask, dropout_p=drop,
                                                       scale=self.scale))
        return outs

    def _mixed(self, groups: list[tuple[Tensor, Tensor, Tensor]], bias: Tensor, mask: Tensor | None, B_: int,
               N: int) -> list[Tensor]:
        # Every head keeps a logit map (its bias alone for heads without dims), so the H×H mixes stay as trained.
        logits = torch.cat([(q * self.scale) @ k.transpose(-2, -1) for q, k, _ in groups], 1)
        attn = logits.new_zeros(B_, self.num_heads, N, N).index_copy(1, self.mixed_heads, logits) + bias
        attn = self.transform.pre(attn)
        if mask is not None:
            attn = mask_windows(attn, mask)
        attn = self.transform.post(attn.softmax(dim=-1))
        attn = self.attn_drop(attn).index_select(1, self.mixed_heads)
        outs, start = [], 0
        for _, _, v in groups:
            outs.append(attn[:, start:start + v.shape[1]] @ v)
            start += v.shape[1]
        return outs

    def set_window_size(self, *args, **kwargs) -> None:
        raise VitCompressError("a slimmed Swin cannot change its window size (its bias tables are sliced)")

    def extra_repr(self) -> str:
        return f"head_dims={self.head_dims}, scale={self.scale:.4g}, window_size={self.window_size}"


def apply_swin_selection(model: nn.Module, selection: Selection) -> None:
    """Slice an unmasked (plain or multiplexed) Swin in place to the widths `selection` keeps."""
    s = swin_structure_of(model)
    selection.check(s)
    shared = shared_groups(model)
    blocks = transformer_layers(model)
    if shared is not None:
        for o, w in enumerate(shared):
            first = s.layers_of(o)[0]
            if selection.attn is not None:
                kept, hd = selection.attn[first], s.head_dims[o]
                w.qkv, w.proj = slice_qkv(w.qkv, kept, hd), slice_proj(w.proj, kept, hd)
                w.relative_position_bias_table = slice_table(w.relative_position_bias_table, kept, s.owner_mix(o))
            if selection.mlp is not None:
                kept = selection.mlp[first]
                w.fc1, w.fc2 = slice_linear(w.fc1, out_index=kept), slice_linear(w.fc2, in_index=kept)
    for i, blk in enumerate(blocks):
        if selection.attn is not None:
            blk.attn = PrunedWindowAttention(blk.attn, selection.attn[i])
        if selection.mlp is not None and shared is None:
            kept = selection.mlp[i]
            blk.mlp.fc1 = slice_linear(blk.mlp.fc1, out_index=kept)
            blk.mlp.fc2 = slice_linear(blk.mlp.fc2, in_index=kept)
    refresh_window_buffers(model)


def refresh_window_buffers(model: nn.Module) -> None:
    """Recompute the non-persistent window buffers (relative-position index, shift masks) on each block's
    weight device: `extract` builds the base on the meta device, where they were made as shapes only."""
    for blk in transformer_layers(model):
        device, dtype = blk.norm1.weight.device, blk.norm1.weight.dtype
        attn = blk.attn
        index = get_relative_position_index(*attn.window_size, device=device)
        attn.register_buffer("relative_position_index", index, persistent=False)
        if blk.attn_mask is None:
            continue
        if isinstance(blk, SwinTransformerBlock):
            mask = blk.get_attn_mask(device=device, dtype=dtype)
        elif isinstance(blk, MultiplexedSwinBlock):
            size = padded_size(blk.input_resolution, blk.window_size)
            mask = shifted_window_mask(*size, blk.window_size, blk.shift_size, device=device)
        else:  # pragma: no cover - check_swin_supported admits only these two
            raise VitCompressError(f"unknown Swin block {type(blk).__name__}")
        blk.register_buffer("attn_mask", mask, persistent=False)
