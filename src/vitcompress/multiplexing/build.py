"""`multiplex`: turn a timm ViT/DeiT or Swin into its weight-multiplexed student (MiniViT, Mini-Swin)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.spec import family_of, get_spec, unwrap, with_step
from vitcompress.models.vit import check_plain_blocks, grid_size
from vitcompress.multiplexing.config import MultiplexConfig
from vitcompress.multiplexing.groups import resolve_groups
from vitcompress.multiplexing.vit import MultiplexedBlock, shared_from_blocks


def multiplex(model: nn.Module, config: MultiplexConfig | None = None) -> nn.Module:
    """A new weight-multiplexed student made from `model`; `model` itself is left untouched.

    Shared weights start from the model's layers of each group (`config.init`), every layer keeps its own
    norms, and the transformations start as identities, so the student equals plain weight sharing (and with
    `share=1`, the model itself).
    """
    config = MultiplexConfig() if config is None else config
    if not isinstance(config, MultiplexConfig):
        raise VitCompressError(
            f"config is a {type(config).__name__}; pass a MultiplexConfig, e.g. MultiplexConfig(share=2)"
        )
    model = unwrap(model)
    if any(step["kind"] == "multiplex" for step in get_spec(model)["steps"]):
        raise VitCompressError("this model is already multiplexed; multiplex the original model instead")
    student, groups = _builder(family_of(model))(model, config)
    step: dict[str, Any] = {"kind": "multiplex", "config": config.to_dict(), "groups": groups}
    return with_step(model, student, step)


def rebuild_multiplexed(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Redo a recorded multiplex step on a freshly built base (weights are loaded afterwards)."""
    config = MultiplexConfig.from_dict(step["config"])
    config.groups = step["groups"]
    student, _ = _builder(family_of(model))(model, config)
    return student


def _builder(family: str) -> Callable[[nn.Module, MultiplexConfig], tuple[nn.Module, list[list[int]]]]:
    if family == "vit":
        return _multiplex_vit
    if family == "swin":
        from vitcompress.multiplexing.swin import multiplex_swin

        return multiplex_swin
    raise VitCompressError(f"multiplexing is not supported for the {family} family yet")  # pragma: no cover


def _multiplex_vit(teacher: nn.Module, config: MultiplexConfig) -> tuple[nn.Module, list[list[int]]]:
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
        shared_from_blocks([teacher_blocks[i] for i in g], config.init, config.init_index) for g in groups
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
