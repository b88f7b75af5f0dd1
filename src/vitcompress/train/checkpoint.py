"""Training checkpoints: written atomically, read without unpickling code.

Layout of a checkpoint directory (default `out_dir/checkpoint/`):

    model.safetensors   raw model state_dict (no DDP "module." prefix)
    ema.safetensors     EMA model state_dict, only when EMA is on
    train_state.pt      optimizer, scheduler, grad-scaler state and the per-epoch history: plain tensors,
                        numbers and containers, loaded with `torch.load(weights_only=True)`
    meta.json           format_version, epoch (epochs completed), step (optimizer updates), steps_per_epoch,
                        world_size, config (TrainConfig.to_dict()); human-readable on purpose

A new checkpoint is written to a temporary sibling directory and renamed into place; the previous one is
moved aside first and deleted last, so at every instant one complete checkpoint exists under the final or
the `.old` name, and `resolve_checkpoint` finds it.

`fit` keeps a run's checkpoints as `out_dir/checkpoint/step-<8 digits>/`, one directory per saved step, and
prunes all but the newest `TrainConfig.checkpoint_hist` after each complete write; `resolve_checkpoint` on the
parent picks the newest complete one, so a kill at any instant leaves something to resume from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vitcompress.errors import VitCompressError

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "train_state.pt"
META_FILE = "meta.json"


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: The directory it was read from.
        model: Model state_dict.
        ema: EMA model state_dict, or None when the run had no EMA.
        state: `optimizer`, `scheduler`, `scaler` state dicts and `history` (list of per-epoch records).
        meta: The contents of meta.json.
    """

    path: Path
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    state: dict[str, Any]
    meta: dict[str, Any]


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


STEP_PREFIX = "step-"


def step_dir(root: str | Path, step: int) -> Path:
    """Where `fit` writes the checkpoint of optimizer step `step` under a run's checkpoint root."""
    return Path(root) / f"{STEP_PREFIX}{step:08d}"


def _complete(path: Path) -> Path | None:
    if (path / META_FILE).is_file():
        return path
    if (_aside(path) / META_FILE).is_file():
        return _aside(path)
    return None


def step_checkpoints(root: str | Path) -> list[Path]:
    """The complete step checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if p.name.startswith(STEP_PREFIX) and p.name[5:].isdigit())
    return [found for found in (_complete(root / n) for n in names) if found is not None]


def resolve_checkpoint(path: str | Path) -> Path | None:
    """Return the complete checkpoint directory for `path`, or None if there is none.

    `path` is a checkpoint directory, or a run's checkpoint root holding `step-*` directories (the newest
    complete one is returned). If a crash hit between moving an old checkpoint aside and renaming the new one
    into place, the old one (complete) is returned.
    """
    path = Path(path)
    found = _complete(path)
    if found is not None:
        return found
    steps = step_checkpoints(path)
    return steps[-1] if steps else None


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints under `root` (and temp dirs of killed writers)."""
    for old in step_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    # Called right after this process's own write completed, so any temp dir left is a killed writer's.
    for stale in Path(root).glob(f".{STEP_PREFIX}*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    # Data must be on disk before the rename publishes it, or a power cut could publish empty files.
    for file in directory.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write a checkpoint directory (see the module docstring for the layout).

    Args:
        path: Final directory, replaced if it exists.
        model_state: Model state_dict; tensors that share memory make safetensors raise, which points at a
            model bug (tied weights must be declared), so it is not worked around here.
        state: Optimizer/scheduler/scaler states and history; plain tensors and containers only.
        meta: JSON-serialisable run metadata; `format_version` is added.
        ema_state: EMA model state_dict, if any.

    Returns:
        The checkpoint directory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer that was killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        save_file(model_state, tmp / MODEL_FILE)
        if ema_state is not None:
            save_file(ema_state, tmp / EMA_FILE)
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2))
        _fsync_tree(tmp)
        aside = _aside(path)
        if path.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
        os.replace(tmp, path)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read(file: Path, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(file)
    except Exception as e:  # safetensors, zip, json and weights_only each raise their own error types
        reason = " ".join(str(e).split())[:200]
        raise VitCompressError(
            f"cannot read checkpoint file {file} ({type(e).__name__}: {reason}); the checkpoint is corrupt "
            "or not a vitcompress checkpoint: delete it or resume from another one"
        ) from e


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint directory written by `save_checkpoint`.

    Raises:
        VitCompressError: If the directory is missing, incomplete, corrupt or from a newer format.
    """
    found = resolve_checkpoint(path)
    if found is None:
        raise VitCompressError(
            f"no checkpoint at {path} (expected a directory with {META_FILE}); check the path, or start a "
            "fresh run without resume"
        )
    meta = _read(found / META_FILE, lambda f: json.loads(f.read_text()))
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int):
        raise VitCompressError(f"{found / META_FILE} is not vitcompress checkpoint metadata; resume from another")
    if meta["format_version"] > FORMAT_VERSION:
        raise VitCompressError(
            f"checkpoint {found} has format {meta['format_version']}, newer than this vitcompress "
            f"understands ({FORMAT_VERSION}); upgrade vitcompress"
        )
    missing = [f for f in (MODEL_FILE, STATE_FILE) if not (found / f).is_file()]
    if meta.get("ema") and not (found / EMA_FILE).is_file():
        missing.append(EMA_FILE)
    if missing:
        raise VitCompressError(f"checkpoint {found} is incomplete (missing {missing}); resume from another one")
    device = str(map_location)
    model = _read(found / MODEL_FILE, lambda f: load_file(f, device=device))
    ema = _read(found / EMA_FILE, lambda f: load_file(f, device=device)) if meta.get("ema") else None
    # weights_only: a checkpoint is data; never let loading one run pickled code.
    state = _read(found / STATE_FILE, lambda f: torch.load(f, map_location=map_location, weights_only=True))
    return Checkpoint(found, model, ema, state, meta)
