"""Physically smaller ViT/DeiT: attention with ragged heads (`models.attention.AttentionCore` with `kept`), sliced
MLPs, and blocks that run fewer tokens.

Head mixing (multiplexed attention transformation): every head keeps its slot, a head with no dims left
contributing zero logits, as in the masked model (see `AttentionCore`).
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import AttentionCore, head_order, slice_attention
from vitcompress.models.mlp import MlpCore, mlp_kind, slice_mlp
from vitcompress.models.sliced_norm import SlicedNorm, slice_norm
from vitcompress.slim.cost import Structure, structure_of
from vitcompress.slim.selection import Selection


class GatheredBlock(nn.Module):
    """A block that first keeps only the tokens `gather` indexes (prefix tokens first, always kept).

    It holds the block's own children under the same names (state-dict keys unchanged) and runs the block's
    forward on the gathered tokens, so `model.blocks` stays a plain Sequential (timm's checkpointing and
    intermediate-feature helpers still see one module per layer). timm's `forward_intermediates` works with
    `output_fmt='NLC'` (each layer's kept tokens); a patch grid ('NCHW') is refused in one line, since the
    layer runs fewer tokens than the grid has.
    """

    _CALLER_FRAMES = 12
    """How far up to look for timm's `forward_intermediates`: nn.Module's call wrappers, hooks and activation
    checkpointing sit between it and this forward."""

    def __init__(self, block: nn.Module, gather: list[int]) -> None:
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_block", block)  # its children are ours; it is not registered twice
        self.register_buffer("gather", torch.as_tensor(gather, dtype=torch.long), persistent=False)

    @property
    def block(self) -> nn.Module:
        return self._block

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # plain attributes of the block (e.g. a multiplexed layer's group and weights)
            block = self.__dict__.get("_block")
            if block is None:
                raise
            return getattr(block, name)

    def train(self, mode: bool = True) -> GatheredBlock:
        super().train(mode)
        self._block.training = mode  # its children already follow; keep its own flag in step
        return self

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        if not torch.compiler.is_compiling():  # frames are not traceable; the check guards eager calls
            self._refuse_a_patch_grid()
        return self._block(x.index_select(1, self.gather), *args, **kwargs)

    def _refuse_a_patch_grid(self) -> None:
        """Refuse timm's `forward_intermediates(output_fmt='NCHW')`, which would reshape this layer's shorter
        token list into a patch grid of the wrong width (silently, when the sizes happen to divide).

        timm's method runs the blocks in its own loop; looking for it up the stack leaves the model's class and
        forward alone (tests/slim/test_backbone_api.py fails if timm renames the method or its argument)."""
        frame = sys._getframe(2)
        for _ in range(self._CALLER_FRAMES):
            if frame is None:
                return
            if frame.f_code.co_name == "forward_intermediates":
                if frame.f_locals.get("output_fmt") == "NCHW":
                    raise VitCompressError(
                        f"forward_intermediates(output_fmt='NCHW') cannot lay this model's tokens on the patch "
                        f"grid: its selection dropped tokens (this layer runs {self.gather.numel()}, prefix "
                        "included); pass output_fmt='NLC' for each layer's kept tokens, or extract a selection "
                        "without token pruning for a dense backbone"
                    )
                return
            frame = frame.f_back

    def extra_repr(self) -> str:
        return f"tokens_in={self.gather.numel()}"


def _weights(module: nn.Module) -> nn.Module:
    """The module holding an attention's or MLP's linears: a multiplexed core's bound group, else itself."""
    return module.weights() if isinstance(module, AttentionCore | MlpCore) else module


def slice_inner_norms(blocks: list[nn.Module], selection: Selection, head_dim: int) -> None:
    """Give each block's norms inside the attention / MLP (timm's scale_attn_norm, scale_mlp) only the kept entries,
    with the removed ones' exact effect on proj / fc2 (`models.sliced_norm`). Needs the unsliced proj and fc2."""
    for i, blk in enumerate(blocks):
        if selection.attn is not None and not isinstance(blk.attn.norm, nn.Identity):
            kept = selection.attn[i]
            rows = [h * head_dim + e for h in head_order(kept) for e in kept[h]]  # proj's input layout
            blk.attn.norm = slice_norm(blk.attn.norm, rows, _weights(blk.attn).proj)
        if selection.mlp is not None and not isinstance(blk.mlp.norm, nn.Identity):
            norm = slice_norm(blk.mlp.norm, selection.mlp[i], _weights(blk.mlp).fc2)
            if isinstance(norm, SlicedNorm) and not isinstance(blk.mlp, MlpCore):
                blk.mlp = MlpCore.of(blk.mlp)  # timm's MLPs call the norm and fc2 apart; the core joins them
            blk.mlp.norm = norm


def apply_vit_selection(model: nn.Module, selection: Selection, structure: Structure | None = None) -> None:
    """Slice an unmasked (plain or multiplexed) ViT-like model in place to the widths and tokens `selection`
    keeps (`structure`: the model's cost structure, read off it when not given)."""
    s = structure_of(model) if structure is None else structure
    selection.check(s)
    shared = getattr(model, "blocks_shared", None)
    first = [s.layers_of(o)[0] for o in range(s.num_owners)]
    blocks = list(model.blocks)
    # One head width on an isotropic model; reads the full proj/fc2, so before they are sliced.
    slice_inner_norms(blocks, selection, s.head_dim_of(0))
    if shared is not None:
        for o, w in enumerate(shared):
            if selection.attn is not None:
                kept = selection.attn[first[o]]
                slice_attention(w, kept, s.head_dim_of(o), mixing=False)
            if selection.mlp is not None:
                kept = selection.mlp[first[o]]
                slice_mlp(w, mlp_kind(blocks[0].mlp), kept)
    for i, blk in enumerate(blocks):
        if selection.attn is not None:
            blk.attn = AttentionCore.of(blk.attn, kept=selection.attn[i])
            if shared is not None:
                blk.attn.bind(shared[blk.group])
        if selection.mlp is not None and shared is None:
            slice_mlp(blk.mlp, mlp_kind(blk.mlp), selection.mlp[i])
    if selection.tokens is not None:
        prefix = list(range(s.num_prefix))
        position = {j: j for j in range(s.num_patches)}  # patch -> index among the tokens entering the layer
        for i, kept in enumerate(selection.tokens):
            if len(kept) < len(position):
                blocks[i] = GatheredBlock(blocks[i], prefix + [s.num_prefix + position[j] for j in kept])
                position = {j: n for n, j in enumerate(kept)}
        model.blocks = nn.Sequential(*blocks)
