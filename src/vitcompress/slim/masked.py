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


class MaskedSharedWeights(nn.Module):
    """A multiplexed group's shared linears plus the masks all layers of the group share."""

    def __init__(self, shared: nn.Module, dim_mask_shape: tuple[int, int] | None, hidden: int | None) -> None:
        super().__init__()
        self.qkv, self.proj, self.fc1, self.fc2 = shared.qkv, shared.proj, shared.fc1, shared.fc2
        device = shared.qkv.weight.device
        self.dim_mask = nn.Parameter(torch.ones(dim_mask_shape, device=device)) if dim_mask_shape else None
        self.hidden_mask = nn.Parameter(torch.ones(hidden, device=device)) if hidden else None


class MaskedAttention(nn.Module):
    """Attention with a (heads, head_dim) mask on q, k and v ((heads, 1) on q/k-norm models: whole heads).

    Owns qkv/proj/dim_mask on a plain model; on a multiplexed one they live in the bound shared group.
    Always computes attention manually, so token key biases and head mixing fit in.
    """

    def __init__(self, attn: nn.Module, mask: bool, per_head: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        owns = hasattr(attn, "qkv")
        if owns:
            self.qkv = attn.qkv
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        if hasattr(attn, "v_tap"):
            self.v_tap = attn.v_tap
        self.transform = getattr(attn, "transform", None)
        self.attn_drop, self.norm = attn.attn_drop, attn.norm
        if owns:
            self.proj = attn.proj
        self.proj_drop = attn.proj_drop
        shape = (self.num_heads, 1 if per_head else self.head_dim)
        self.dim_mask = nn.Parameter(torch.ones(shape, device=attn.qkv.weight.device)) if owns and mask else None
        self.masked = mask
        self._shared: MaskedSharedWeights | None = None

    def bind(self, shared: MaskedSharedWeights) -> None:
        object.__setattr__(self, "_shared", shared)  # registered once, under model.blocks_shared

    def forward(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        w = self._shared if self._shared is not None else self
        B, N, _ = x.shape
        q, k, v = w.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.masked:
            # After q/k-norm: a per-head scale before a LayerNorm over head_dim would be normalised away.
            m = w.dim_mask.unsqueeze(1)  # (H, 1, d) or (H, 1, 1)
            q, k, v = q * m, k * m, v * m
        if hasattr(self, "v_tap"):
            v = self.v_tap(v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.transform is not None:
            attn = self.transform.pre(attn)
        if key_bias is not None:
            attn = attn + key_bias  # after mixing: -inf must not be mixed into other heads' logits
        attn = attn.softmax(dim=-1)
        if self.transform is not None:
            attn = self.transform.post(attn)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj_drop(w.proj(self.norm(x)))


class MaskedMlp(nn.Module):
    """timm Mlp with one mask value per hidden unit after the activation."""

    def __init__(self, mlp: nn.Module, mask: bool) -> None:
        super().__init__()
        owns = hasattr(mlp, "fc1")
        if owns:
            self.fc1 = mlp.fc1
        self.act, self.drop1, self.norm = mlp.act, mlp.drop1, mlp.norm
        if owns:
            self.fc2 = mlp.fc2
        self.drop2 = mlp.drop2
        hidden = mlp.fc1.out_features if owns else None
        self.hidden_mask = (nn.Parameter(torch.ones(hidden, device=mlp.fc1.weight.device)) if owns and mask
                            else None)
        self.masked = mask
        self._shared: MaskedSharedWeights | None = None

    def bind(self, shared: MaskedSharedWeights) -> None:
        object.__setattr__(self, "_shared", shared)

    def forward(self, x: Tensor) -> Tensor:
        w = self._shared if self._shared is not None else self
        h = self.act(w.fc1(x))
        if self.masked:
            h = h * w.hidden_mask
        return self.drop2(w.fc2(self.norm(self.drop1(h))))


class MaskedBlock(nn.Module):
    """A timm Block or MultiplexedBlock with masked attention/MLP and (optionally) a token mask θ."""

    def __init__(self, block: nn.Module, attn: bool, mlp: bool, per_head: bool, num_patches: int | None,
                 token_init: float) -> None:
        super().__init__()
        self.norm1 = block.norm1
        self.attn = MaskedAttention(block.attn, attn, per_head)
        self.ls1, self.drop_path1 = block.ls1, block.drop_path1
        if hasattr(block, "mlp_transform"):  # multiplexed: layer-local depth-wise conv on the patch grid
            self.mlp_transform = block.mlp_transform
            self.num_prefix_tokens, self.grid = block.num_prefix_tokens, block.grid
        self.norm2 = block.norm2
        self.mlp = MaskedMlp(block.mlp, mlp)
        self.ls2, self.drop_path2 = block.ls2, block.drop_path2
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
        update = self.drop_path1(self.ls1(self.attn(self.norm1(x), bias)))
        x = x + (update if scale is None else update * scale)
        if getattr(self, "mlp_transform", None) is not None:
            x = self.mlp_transform.forward_tokens(x, self.num_prefix_tokens, self.grid)
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
