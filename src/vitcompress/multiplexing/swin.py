"""Mini-Swin: timm's SwinTransformerBlock with its weights taken from a shared group of the same stage.

Shared per group (registered once, in `model.layers[s].blocks_shared`): qkv, proj, fc1, fc2 and the
relative-position bias table. Per layer: both norms, drop-path, the transformations, and the window layout —
shifted or not, with the attention mask that belongs to *that* layer (non-shifted layers get none; MiniViT's
official code handed the shifted mask to every layer).

The head mixing sits after the relative-position bias; the shift mask is applied after the pre-softmax mixing
(a masked key gets -inf whatever the mixing did) and the post-softmax mixing has no bias, so a masked key keeps
exactly zero attention. timm adds -100 to masked logits instead (a weight of about e^-100, not 0); with identity
mixings the two agree to float precision.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import AttentionCore
from vitcompress.models.family import family_of
from vitcompress.models.swin import padded_size, shifted_window_mask, stage_depths
from vitcompress.multiplexing.config import MultiplexConfig
from vitcompress.multiplexing.groups import resolve_groups
from vitcompress.multiplexing.transforms import AttentionTransform, DepthwiseConvTransform
from vitcompress.multiplexing.vit import SharedWeights, multiplexed_mlp, shared_weights


def multiplexed_window_attention(attn: WindowAttention, transform: bool) -> AttentionCore:
    """timm's WindowAttention without its own qkv/proj/bias table (bound from the group), plus the optional head
    mixing. Q, K, V reach the distillation hooks per window, (B·nW, heads, window area, head_dim), as on ViT."""
    mixing = AttentionTransform(attn.num_heads) if transform else None
    return AttentionCore.of(attn, owns=False, transform=mixing, share_children=False)


class MultiplexedSwinBlock(nn.Module):
    """One layer of a Mini-Swin: per-layer norms, window layout and transformations around a group's weights."""

    def __init__(
        self, block: nn.Module, group: int, attn_transform: bool, mlp_transform: bool, kernel_size: int,
        post_norm: bool = False,
    ) -> None:
        super().__init__()
        self.group, self.post_norm = group, post_norm
        self.dim, self.input_resolution = block.dim, tuple(block.input_resolution)
        self.window_size, self.shift_size = tuple(block.window_size), tuple(block.shift_size)
        self.window_area, self.always_partition = block.window_area, block.always_partition
        self.dynamic_mask = block.dynamic_mask
        self.norm1 = copy.deepcopy(block.norm1)
        self.attn = multiplexed_window_attention(block.attn, attn_transform)
        self.drop_path1 = copy.deepcopy(block.drop_path1)
        self.mlp_transform = DepthwiseConvTransform(block.dim, kernel_size, block.norm2.eps) if mlp_transform else None
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlp = multiplexed_mlp(block.mlp)
        self.drop_path2 = copy.deepcopy(block.drop_path2)
        mask = None
        if any(self.shift_size) and not self.dynamic_mask:
            size = padded_size(self.input_resolution, self.window_size)
            mask = shifted_window_mask(*size, self.window_size, self.shift_size, device=block.norm1.weight.device)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._shared: SharedWeights | None = None

    def bind(self, shared: SharedWeights) -> None:
        # Outside the module tree on purpose: the group's weights are registered once, in the stage's
        # `blocks_shared`, so state_dict() and parameters() see a single copy.
        object.__setattr__(self, "_shared", shared)
        self.attn.bind(shared)
        self.mlp.bind(shared)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        """Shifted-window attention on a (B, H, W, C) map, laid out exactly as timm does it."""
        B, H, W, C = x.shape
        shift, window = self.shift_size, self.window_size
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        pad_h, pad_w = (window[0] - H % window[0]) % window[0], (window[1] - W % window[1]) % window[1]
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        _, Hp, Wp, _ = x.shape
        mask = self.attn_mask
        if any(shift) and self.dynamic_mask:
            mask = shifted_window_mask(Hp, Wp, window, shift, device=x.device)
        windows = window_partition(x, window).view(-1, self.window_area, C)
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.view(-1, window[0], window[1], C), window, Hp, Wp)[:, :H, :W, :].contiguous()
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) map of the stage."""
        B, H, W, C = x.shape
        if self.post_norm:  # Swin V2: the norms follow the attention and the MLP
            x = x + self.drop_path1(self.norm1(self._attn(x)))
        else:
            x = x + self.drop_path1(self._attn(self.norm1(x)))
        if self.mlp_transform is not None:
            x = self.mlp_transform(x)
        x = x.reshape(B, -1, C)
        if self.post_norm:
            x = x + self.drop_path2(self.norm2(self.mlp(x)))
        else:
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)

    def set_input_size(self, *args, **kwargs) -> None:
        raise VitCompressError(
            "a multiplexed Swin cannot change its input or window size (its bias tables are shared); "
            "call set_input_size on the teacher, then multiplex it"
        )

    def extra_repr(self) -> str:
        return f"group={self.group}, window_size={self.window_size}, shift_size={self.shift_size}"


def multiplex_swin(teacher: nn.Module, config: MultiplexConfig) -> tuple[nn.Module, list[list[int]]]:
    """Mini-Swin from a timm SwinTransformer (V1 or V2): groups never cross a stage; returns (student, groups)."""
    family_of(teacher).check(teacher)
    post_norm = family_of(teacher).post_norm
    depths = stage_depths(teacher)
    groups = resolve_groups(config, depths)
    # Copy everything but the blocks (patch embedding, patch merging, norm, head); blocks are rebuilt below.
    teacher_blocks = [stage.blocks for stage in teacher.layers]
    for stage in teacher.layers:
        stage.blocks = nn.Sequential()
    try:
        student = copy.deepcopy(teacher)
    finally:
        for stage, blocks in zip(teacher.layers, teacher_blocks, strict=True):
            stage.blocks = blocks
    flat = [blk for blocks in teacher_blocks for blk in blocks]
    start = 0
    for stage, depth in zip(student.layers, depths, strict=True):
        stage_groups = [(gi, g) for gi, g in enumerate(groups) if start <= g[0] < start + depth]
        shared = nn.ModuleList(
            shared_weights([flat[i] for i in g], config.init, config.init_index) for _, g in stage_groups
        )
        layers: list[nn.Module] = [nn.Identity()] * depth
        for local, (gi, g) in enumerate(stage_groups):
            for i in g:
                layer = MultiplexedSwinBlock(
                    flat[i], gi, config.attn_transform, config.mlp_transform, config.kernel_size, post_norm
                )
                layer.bind(shared[local])
                layers[i - start] = layer
        stage.blocks = nn.Sequential(*layers)
        stage.blocks_shared = shared
        start += depth
    # A student is for training, even when the teacher it came from was frozen for distillation.
    return student.train(teacher.training).requires_grad_(True), groups
