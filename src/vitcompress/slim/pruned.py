"""Physically smaller ViT/DeiT pieces: attention with ragged heads, and blocks that run fewer tokens.

Ragged heads. After slimming, heads keep different numbers of dims. Heads of equal width form a group and each
group runs one attention (fused SDPA, with the *original* head's scale), so the result is exact and the MACs
count only real dims. qkv rows are laid out group by group, and within a group as timm lays out a whole layer
(q of its heads, then k, then v), so one reshape per group gives its q, k and v: a layer whose heads all kept
the same width runs exactly timm's sequence of ops. proj columns follow the group order, head by head.

Head mixing (multiplexed attention transformation). It mixes attention maps across heads, so a head with no
dims left still contributes a map: its logits are exactly zero in the reference (q and k zeroed), which pre-
mixing adds nothing from, but its mixed map still feeds other heads after softmax. So with a transformation
every head keeps its slot (the H×H mixes are unchanged); a head with no dims left contributes zero logits, as in
the masked model. Without a transformation such a head is removed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitcompress.errors import VitCompressError

QKV_LAYOUT = "grouped"
"""Recorded in the slim spec step: qkv rows per width group as [q | k | v] of the group's heads. Models extracted
before this layout (rows as [q of all heads | k | v]) would load with permuted rows, so they are refused."""


def slice_linear(linear: nn.Linear, out_index: list[int] | None = None, in_index: list[int] | None = None
                 ) -> nn.Linear:
    """A new Linear with only the given output rows / input columns (weights copied)."""
    if out_index is None and in_index is None:
        raise ValueError("slice_linear needs out_index or in_index")
    weight = linear.weight
    if out_index is not None:
        weight = weight[torch.as_tensor(out_index, dtype=torch.long, device=weight.device)]
    if in_index is not None:
        weight = weight[:, torch.as_tensor(in_index, dtype=torch.long, device=weight.device)]
    grad = linear.weight.requires_grad
    # A 1x1 placeholder on meta, then assigned: no init work (and no warning for a zero-width layer).
    new = nn.Linear(1, 1, bias=linear.bias is not None, device="meta")
    new.out_features, new.in_features = weight.shape
    new.weight = nn.Parameter(weight.detach(), requires_grad=grad)  # indexing made a fresh tensor
    if linear.bias is not None:
        bias = linear.bias
        if out_index is not None:
            bias = bias[torch.as_tensor(out_index, dtype=torch.long, device=bias.device)]
        new.bias = nn.Parameter(bias.detach().clone() if out_index is None else bias.detach(), requires_grad=grad)
    return new


def head_order(kept: list[list[int]]) -> list[int]:
    """Kept heads grouped by width (ascending), by index within a width: the qkv/proj layout."""
    return sorted((h for h, dims in enumerate(kept) if dims), key=lambda h: (len(kept[h]), h))


def width_groups(kept: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(width, heads) of each run of equal-width heads in `head_order`: one attention call per group."""
    groups: list[tuple[int, list[int]]] = []
    for h in head_order(kept):
        if groups and groups[-1][0] == len(kept[h]):
            groups[-1][1].append(h)
        else:
            groups.append((len(kept[h]), [h]))
    return groups


