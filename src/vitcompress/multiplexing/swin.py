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
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention, window_partition, window_reverse
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim
from vitcompress.models.swin import check_plain_swin, padded_size, shifted_window_mask, stage_depths
from vitcompress.multiplexing.config import MultiplexConfig
from vitcompress.multiplexing.groups import resolve_groups
from vitcompress.multiplexing.transforms import AttentionTransform, DepthwiseConvTransform
from vitcompress.multiplexing.vit import MultiplexedMlp, SharedWeights, shared_from_blocks


class SwinSharedWeights(SharedWeights):
    """A group's linear layers plus its relative-position bias table ((2Wh-1)(2Ww-1), heads)."""

    def __init__(
        self,
        qkv: nn.Linear,
        proj: nn.Linear,
        fc1: nn.Linear,
        fc2: nn.Linear,
        relative_position_bias_table: nn.Parameter,
    ) -> None:
        super().__init__(qkv, proj, fc1, fc2)
        # Same name as timm's, so `no_weight_decay()` (a substring match on parameter names) still finds it.
        self.relative_position_bias_table = relative_position_bias_table


def swin_shared_from_blocks(blocks: list[SwinTransformerBlock], init: str, init_index: int) -> SwinSharedWeights:
    """Shared weights of one group, started from the teacher's blocks of that group (same rule for every tensor)."""
    linears = shared_from_blocks(blocks, init, init_index)
    tables = [blk.attn.relative_position_bias_table for blk in blocks]
    if len({tuple(t.shape) for t in tables}) != 1:
        raise VitCompressError("blocks of one sharing group have different window sizes; keep groups inside a stage")
    with torch.no_grad():
        if init == "average":
            table = torch.stack(tables).mean(0)
        else:
            table = tables[0 if init == "first" else min(init_index, len(tables) - 1)].clone()
    return SwinSharedWeights(linears.qkv, linears.proj, linears.fc1, linears.fc2, nn.Parameter(table))


