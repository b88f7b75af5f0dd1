"""AdamW param groups and the warmup + cosine schedule, both from timm.

Every group follows one schedule, scaled: a group asking for `lr=1e-3` under `TrainConfig(lr=5e-4)` gets
exactly twice the scheduled lr at every step. timm's scheduler computes `lr_min + (initial_lr - lr_min) * f`
per group and warms up from an absolute `warmup_lr_init`, which does not keep ratios when `lr_min > 0`; so
each group instead starts from `cfg.lr` and carries its ratio as timm's `lr_scale`, which the scheduler
multiplies in after computing the shared value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import MASK_PARAMS, is_mask_param
from vitcompress.train.config import TrainConfig

MASK_PATTERNS = (*MASK_PARAMS, *(f"*.{name}" for name in MASK_PARAMS))  # top-level or in a submodule
"""Parameters matching this fnmatch pattern get no weight decay: slimming masks are scores, not weights."""


def make_param_groups(model: nn.Module, weight_decay: float, mask_lr: float | None = None) -> list[dict[str, Any]]:
    """Split trainable parameters into AdamW groups the way timm does, plus masks.

    Biases, norms, every other 1-D parameter and the names in `model.no_weight_decay()` (position
    embeddings, class tokens) get no weight decay, as in timm; neither does anything named like a mask.

    Args:
        model: The model to train; frozen parameters are left out.
        weight_decay: Decay for the "decay" group.
        mask_lr: If given, mask parameters form their own group with this lr and no weight decay;
            otherwise they join the no-decay group.

    Returns:
        Param groups (each with a "name": "decay", "no_decay" or "mask") for `fit(param_groups=...)`.
    """
    no_wd = [*getattr(model, "no_weight_decay", set)(), *MASK_PATTERNS]
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=no_wd)
    for group in groups:
        group["name"] = "decay" if group["weight_decay"] else "no_decay"
    if mask_lr is None:
        return groups
    masks = [p for n, p in model.named_parameters() if p.requires_grad and is_mask_param(n)]
    mask_ids = {id(p) for p in masks}
    for group in groups:
        group["params"] = [p for p in group["params"] if id(p) not in mask_ids]
    groups = [g for g in groups if g["params"]]
    if masks:
        groups.append({"params": masks, "weight_decay": 0.0, "lr": mask_lr, "name": "mask"})
    return groups


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, param_groups: Iterable[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """AdamW via `timm.optim.create_optimizer_v2`, with every group's lr expressed as a scale of `cfg.lr`.

    Args:
        model: Used for the default groups (`make_param_groups(model, cfg.weight_decay)`).
        cfg: Peak lr and default weight decay.
        param_groups: Groups to use instead; each may set "lr" and "weight_decay" (otherwise `cfg.lr` and
            `cfg.weight_decay` apply to it, biases included). A timm "lr_scale" multiplies the group's lr.

    Returns:
        The optimizer; each group holds `lr=cfg.lr` and `lr_scale` = its requested lr / `cfg.lr`.
    """
    if param_groups is None:
        groups = make_param_groups(model, cfg.weight_decay)
    else:
        groups = [dict(g) for g in param_groups]  # the caller's dicts stay untouched
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise VitCompressError("no trainable parameters were given; unfreeze some or pass param_groups")
    optimizer = create_optimizer_v2(groups, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    for group in optimizer.param_groups:
        group["lr_scale"] = group["lr"] / cfg.lr * group.get("lr_scale", 1.0)
        group["lr"] = cfg.lr
        group.pop("initial_lr", None)  # the scheduler must record cfg.lr as every group's base
    return optimizer


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """Linear warmup from `cfg.min_lr` to `cfg.lr`, then cosine decay to `cfg.min_lr` at the last step.

    Call `scheduler.step_update(num_updates)` after every optimizer step.
    """
    total = cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=cfg.min_lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.min_lr,
        warmup_prefix=True,  # cosine starts after warmup, so it lands on min_lr exactly at the end
        t_in_epochs=False,
    )


def scheduled_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's current value for `cfg.lr` (group lr divided by its scale)."""
    scaled = (g for g in optimizer.param_groups if g.get("lr_scale", 1.0))  # a group frozen at scale 0 says nothing
    return next((g["lr"] / g.get("lr_scale", 1.0) for g in scaled), 0.0)
