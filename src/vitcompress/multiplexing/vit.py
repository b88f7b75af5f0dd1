"""Multiplexed ViT/DeiT blocks: timm's Block with its linear weights taken from a shared group.

Each layer keeps its own norms, LayerScale, q/k-norm, drop-path and transformations; the linear layers (qkv,
proj and the MLP's) live once per group in `model.blocks_shared`, bound to each layer's attention and MLP core,
so the state dict holds one copy of them and the parameter count really drops.
"""

from __future__ import annotations

import copy

import torch
from timm.models.vision_transformer import Attention, Block, ResPostBlock
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import AttentionCore, attention_weights
from vitcompress.models.mlp import MlpCore, mlp_kind
from vitcompress.models.vit import check_plain_blocks, grid_size
from vitcompress.multiplexing.config import MultiplexConfig
from vitcompress.multiplexing.groups import resolve_groups
from vitcompress.multiplexing.transforms import AttentionTransform, DepthwiseConvTransform


class SharedWeights(nn.Module):
    """The linear layers one sharing group uses: attention qkv/proj and the MLP's (fc1/fc2, or a gated kind's),
    weights and biases, under the names the blocks' own modules give them."""

    def __init__(self, linears: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, linear in linears.items():
            self.add_module(name, linear)


def shared_weights(blocks: list[nn.Module], init: str, init_index: int) -> SharedWeights:
    """One group's attention weights (`attention_weights`: projections, biases, position-bias tables or MLPs,
    logit scales) and MLP linears, started from the teacher's blocks of the group: the first, the `init_index`-th,
    or the average of them (the same rule for every tensor). Names are the blocks' own, so e.g. Swin's
    `relative_position_bias_table` is still found by timm's `no_weight_decay()`."""
    pick = 0 if init == "first" else min(init_index, len(blocks) - 1)
    kind = mlp_kind(blocks[0].mlp)
    per_block = [{**attention_weights(b.attn), **{n: getattr(b.mlp, n) for n in kind.linears}} for b in blocks]
    modules, params = {}, {}
    for name, first in per_block[0].items():
        values = [w[name] for w in per_block]
        shapes = {tuple(p.shape) for v in values for p in ([v] if isinstance(v, nn.Parameter) else v.parameters())}
        if isinstance(first, nn.Parameter) and len(shapes) > 1:
            raise VitCompressError("blocks of one sharing group have different window sizes or widths; keep each "
                                   "group inside a stage")
        if isinstance(first, nn.Parameter):
            data = torch.stack([v.detach() for v in values]).mean(0) if init == "average" else values[pick].detach()
            params[name] = nn.Parameter(data.clone())
            continue
        module = copy.deepcopy(values[0 if init == "average" else pick])
        if init == "average":
            with torch.no_grad():
                for p_name, p in module.named_parameters():
                    p.copy_(torch.stack([v.get_parameter(p_name) for v in values]).mean(0))
        modules[name] = module
    shared = SharedWeights(modules)
    for name, param in params.items():
        shared.register_parameter(name, param)
    return shared


def multiplexed_attention(attn: Attention, transform: bool) -> AttentionCore:
    """timm Attention without its own qkv/proj (bound from the group), plus the optional head mixing."""
    mixing = AttentionTransform(attn.num_heads) if transform else None
    return AttentionCore.of(attn, owns=False, transform=mixing, share_children=False)


def multiplexed_mlp(mlp: nn.Module) -> MlpCore:
    """A timm MLP without its own linears (bound from the group)."""
    return MlpCore.of(mlp, owns=False, share_children=False)


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
        self.attn = multiplexed_attention(block.attn, attn_transform)
        # timm's ResPostBlock normalises after each branch (and has no LayerScale).
        self.post_norm = isinstance(block, ResPostBlock) or bool(getattr(block, "post_norm", False))
        self.ls1 = copy.deepcopy(getattr(block, "ls1", nn.Identity()))
        self.drop_path1 = copy.deepcopy(block.drop_path1)
        eps = getattr(block.norm2, "eps", 1e-6)
        dim = block.norm2.normalized_shape[0]
        self.mlp_transform = DepthwiseConvTransform(dim, kernel_size, eps) if mlp_transform else None
        self.norm2 = copy.deepcopy(block.norm2)
        self.mlp = multiplexed_mlp(block.mlp)
        self.ls2 = copy.deepcopy(getattr(block, "ls2", nn.Identity()))
        self.drop_path2 = copy.deepcopy(block.drop_path2)
        self._shared: SharedWeights | None = None

    def bind(self, shared: SharedWeights) -> None:
        # Held outside the module tree on purpose: the group's weights are registered once, under
        # `blocks_shared`, so state_dict() and parameters() see a single copy.
        object.__setattr__(self, "_shared", shared)
        self.attn.bind(shared)
        self.mlp.bind(shared)

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
        if self.post_norm:
            x = x + self.drop_path1(self.norm1(self.attn(x, attn_mask=attn_mask, is_causal=is_causal)))
        else:
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        if self.mlp_transform is not None:
            x = self.mlp_transform.forward_tokens(x, self.num_prefix_tokens, self._token_grid(x.shape[1]))
        if self.post_norm:
            return x + self.drop_path2(self.norm2(self.mlp(x)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def extra_repr(self) -> str:
        return f"group={self.group}"


def multiplex_vit(teacher: nn.Module, config: MultiplexConfig) -> tuple[nn.Module, list[list[int]]]:
    """MiniViT from a timm VisionTransformer: returns (student, groups)."""
    check_plain_blocks(teacher)
    depth = len(teacher.blocks)
    groups = resolve_groups(config, [depth])
    group_of = {layer: gi for gi, g in enumerate(groups) for layer in g}
    # Copy everything but the blocks (embeddings, norms, head); the blocks are rebuilt from the teacher's.
    teacher_blocks = teacher.blocks
    teacher.blocks = nn.Sequential()
    try:
        student = copy.deepcopy(teacher)
    finally:
        teacher.blocks = teacher_blocks
    shared = nn.ModuleList(
        shared_weights([teacher_blocks[i] for i in g], config.init, config.init_index) for g in groups
    )
    layers = []
    for i, blk in enumerate(teacher_blocks):
        layer = MultiplexedBlock(
            blk,
            group=group_of[i],
            num_prefix_tokens=teacher.num_prefix_tokens,
            grid=grid_size(teacher),
            attn_transform=config.attn_transform,
            mlp_transform=config.mlp_transform,
            kernel_size=config.kernel_size,
        )
        layer.bind(shared[group_of[i]])
        layers.append(layer)
    student.blocks = nn.Sequential(*layers)
    student.blocks_shared = shared
    # A student is for training, even when the teacher it came from was frozen for distillation.
    return student.train(teacher.training).requires_grad_(True), groups