def slice_qkv(qkv: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    """qkv rows of the kept dims, group by group, each group as [q | k | v] of its heads (see QKV_LAYOUT)."""
    width = len(kept) * head_dim
    rows = [part * width + h * head_dim + e for _, heads in width_groups(kept) for part in range(3)
            for h in heads for e in kept[h]]
    return slice_linear(qkv, out_index=rows)


def slice_proj(proj: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    return slice_linear(proj, in_index=[h * head_dim + e for h in head_order(kept) for e in kept[h]])


class GroupedQKV:
    """Splits a grouped-layout qkv output into each width group's q, k, v of shape (B, heads, N, width)."""

    def __init__(self, groups: list[tuple[int, list[int]]]) -> None:
        self.sizes = [3 * width * len(heads) for width, heads in groups]
        self.shapes = [(3, len(heads), width) for width, heads in groups]

    def __call__(self, qkv: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        chunks = qkv.split(self.sizes, dim=-1) if len(self.sizes) > 1 else (qkv,)
        return [c.unflatten(-1, shape).permute(2, 0, 3, 1, 4).unbind(0)
                for c, shape in zip(chunks, self.shapes, strict=True)]


def merge_heads(outs: list[Tensor]) -> Tensor:
    """Per group (B, heads, N, width) -> (B, N, attention dims) in proj-column order."""
    flat = [o.transpose(1, 2).flatten(2) for o in outs]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=-1)


class PrunedAttention(nn.Module):
    """timm Attention (or vitcompress's multiplexed attention) whose heads keep `head_dims[h]` dims each.

    Owns qkv/proj on a plain model; a multiplexed layer passes its group's (sliced) shared linears to forward.
    """

    def __init__(self, attn: nn.Module, kept: list[list[int]]) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.head_dims = [len(dims) for dims in kept]
        self.attn_dim = sum(self.head_dims)
        owns = hasattr(attn, "qkv")
        if owns:
            self.qkv = slice_qkv(attn.qkv, kept, self.head_dim)
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        if hasattr(attn, "v_tap"):
            self.v_tap = attn.v_tap
        self.transform = getattr(attn, "transform", None)
        self.attn_drop, self.norm = attn.attn_drop, attn.norm
        if owns:
            self.proj = slice_proj(attn.proj, kept, self.head_dim)
        self.proj_drop = attn.proj_drop
        self.groups = width_groups(kept)  # (width, heads), in qkv/proj layout order
        self.split_qkv = GroupedQKV(self.groups)
        # Identity norms are skipped in forward: at small widths every op call is a measurable share of the time.
        self.qk_norm = not (isinstance(self.q_norm, nn.Identity) and isinstance(self.k_norm, nn.Identity))
        self.register_buffer("mixed_heads", torch.as_tensor(head_order(kept), dtype=torch.long), persistent=False)

    def forward(self, x: Tensor, qkv: nn.Linear | None = None, proj: nn.Linear | None = None,
                attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise VitCompressError("slimmed attention takes no attn_mask / is_causal")
        qkv = qkv if qkv is not None else self.qkv
        proj = proj if proj is not None else self.proj
        B, N, _ = x.shape
        if not self.attn_dim:  # every head removed: zero output, as the masked model's all-zero v gives
            return self.proj_drop(proj(self.norm(x.new_zeros(B, N, 0))))
        groups = self.split_qkv(qkv(x))
        if self.qk_norm:
            groups = [(self.q_norm(q), self.k_norm(k), v) for q, k, v in groups]
        if hasattr(self, "v_tap"):
            groups = [(q, k, self.v_tap(v)) for q, k, v in groups]
        if self.transform is None:
            drop = self.attn_drop.p if self.training else 0.0
            outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale) for q, k, v in groups]
        else:
            outs = self._mixed(groups, B, N)
        return self.proj_drop(proj(self.norm(merge_heads(outs))))

    def _mixed(self, groups: list[tuple[Tensor, Tensor, Tensor]], B: int, N: int) -> list[Tensor]:
        # Every head keeps a logit map (zero for heads without dims), so the H×H mixes stay as trained.
        logits = torch.cat([(q * self.scale) @ k.transpose(-2, -1) for q, k, _ in groups], 1)
        attn = logits.new_zeros(B, self.num_heads, N, N).index_copy(1, self.mixed_heads, logits)
        attn = self.transform.post(self.transform.pre(attn).softmax(dim=-1))
        attn = self.attn_drop(attn).index_select(1, self.mixed_heads)
        outs, start = [], 0
        for _, _, v in groups:
            outs.append(attn[:, start:start + v.shape[1]] @ v)
            start += v.shape[1]
        return outs

    def extra_repr(self) -> str:
        return f"head_dims={self.head_dims}, scale={self.scale:.4g}"


class GatheredBlock(nn.Module):
    """A block that first keeps only the tokens `gather` indexes (prefix tokens first, always kept).

    It holds the block's own children under the same names (state-dict keys unchanged) and runs the block's
    forward on the gathered tokens, so `model.blocks` stays a plain Sequential (timm's checkpointing and
    intermediate-feature helpers still see one module per layer).
    """

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
        return self._block(x.index_select(1, self.gather), *args, **kwargs)

    def extra_repr(self) -> str:
        return f"tokens_in={self.gather.numel()}"
