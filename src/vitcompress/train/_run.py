"""Everything `fit` builds once before its first step (`build_run`), and writing a checkpoint of it (`save_run`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vitcompress.errors import VitCompressError
from vitcompress.train.checkpoint import prune_checkpoints, save_checkpoint, step_dir
from vitcompress.train.config import TrainConfig
from vitcompress.train.distributed import DistInfo, all_reduce_sum
from vitcompress.train.interrupt import StopFlag
from vitcompress.train.log import History, MetricsLogger
from vitcompress.train.objectives import Objective
from vitcompress.train.optim import build_optimizer, build_scheduler
from vitcompress.train.resume import (
    CHECKPOINT_DIR,
    Position,
    check_resumable,
    checkpoint_to_resume,
    make_ema,
    restore,
)

Mixup = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclasses.dataclass
class Run:
    """Everything an epoch needs, built once by `fit`."""

    cfg: TrainConfig  # with the peak lr resolved (lr_base scaled by the global batch)
    given_cfg: TrainConfig  # as the caller gave it: what a resume is checked against
    info: DistInfo
    device: torch.device
    model: nn.Module  # the raw model: what is saved, evaluated and averaged into the EMA
    ddp_model: nn.Module  # what the objective calls: DDP wrapper and/or compiled, or the raw model
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    batches_per_epoch: int  # micro-batches
    steps_per_epoch: int  # optimizer steps
    logger: MetricsLogger
    ema: ModelEmaV3 | None
    verbose: bool
    out: Path | None
    mixup: Mixup | None
    run_meta: dict[str, Any]
    stop: StopFlag = dataclasses.field(default_factory=StopFlag)
    last_save: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def params(self) -> list[nn.Parameter]:
        """Everything the optimizer updates (masks and extra groups included), for gradient clipping."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def build_run(
    model: nn.Module,
    train_loader: DataLoader,
    objective: Objective,
    cfg: TrainConfig,
    out: Path | None,
    param_groups: Iterable[dict[str, Any]] | None,
    resume: bool | str | Path,
    device: str | torch.device | None,
    progress: bool,
    info: DistInfo,
    mixup: Mixup | None,
    run_meta: Mapping[str, Any] | None,
) -> tuple[Run, History, Position]:
    """Build (or restore) everything the loop needs; returns the run, the history and where to start."""
    device = _resolve_device(device, info)
    autocast = _autocast(cfg.amp, device)
    batches = _batches_per_epoch(train_loader)
    steps_per_epoch = math.ceil(batches / cfg.grad_accum_steps)
    resolved = _resolve_lr(cfg, train_loader, info.world_size)
    ckpt = checkpoint_to_resume(resume, out)
    if ckpt is not None:
        check_resumable(ckpt, cfg, steps_per_epoch, info.world_size, run_meta)
    model.to(device)
    if isinstance(objective, nn.Module):
        objective.to(device)
    optimizer = build_optimizer(model, resolved, param_groups)
    scheduler = build_scheduler(optimizer, resolved, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    history, position = History(), Position()
    if ckpt is not None:
        position, history.records = restore(ckpt, model, optimizer, scheduler, scaler)
    ddp_model = model
    if info.distributed:
        # Wrapping broadcasts rank 0's weights, so every rank starts identical even if built differently.
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)
    ema = make_ema(model, cfg.ema_decay, ckpt)  # after the wrap, so it copies the broadcast weights
    history.ema_model = ema.module if ema is not None else None
    if cfg.compile:
        # After the DDP wrap, as torch recommends (its DDPOptimizer splits graphs at bucket boundaries). The raw
        # module stays what is saved and evaluated, so state-dict keys keep no `_orig_mod.` prefix.
        ddp_model = torch.compile(ddp_model)
    if info.main and out is not None:
        out.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(out if info.main else None, resume_step=position.step if ckpt is not None else None)
    run = Run(
        cfg=resolved, given_cfg=cfg, info=info, device=device, model=model, ddp_model=ddp_model,
        objective=objective, optimizer=optimizer, scheduler=scheduler, scaler=scaler, autocast=autocast,
        batches_per_epoch=batches, steps_per_epoch=steps_per_epoch, logger=logger, ema=ema,
        verbose=progress and info.main, out=out, mixup=mixup, run_meta=dict(run_meta or {}),
    )
    return run, history, position


