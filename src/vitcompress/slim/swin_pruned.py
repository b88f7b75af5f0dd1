"""Physically smaller Swin: window attention with ragged heads, sliced MLPs, and the slicing itself.

As on ViT (`slim.pruned`), heads of equal width form a group and each group runs one fused attention with the
*original* head's scale; qkv rows and proj columns are laid out group by group (`models.attention.QKV_LAYOUT`). Each
head's relative-position bias column goes with it: a removed head loses its column, and the table's columns
follow the qkv layout.

Head mixing (multiplexed attention transformation). A head with no dims left still feeds the mixing: its
logits are its relative-position bias (q and k are zero in the reference), so with a transformation every head
keeps its slot and its bias column; only its q/k/v dims go. Without one, such a head is removed.

Embedding widths are never pruned, so patch embedding, patch merging, norms and the head are untouched.
"""

from __future__ import annotations

from torch import nn

from vitcompress.models.attention import AttentionCore, slice_attention
from vitcompress.models.layers import transformer_layers
from vitcompress.models.mlp import mlp_kind, slice_mlp
from vitcompress.models.swin import shared_groups
from vitcompress.slim.cost import structure_of
from vitcompress.slim.selection import Selection


def apply_swin_selection(model: nn.Module, selection: Selection) -> None:
    """Slice an unmasked (plain or multiplexed) Swin in place to the widths `selection` keeps."""
    s = structure_of(model)
    selection.check(s)
    shared = shared_groups(model)
    blocks = transformer_layers(model)
    if shared is not None:
        for o, w in enumerate(shared):
            first = s.layers_of(o)[0]
            if selection.attn is not None:
                kept, hd = selection.attn[first], s.head_dim_of(o)
                slice_attention(w, kept, hd, mixing=s.owner_mix(o))
            if selection.mlp is not None:
                kept = selection.mlp[first]
                slice_mlp(w, mlp_kind(blocks[0].mlp), kept)
    for i, blk in enumerate(blocks):
        if selection.attn is not None:
            blk.attn = AttentionCore.of(blk.attn, kept=selection.attn[i])
            if shared is not None:
                blk.attn.bind(blk._shared)
        if selection.mlp is not None and shared is None:
            slice_mlp(blk.mlp, mlp_kind(blk.mlp), selection.mlp[i])
