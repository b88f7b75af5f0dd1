"""Multiplexed ViT/DeiT blocks: timm's Block with its linear weights taken from a shared group.

Each layer keeps its own norms, LayerScale, q/k-norm, drop-path and transformations; the four linear layers
(qkv, proj, fc1, fc2) live once per group in `model.blocks_shared` and are passed in at forward time, so the
state dict holds one copy of them and the parameter count really drops.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention, Block
from torch import nn

from vitcompress.multiplexing.transforms import AttentionTransform, DepthwiseConvTransform


class SharedWeights(nn.Module):
    """The linear layers one sharing group uses: attention qkv/proj and MLP fc1/fc2, weights and biases."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.qkv, self.proj, self.fc1, self.fc2 = qkv, proj, fc1, fc2


def shared_from_blocks(blocks: list[Block], init: str, init_index: int) -> SharedWeights:
    """Shared weights of one group, started from the teacher's blocks of that group."""
    names = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    linears = []
    for name in names:
        layers = [blk.get_submodule(name) for blk in blocks]
        if init == "average":
            lin = copy.deepcopy(layers[0])
            with torch.no_grad():
                for p_name, p in lin.named_parameters():
                    p.copy_(torch.stack([layer.get_parameter(p_name) for layer in layers]).mean(0))
        else:
            pick = 0 if init == "first" else min(init_index, len(layers) - 1)
            lin = copy.deepcopy(layers[pick])
        linears.append(lin)
    return SharedWeights(*linears)


class MultiplexedAttention(nn.Module):
    """timm Attention without its own qkv/proj, plus the optional head-mixing transformation."""

    def __init__(self, attn: Attention, transform: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.fused_attn = attn.fused_attn
        self.q_norm, self.k_norm = copy.deepcopy(attn.q_norm), copy.deepcopy(attn.k_norm)
        self.v_tap = nn.Identity()  # a hook point so distillation reads V the same way it reads Q and K
        self.transform = AttentionTransform(attn.num_heads) if transform else None
        self.attn_drop = copy.deepcopy(attn.attn_drop)
        self.norm = copy.deepcopy(attn.norm)
        self.proj_drop = copy.deepcopy(attn.proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        qkv: nn.Linear,
        proj: nn.Linear,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = self.q_norm(q), self.k_norm(k), self.v_tap(v)
        if self.transform is None and self.fused_attn:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=is_causal
            )
        else:
            if is_causal:  # as in timm's manual path, a causal mask takes precedence over attn_mask
                attn_mask = torch.ones(N, N, dtype=torch.bool, device=x.device).tril()
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if self.transform is not None:
                attn = self.transform.pre(attn)
            if attn_mask is not None:
                is_bool = attn_mask.dtype == torch.bool
                attn = attn.masked_fill(~attn_mask, float("-inf")) if is_bool else attn + attn_mask
            attn = attn.softmax(dim=-1)
            if self.transform is not None:
                attn = self.transform.post(attn)
            x = self.attn_drop(attn) @ v
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))
        return self.proj_drop(proj(x))


class MultiplexedMlp(nn.Module):
    """timm Mlp without its own fc1/fc2."""

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.act, self.drop1 = copy.deepcopy(mlp.act), copy.deepcopy(mlp.drop1)
        self.norm, self.drop2 = copy.deepcopy(mlp.norm), copy.deepcopy(mlp.drop2)

    def forward(self, x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear) -> torch.Tensor:
        return self.drop2(fc2(self.norm(self.drop1(self.act(fc1(x))))))


class MultiplexedBlock(nn.Module):
    """One layer of a multiplexed ViT: per-layer norms and transformations around a group's shared weights."""

    def __init__(
        self,
        block: Block,
        group: int,
        num_prefix_tokens: int,
        grid: tuple[int, int],
        attn_transform: bool,
        mlp_transform: bool,
        kernel_size: int,
    ) -> None:
        super().__init__()
        self.group, self.num_prefix_tokens, self.grid = group, num_prefix_tokens, tuple(grid)
        self.norm1 = copy.deepcopy(block.norm1)
        self.attn = MultiplexedAttention(block.attn, attn_transform)
        self.ls1, self.drop_path1 = copy.deepcopy(block.ls1), copy.deepcopy(block.drop_path1)
        eps = getattr(block.norm2, "eps", 1e-6)
        dim = block.norm2.normalized_shape[0]
        self.mlp_transform = DepthwiseConvTransform(dim, kernel_size, eps) if mlp_transform else None
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlp = MultiplexedMlp(block.mlp)
        self.ls2, self.drop_path2 = copy.deepcopy(block.ls2), copy.deepcopy(block.drop_path2)
        self._shared: SharedWeights | None = None

    def bind(self, shared: SharedWeights) -> None:
        # Held outside the module tree on purpose: the group's weights are registered once, under
        # `blocks_shared`, so state_dict() and parameters() see a single copy.
        object.__setattr__(self, "_shared", shared)

    def _token_grid(self, num_tokens: int) -> tuple[int, int]:
        n = num_tokens - self.num_prefix_tokens
        if n == self.grid[0] * self.grid[1]:
            return self.grid
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"cannot lay {n} patch tokens on a grid for the MLP transformation")
        return side, side

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        w = self._shared
        attn = self.attn(self.norm1(x), w.qkv, w.proj, attn_mask=attn_mask, is_causal=is_causal)
        x = x + self.drop_path1(self.ls1(attn))
        if self.mlp_transform is not None:
            x = self.mlp_transform.forward_tokens(x, self.num_prefix_tokens, self._token_grid(x.shape[1]))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x), w.fc1, w.fc2)))

    def extra_repr(self) -> str:
        return f"group={self.group}"