def loader_batch_size(loader: DataLoader) -> int | None:
    """Images per micro-batch of `loader`, when it says (a DataLoader's batch_size or batch sampler's)."""
    size = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return int(size) if size else None


def _resolve_lr(cfg: TrainConfig, loader: DataLoader, world_size: int) -> TrainConfig:
    """`cfg` with `lr` = `lr_base` scaled to the global batch (timm's rule), or `cfg` itself without lr_base."""
    if cfg.lr_base is None:
        return cfg
    batch = loader_batch_size(loader)
    if batch is None:
        raise VitCompressError(
            "lr_base scales the lr by the global batch, but the train loader does not say its batch size; "
            "give the DataLoader a batch_size, or set lr instead of lr_base"
        )
    ratio = batch * world_size * cfg.grad_accum_steps / cfg.lr_base_size
    lr = cfg.lr_base * (ratio if cfg.lr_base_scale == "linear" else math.sqrt(ratio))
    if lr < cfg.min_lr:
        raise VitCompressError(
            f"lr_base {cfg.lr_base} at global batch {round(ratio * cfg.lr_base_size)} gives lr {lr:.3g}, below "
            f"min_lr {cfg.min_lr}; lower min_lr or raise lr_base"
        )
    return dataclasses.replace(cfg, lr=lr)


def _resolve_device(device: str | torch.device | None, info: DistInfo) -> torch.device:
    if device is None:
        return info.device
    device = torch.device(device)
    if info.distributed and device.type == "cuda":
        return info.device  # "cuda" under torchrun means this rank's GPU, not cuda:0 for everyone
    return device


def _autocast(amp: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if amp == "none":
        return contextlib.nullcontext
    if amp == "fp16" and device.type != "cuda":
        raise VitCompressError(f"amp='fp16' needs a CUDA device but training runs on {device}; use amp='bf16'")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise VitCompressError(f"{torch.cuda.get_device_name(device)} has no bf16; use amp='fp16'")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def _batches_per_epoch(loader: DataLoader) -> int:
    try:
        batches = len(loader)
    except TypeError as e:
        raise VitCompressError(
            "train_loader has no length, but the lr schedule is per step; use a map-style dataset or give "
            "the loader a __len__"
        ) from e
    if batches == 0:
        raise VitCompressError("train_loader yields no batches; check the dataset size, batch_size and drop_last")
    return batches


def global_totals(totals: dict[str, Tensor]) -> dict[str, float]:
    """The epoch's running sums over all ranks (a collective: every rank must call it)."""
    if not totals:
        return {}
    names = sorted(totals)  # the same order on every rank
    sums = all_reduce_sum(torch.stack([totals[n] for n in names]).clone()).tolist()
    return dict(zip(names, sums, strict=True))


def save_run(run: Run, history: History, position: Position, totals: dict[str, float]) -> Path | None:
    """Write a checkpoint of `run` at `position` (rank 0 only) and prune old ones; returns its directory."""
    run.last_save = time.monotonic()
    if not run.info.main or run.out is None:
        return None
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": history.records,
    }
    meta = {
        "epoch": position.epoch,
        "batches_done": position.batches_done,
        "step": position.step,
        "steps_per_epoch": run.steps_per_epoch,
        "world_size": run.info.world_size,
        "ema": run.ema is not None,
        "lr": run.cfg.lr,
        "totals": totals,
        "config": run.given_cfg.to_dict(),
        "run": run.run_meta,
    }
    ema_state = run.ema.module.state_dict() if run.ema is not None else None
    root = run.out / CHECKPOINT_DIR
    path = save_checkpoint(step_dir(root, position.step), run.model.state_dict(), state, meta, ema_state)
    prune_checkpoints(root, run.cfg.checkpoint_hist)
    return path
