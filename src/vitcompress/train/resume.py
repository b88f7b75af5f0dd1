"""Continuing a run: which checkpoint `fit` resumes from, whether it may, and restoring the state from it.

A checkpoint can be taken between any two optimizer steps, so besides the weights and optimizer it records
where in the epoch the run was (`Position`): the epoch, the micro-batches of it already trained on and the
running sums that become the epoch's mean losses. The data order and every random stream are functions of
(seed, epoch, position), so nothing else needs storing for the resumed run to continue bit-exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.train.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from vitcompress.train.config import SCHEDULE_FIELDS, TrainConfig

CHECKPOINT_DIR = "checkpoint"
"""Where `fit` keeps a run's checkpoints (`step-*` directories), under `out_dir`."""

RESUME_SAFE_FIELDS = ("log_every", "checkpoint_every_steps", "checkpoint_every_minutes", "checkpoint_hist",
                      "compile")
"""TrainConfig fields a resumed run may change: they decide what is logged or saved, not what is computed."""


@dataclasses.dataclass
class Position:
    """Where a run stands between two optimizer steps.

    Attributes:
        epoch: The epoch in progress (or the next one, when `batches_done` is 0).
        batches_done: Micro-batches of `epoch` already trained on, on each rank.
        step: Optimizer steps taken so far.
        totals: Sums over the epoch so far (all ranks) of each logged component, and `_batches`.
    """

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    totals: dict[str, float] = dataclasses.field(default_factory=dict)


def checkpoint_to_resume(resume: bool | str | Path, out: Path | None) -> Checkpoint | None:
    """Load the checkpoint `resume` asks for: None for a fresh run, the newest under `out/checkpoint` for
    True, else a path (a checkpoint directory, or a run's checkpoint root).

    A fresh run refuses an `out` that already holds a checkpoint: its own checkpoints would silently bury the
    earlier run.
    """
    if resume is False or resume is None:
        if out is not None and resolve_checkpoint(out / CHECKPOINT_DIR) is not None:
            raise VitCompressError(
                f"{out} already holds a training checkpoint; pass resume=True (--resume) to continue it, or use a "
                "new out_dir"
            )
        return None
    if resume is True:
        if out is None:
            raise VitCompressError("resume=True continues the run in out_dir, but out_dir is None; pass it")
        return load_checkpoint(out / CHECKPOINT_DIR)
    return load_checkpoint(resume)


def _changes(old: Mapping[str, Any], new: Mapping[str, Any], keys) -> list[str]:
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]


def _json(value: Any) -> Any:
    """`value` as it reads back from meta.json (tuples become lists), so comparisons are like for like."""
    return json.loads(json.dumps(value))


def check_resumable(
    ckpt: Checkpoint,
    cfg: TrainConfig,
    steps_per_epoch: int,
    world_size: int,
    run_meta: Mapping[str, Any] | None,
) -> None:
    """Refuse to resume a checkpoint of another run: another lr schedule, recipe, world size or run identity.

    Raises:
        VitCompressError: naming what differs, in one line.
    """
    old = ckpt.meta.get("config", {})
    new = cfg.to_dict()
    changed = _changes(old, new, SCHEDULE_FIELDS)
    if ckpt.meta.get("steps_per_epoch") != steps_per_epoch:
        changed.append(f"steps_per_epoch {ckpt.meta.get('steps_per_epoch')} -> {steps_per_epoch}")
    if changed:
        raise VitCompressError(
            f"cannot resume {ckpt.path}: the lr schedule would change ({', '.join(changed)}); resume with "
            "the checkpoint's epochs/lr/batch size and world size, or start a new run"
        )
    saved_world = ckpt.meta.get("world_size", 1)
    if saved_world != world_size:
        raise VitCompressError(
            f"cannot resume {ckpt.path}: it was written by {saved_world} process(es) and this run has {world_size}; "
            f"the data shards and per-rank random streams depend on the world size, so resume with "
            f"--nproc_per_node/--nnodes giving {saved_world} processes, or start a new run"
        )
    keys = [k for k in sorted(set(old) | set(new)) if k not in (*SCHEDULE_FIELDS, *RESUME_SAFE_FIELDS)]
    changed = _changes(old, new, keys)
    if changed:
        raise VitCompressError(
            f"cannot resume {ckpt.path}: the training recipe differs ({', '.join(changed)}); resume with the "
            "checkpoint's settings, or start a new run"
        )
    old_run, new_run = ckpt.meta.get("run") or {}, _json(dict(run_meta or {}))
    changed = [k for k in sorted(set(old_run) | set(new_run)) if old_run.get(k) != new_run.get(k)]
    if changed:
        detail = ", ".join(_describe_change(k, old_run.get(k), new_run.get(k)) for k in changed)
        raise VitCompressError(
            f"cannot resume {ckpt.path}: this is a different run ({detail}); resume with the same model, data and "
            "recipe, or start a new run in another output directory"
        )


def _describe_change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        inner = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return ", ".join(f"{key}.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in inner[:4])
    text = f"{key} {old!r} -> {new!r}"
    return text if len(text) < 160 else f"{key} changed"


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
) -> tuple[Position, list[dict[str, Any]]]:
    """Load weights and optimizer, scheduler and grad-scaler state.

    Returns:
        Where the run stands, and the per-epoch records so far.
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
    meta = ckpt.meta
    position = Position(
        epoch=int(meta["epoch"]),
        batches_done=int(meta.get("batches_done", 0)),
        step=int(meta["step"]),
        totals={k: float(v) for k, v in (meta.get("totals") or {}).items()},
    )
    scheduler.step_update(position.step)
    return position, list(ckpt.state.get("history", []))


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
