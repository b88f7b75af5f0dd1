"""Physically smaller ViT/DeiT pieces: attention with ragged heads, and blocks that run fewer tokens.

Ragged heads. After slimming, heads keep different numbers of dims. Heads of equal width form a group and each
group runs one attention (fused SDPA, with the *original* head's scale), so the result is exact and the MACs
count only real dims. qkv rows and proj columns are laid out group by group, head by head.

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


def _rows(kept: list[list[int]], head_dim: int, order: list[int]) -> list[int]:
    """Flat indices (into heads·head_dim) of the kept dims, head by head in `order`."""
    return [h * head_dim + e for h in order for e in kept[h]]


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


def slice_qkv(qkv: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    order = head_order(kept)
    rows = _rows(kept, head_dim, order)
    width = len(kept) * head_dim
    return slice_linear(qkv, out_index=[part * width + r for part in range(3) for r in rows])


def slice_proj(proj: nn.Linear, kept: list[list[int]], head_dim: int) -> nn.Linear:
    return slice_linear(proj, in_index=_rows(kept, head_dim, head_order(kept)))


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
        order = head_order(kept)
        self.groups: list[tuple[int, list[int]]] = []  # (width, heads), in qkv/proj layout order
        for h in order:
            if self.groups and self.groups[-1][0] == self.head_dims[h]:
                self.groups[-1][1].append(h)
            else:
                self.groups.append((self.head_dims[h], [h]))
        self.register_buffer("mixed_heads", torch.as_tensor(order, dtype=torch.long), persistent=False)

    def _split(self, t: Tensor) -> list[Tensor]:
        """(B, N, A) -> per group (B, heads, N, width)."""
        out, start = [], 0
        for width, heads in self.groups:
            n = width * len(heads)
            out.append(t[..., start:start + n].unflatten(-1, (len(heads), width)).transpose(1, 2))
            start += n
        return out

    def forward(self, x: Tensor, qkv: nn.Linear | None = None, proj: nn.Linear | None = None,
                attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise VitCompressError("slimmed attention takes no attn_mask / is_causal")
        qkv = qkv if qkv is not None else self.qkv
        proj = proj if proj is not None else self.proj
        B, N, _ = x.shape
        if not self.attn_dim:  # every head removed: zero output, as the masked model's all-zero v gives
            return self.proj_drop(proj(self.norm(x.new_zeros(B, N, 0))))
        q, k, v = qkv(x).split(self.attn_dim, dim=-1)
        qs, ks, vs = self._split(q), self._split(k), self._split(v)
        qs, ks = [self.q_norm(t) for t in qs], [self.k_norm(t) for t in ks]
        if hasattr(self, "v_tap"):
            vs = [self.v_tap(t) for t in vs]
        if self.transform is None:
            drop = self.attn_drop.p if self.training else 0.0
            outs = [F.scaled_dot_product_attention(qg, kg, vg, dropout_p=drop, scale=self.scale)
                    for qg, kg, vg in zip(qs, ks, vs, strict=True)]
        else:
            outs = self._mixed(qs, ks, vs, B, N)
        out = torch.cat([o.transpose(1, 2).flatten(2) for o in outs], dim=-1) if outs else x.new_zeros(B, N, 0)
        return self.proj_drop(proj(self.norm(out)))

    def _mixed(self, qs: list[Tensor], ks: list[Tensor], vs: list[Tensor], B: int, N: int) -> list[Tensor]:
        # Every head keeps a logit map (zero for heads without dims), so the H×H mixes stay as trained.
        logits = torch.cat([(qg * self.scale) @ kg.transpose(-2, -1) for qg, kg in zip(qs, ks, strict=True)], 1)
        attn = logits.new_zeros(B, self.num_heads, N, N).index_copy(1, self.mixed_heads, logits)
        attn = self.transform.post(self.transform.pre(attn).softmax(dim=-1))
        attn = self.attn_drop(attn).index_select(1, self.mixed_heads)
        outs, start = [], 0
        for vg in vs:
            outs.append(attn[:, start:start + vg.shape[1]] @ vg)
            start += vg.shape[1]
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
