"""The search objective: a task loss plus ℓ1 pressure on the masks, and the optimizer groups for them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import transformer_layers
from vitcompress.models.spec import unwrap
from vitcompress.slim.attach import is_masked, mask_tensors
from vitcompress.slim.config import SparsityConfig
from vitcompress.slim.cost import structure_of
from vitcompress.train.config import TrainConfig
from vitcompress.train.objectives import CrossEntropyObjective, Objective
from vitcompress.train.optim import make_param_groups


def element_weights(model: nn.Module, config: SparsityConfig) -> dict[str, list[float]]:
    """ℓ1 weight per owner (attn, mlp) or layer (tokens): the type's weight, optionally × relative MACs.

    With `macs_weighted`, an element's weight is scaled by the MACs it controls over the mean element of its
    type (the structure's `element_macs`), so the per-type weights keep their paper meaning while costly
    elements pay more.
    """
    model = unwrap(model)
    masks = mask_tensors(model)
    s = structure_of(model)
    macs = s.element_macs()
    out = {}
    for kind, tensors in masks.items():
        w = config.weight(kind)
        if not config.macs_weighted:
            out[kind] = [w] * len(tensors)
            continue
        sizes = [t.numel() for t in tensors]
        mean = sum(m * n for m, n in zip(macs[kind], sizes, strict=True)) / sum(sizes)
        out[kind] = [w * m / mean for m in macs[kind]]
    return out


def sparsity_loss(model: nn.Module, weights: Mapping[str, list[float]]) -> tuple[Tensor, dict[str, Tensor]]:
    """Σ_type Σ_owner w·Σ|mask|; token masks enter as |tanh(θ)/tanh(θ_init)| (unclamped: a token pushed below
    zero is pulled back to 0, where the task loss can revive it)."""
    model = unwrap(model)
    masks = mask_tensors(model)
    total: Tensor | None = None
    parts: dict[str, Tensor] = {}
    for kind, tensors in masks.items():
        if kind == "tokens":
            layers = transformer_layers(model)
            values = [torch.tanh(t) / math.tanh(blk.token_init) for t, blk in zip(tensors, layers, strict=True)]
        else:
            values = list(tensors)
        term = sum(w * v.abs().sum() for w, v in zip(weights[kind], values, strict=True))
        total = term if total is None else total + term
        parts[f"mask_{kind}"] = torch.cat([v.detach().flatten() for v in values]).abs().mean()
    assert total is not None
    return total, parts


class SlimObjective:
    """`base` objective + the masks' ℓ1 sparsity loss, for `train.fit` (single process or DDP).

    Args:
        model: The masked model (`attach_masks`), possibly wrapped; read for its masks and structure.
        base: The task loss; default: cross-entropy. E.g. a `DistillationObjective` with only the logit term.
        config: Sparsity weights.
    """

    def __init__(self, model: nn.Module, base: Objective | None = None, config: SparsityConfig | None = None) -> None:
        if not is_masked(unwrap(model)):
            raise VitCompressError("SlimObjective needs a masked model; make one with vc.attach_masks")
        self.base = base if base is not None else CrossEntropyObjective()
        self.config = config if config is not None else SparsityConfig()
        self.weights = element_weights(model, self.config)

    def __call__(self, model: nn.Module, images: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Any]]:
        loss, parts = self.base(model, images, targets)
        sparsity, mask_parts = sparsity_loss(model, self.weights)
        total = loss + sparsity
        return total, {**parts, "task": loss.detach(), "sparsity": sparsity.detach(), **mask_parts,
                       "loss": total.detach()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r}, config={self.config})"


def slim_param_groups(model: nn.Module, train: TrainConfig, config: SparsityConfig) -> list[dict[str, Any]]:
    """AdamW groups for a search: timm's decay/no-decay split, masks apart with their lr and no weight decay."""
    return make_param_groups(unwrap(model), train.weight_decay, mask_lr=config.mask_lr or train.lr)