class MultiplexedWindowAttention(nn.Module):
    """timm's WindowAttention without its own qkv/proj/bias table, plus the optional head-mixing transformation.

    `q_norm`/`k_norm` (identities, as in timm's Attention without q/k-norm) and `v_tap` are hook points, so
    distillation reads Q, K, V per window, (B·nW, heads, window area, head_dim), as it does on ViT.
    """

    def __init__(self, attn: WindowAttention, transform: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, head_dim(attn), attn.scale
        self.window_size, self.window_area = tuple(attn.window_size), attn.window_area
        self.fused_attn = attn.fused_attn
        self.register_buffer("relative_position_index", attn.relative_position_index.clone(), persistent=False)
        self.q_norm, self.k_norm, self.v_tap = nn.Identity(), nn.Identity(), nn.Identity()
        self.transform = AttentionTransform(attn.num_heads) if transform else None
        self.attn_drop = copy.deepcopy(attn.attn_drop)
        self.proj_drop = copy.deepcopy(attn.proj_drop)

    def rel_pos_bias(self, table: torch.Tensor) -> torch.Tensor:
        """(heads, N, N) bias of this layer's window from the group's table."""
        n = self.window_area
        return table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, table: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (B·nW, N, C) windows; mask: (nW, N, N) bool, True where a query may attend to a key, or None."""
        B_, N, _ = x.shape
        heads = self.num_heads
        q, k, v = qkv(x).reshape(B_, N, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = self.q_norm(q), self.k_norm(k), self.v_tap(v)
        bias = self.rel_pos_bias(table).unsqueeze(0)  # (1, H, N, N)
        if self.transform is None and self.fused_attn:
            if mask is not None:
                nw = mask.shape[0]
                bias = bias.masked_fill(~mask.unsqueeze(1), float("-inf"))  # (nW, H, N, N)
                bias = bias.unsqueeze(0).expand(B_ // nw, -1, -1, -1, -1).reshape(B_, heads, N, N)
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            if self.transform is not None:
                attn = self.transform.pre(attn)
            if mask is not None:  # after the mixing: no head can pull mass back onto a masked key
                nw = mask.shape[0]
                attn = attn.view(-1, nw, heads, N, N).masked_fill(~mask.unsqueeze(1), float("-inf"))
                attn = attn.view(-1, heads, N, N)
            attn = attn.softmax(dim=-1)
            if self.transform is not None:
                attn = self.transform.post(attn)  # no bias: exact zeros stay zero
            x = self.attn_drop(attn) @ v
        return self.proj_drop(proj(x.transpose(1, 2).reshape(B_, N, -1)))


class MultiplexedSwinBlock(nn.Module):
    """One layer of a Mini-Swin: per-layer norms, window layout and transformations around a group's weights."""

    def __init__(
        self, block: SwinTransformerBlock, group: int, attn_transform: bool, mlp_transform: bool, kernel_size: int
    ) -> None:
        super().__init__()
        self.group = group
        self.dim, self.input_resolution = block.dim, tuple(block.input_resolution)
        self.window_size, self.shift_size = tuple(block.window_size), tuple(block.shift_size)
        self.window_area, self.always_partition = block.window_area, block.always_partition
        self.dynamic_mask = block.dynamic_mask
        self.norm1 = copy.deepcopy(block.norm1)
        self.attn = MultiplexedWindowAttention(block.attn, attn_transform)
        self.drop_path1 = copy.deepcopy(block.drop_path1)
        self.mlp_transform = DepthwiseConvTransform(block.dim, kernel_size, block.norm2.eps) if mlp_transform else None
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlp = MultiplexedMlp(block.mlp)
        self.drop_path2 = copy.deepcopy(block.drop_path2)
        mask = None
        if any(self.shift_size) and not self.dynamic_mask:
            size = padded_size(self.input_resolution, self.window_size)
            mask = shifted_window_mask(*size, self.window_size, self.shift_size, device=block.norm1.weight.device)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._shared: SwinSharedWeights | None = None

    def bind(self, shared: SwinSharedWeights) -> None:
        # Outside the module tree on purpose: the group's weights are registered once, in the stage's
        # `blocks_shared`, so state_dict() and parameters() see a single copy.
        object.__setattr__(self, "_shared", shared)

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
        w = self._shared
        windows = window_partition(x, window).view(-1, self.window_area, C)
        windows = self.attn(windows, w.qkv, w.proj, w.relative_position_bias_table, mask=mask)
        x = window_reverse(windows.view(-1, window[0], window[1], C), window, Hp, Wp)[:, :H, :W, :].contiguous()
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) map of the stage."""
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        if self.mlp_transform is not None:
            x = self.mlp_transform(x)
        x = x.reshape(B, -1, C)
        w = self._shared
        x = x + self.drop_path2(self.mlp(self.norm2(x), w.fc1, w.fc2))
        return x.reshape(B, H, W, C)

    def set_input_size(self, *args, **kwargs) -> None:
        raise VitCompressError(
            "a multiplexed Swin cannot change its input or window size (its bias tables are shared); "
            "call set_input_size on the teacher, then multiplex it"
        )

    def extra_repr(self) -> str:
        return f"group={self.group}, window_size={self.window_size}, shift_size={self.shift_size}"


def multiplex_swin(teacher: nn.Module, config: MultiplexConfig) -> tuple[nn.Module, list[list[int]]]:
    """Mini-Swin from a timm SwinTransformer: groups never cross a stage; returns (student, groups)."""
    check_plain_swin(teacher)
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
            swin_shared_from_blocks([flat[i] for i in g], config.init, config.init_index) for _, g in stage_groups
        )
        layers: list[nn.Module] = [nn.Identity()] * depth
        for local, (gi, g) in enumerate(stage_groups):
            for i in g:
                layer = MultiplexedSwinBlock(
                    flat[i], gi, config.attn_transform, config.mlp_transform, config.kernel_size
                )
                layer.bind(shared[local])
                layers[i - start] = layer
        stage.blocks = nn.Sequential(*layers)
        stage.blocks_shared = shared
        start += depth
    # A student is for training, even when the teacher it came from was frozen for distillation.
    return student.train(teacher.training).requires_grad_(True), groups
