"""Continuing a run: which checkpoint `fit` resumes from, and restoring the training state from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.train.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from vitcompress.train.config import SCHEDULE_FIELDS, TrainConfig

CHECKPOINT_DIR = "checkpoint"
"""Where `fit` keeps the latest checkpoint, under `out_dir`."""


def checkpoint_to_resume(resume: bool | str | Path, out: Path | None) -> Checkpoint | None:
    """Load the checkpoint `resume` asks for: None for a fresh run, `out/checkpoint` for True, else a path.

    A fresh run refuses an `out` that already holds a checkpoint: overwriting it at the end of the first
    epoch would silently destroy the earlier run.
    """
    if resume is False or resume is None:
        if out is not None and resolve_checkpoint(out / CHECKPOINT_DIR) is not None:
            raise VitCompressError(
                f"{out} already holds a training checkpoint; pass resume=True to continue it, or use a new out_dir"
            )
        return None
    if resume is True:
        if out is None:
            raise VitCompressError("resume=True continues the run in out_dir, but out_dir is None; pass it")
        return load_checkpoint(out / CHECKPOINT_DIR)
    return load_checkpoint(resume)


def check_schedule(ckpt: Checkpoint, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Refuse to resume under a different lr schedule, which would silently bend the one already followed."""
    old = ckpt.meta.get("config", {})
    changed = [f"{k} {old.get(k)} -> {getattr(cfg, k)}" for k in SCHEDULE_FIELDS if old.get(k) != getattr(cfg, k)]
    if ckpt.meta.get("steps_per_epoch") != steps_per_epoch:
        changed.append(f"steps_per_epoch {ckpt.meta.get('steps_per_epoch')} -> {steps_per_epoch}")
    if changed:
        raise VitCompressError(
            f"cannot resume {ckpt.path}: the lr schedule would change ({', '.join(changed)}); resume with "
            "the checkpoint's epochs/lr/batch size and world size, or start a new run"
        )


def load_weights(module: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """`module.load_state_dict(state)`, with a mismatch reported as a `VitCompressError`."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise VitCompressError(
            f"weights in {path} do not fit this model ({reason}); rebuild the model the checkpoint was trained with"
        ) from e


def restore(
    ckpt: Checkpoint,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Load weights and optimizer, scheduler and grad-scaler state.

    Returns:
        Epochs completed, optimizer steps completed, and the per-epoch records so far.
    """
    load_weights(model, ckpt.model, ckpt.path)
    try:
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
    except (KeyError, ValueError) as e:
        raise VitCompressError(
            f"optimizer state in {ckpt.path} does not match the parameter groups ({e}); resume with the same "
            "model and param_groups as the checkpointed run"
        ) from e
    if scaler.is_enabled() and ckpt.state.get("scaler"):
        scaler.load_state_dict(ckpt.state["scaler"])
    step = int(ckpt.meta["step"])
    scheduler.step_update(step)
    return int(ckpt.meta["epoch"]), step, list(ckpt.state.get("history", []))


def make_ema(model: nn.Module, decay: float | None, ckpt: Checkpoint | None) -> ModelEmaV3 | None:
    """A timm `ModelEmaV3` of `model` (None when `decay` is None), restored from `ckpt` if resuming."""
    if decay is None:
        return None
    ema = ModelEmaV3(model, decay=decay)
    if ckpt is not None:
        if ckpt.ema is None:
            raise VitCompressError(f"{ckpt.path} was trained without EMA; resume with ema_decay=None")
        load_weights(ema.module, ckpt.ema, ckpt.path)
    return ema
