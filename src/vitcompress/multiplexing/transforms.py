"""MiniViT's weight transformations: the per-layer modules that keep layers sharing one set of weights diverse.

Both start as exact identities, so a freshly multiplexed model equals plain weight sharing.
"""

from __future__ import annotations

import torch
from torch import nn


class HeadMix(nn.Module):
    """An H×H linear mixing of attention maps across heads (talking-heads), identity at init.

    No bias: after softmax a bias would put attention mass back on masked positions (a flaw of the official
    code), and before softmax a per-head constant cancels anyway.
    """

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(num_heads))

    def forward(self, attn: torch.Tensor) -> torch.Tensor:  # (..., H, N, M) with heads at dim -3
        return torch.einsum("hg,...gnm->...hnm", self.weight, attn)

    def extra_repr(self) -> str:
        return f"num_heads={self.weight.shape[0]}"


class AttentionTransform(nn.Module):
    """The two head mixings of one layer: on the logits before softmax and on the probabilities after."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.pre = HeadMix(num_heads)
        self.post = HeadMix(num_heads)


class DepthwiseConvTransform(nn.Module):
    """`x + DWConv(LN(x))` on a spatial token map: the MLP transformation.

    The conv starts at zero so the block starts as plain sharing; its LayerNorm is the layer's own.
    """

    def __init__(self, dim: int, kernel_size: int = 7, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) channels-last map, as Swin blocks carry it."""
        y = self.conv(self.norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + y

    def forward_tokens(self, x: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
        """x: (B, prefix + H*W, C) ViT tokens; class/distillation/register tokens pass through untouched."""
        prefix, patches = x[:, :num_prefix], x[:, num_prefix:]
        gh, gw = grid
        patches = self.forward(patches.reshape(x.shape[0], gh, gw, x.shape[-1])).flatten(1, 2)
        return torch.cat([prefix, patches], dim=1)
