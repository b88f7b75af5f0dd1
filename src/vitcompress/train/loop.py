"""The one training loop, for plain training, distillation and mask search, in one process or under torchrun.

What differs between those jobs is the `Objective` and the param groups; everything else (AdamW, warmup +
cosine per step, clipping, AMP, EMA, DDP, checkpoint/resume, metrics files) lives here once.
"""

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
from tqdm.auto import tqdm

from vitcompress.errors import VitCompressError
from vitcompress.train._evaluate import _default_evaluate
from vitcompress.train.checkpoint import save_checkpoint
from vitcompress.train.config import TrainConfig
from vitcompress.train.distributed import DistInfo, all_reduce_sum, cleanup, setup_distributed
from vitcompress.train.log import History, MetricsLogger
from vitcompress.train.objectives import Objective
from vitcompress.train.optim import build_optimizer, build_scheduler, scheduled_lr
from vitcompress.train.resume import CHECKPOINT_DIR, check_schedule, checkpoint_to_resume, make_ema, restore
from vitcompress.train.seed import epoch_seed, seed_everything

EvaluateFn = Callable[[nn.Module, DataLoader], Mapping[str, Any]]


@dataclasses.dataclass
class _Run:
    """Everything an epoch needs, built once by `fit`."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    model: nn.Module  # the raw model: what is saved, evaluated and averaged into the EMA
    ddp_model: nn.Module  # what the objective calls: the DDP wrapper, or the raw model in one process
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    steps_per_epoch: int
    logger: MetricsLogger
    ema: ModelEmaV3 | None
    verbose: bool

    @property
    def params(self) -> list[nn.Parameter]:
        """Everything the optimizer updates (masks and extra groups included), for gradient clipping."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    objective: Objective,
    cfg: TrainConfig,
    out_dir: str | Path | None,
    param_groups: Iterable[dict[str, Any]] | None = None,
    resume: bool | str | Path = False,
    device: str | torch.device | None = None,
    evaluate_fn: EvaluateFn | None = None,
    progress: bool = True,
    mixup: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    run_meta: Mapping[str, Any] | None = None,
) -> History:
    """Train `model` in place to minimise `objective`, evaluating, logging and checkpointing every epoch.

    Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the model is wrapped in DistributedDataParallel and
    only rank 0 writes files or prints. Each rank should get its shard of the data, e.g. through a
    `DistributedSampler`, whose `set_epoch` is called here. A process group set up by the caller is kept;
    one that `fit` had to set up itself is destroyed on return.

    Args:
        model: The model to train (unwrapped). Moved to `device`.
        train_loader: Yields `(images, targets)`; must have a length (the schedule is per step).
        val_loader: Evaluated every `cfg.eval_every` epochs and after the last; None skips evaluation.
        objective: Computes `(loss, components)`; see `Objective`. Moved to `device` if it is a module.
        cfg: Optimisation settings.
        out_dir: Where metrics.jsonl, metrics.csv and checkpoint/ go; None writes nothing.
        param_groups: AdamW groups replacing the default decay/no-decay/mask split (`make_param_groups`).
        resume: True continues the run in `out_dir/checkpoint`; a path continues from that checkpoint.
        device: Training device; default cuda:LOCAL_RANK when CUDA is available, else cpu.
        evaluate_fn: `evaluate_fn(model, val_loader) -> {name: number}`, called in eval mode under no_grad
            and the run's autocast; default: top-1/top-5 (percent) and cross-entropy.
        progress: Show a tqdm bar (on a TTY) and per-epoch summaries on rank 0; False prints nothing.
        mixup: `mixup(images, targets) -> (images, soft_targets)` applied to every training batch on the
            device before the objective sees it (timm's `Mixup`); the objective must accept soft targets.
        run_meta: What identifies the run besides `cfg` (model, data, augmentation, objective settings), as
            JSON types; stored in each checkpoint, and a resume with different values is refused.

    Returns:
        The per-epoch records (earlier epochs of a resumed run included) and the EMA model, if any.

    Raises:
        VitCompressError: On a bad configuration, an unusable checkpoint, or a non-finite loss.
    """
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = setup_distributed()
    try:
        out = Path(out_dir) if out_dir is not None else None
        run, history, start_epoch, step = _setup(
            model, train_loader, objective, cfg, out, param_groups, resume, device, progress, info
        )
        for epoch in range(start_epoch, cfg.epochs):
            start = time.perf_counter()
            record, step = _train_epoch(run, train_loader, epoch, step)
            if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                record.update(_evaluate(run, val_loader, evaluate_fn or _default_evaluate))
            record["epoch_time_s"] = time.perf_counter() - start
            history.records.append(record)
            if info.main and out is not None:
                run.logger.log(record)
                run.logger.write_csv(history.records)
                _save(run, out / CHECKPOINT_DIR, history, epoch, step)
            if run.verbose:
                tqdm.write(_summary(record, cfg.epochs))
        return history
    finally:
        if owns_group:
            cleanup()


def _setup(
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
) -> tuple[_Run, History, int, int]:
    """Build (or restore) everything the loop needs; returns the run, history, first epoch and step."""
    device = _resolve_device(device, info)
    autocast = _autocast(cfg.amp, device)
    steps_per_epoch = _steps_per_epoch(train_loader)
    ckpt = checkpoint_to_resume(resume, out)
    model.to(device)
    if isinstance(objective, nn.Module):
        objective.to(device)
    optimizer = build_optimizer(model, cfg, param_groups)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    history, start_epoch, step = History(), 0, 0
    if ckpt is not None:
        check_schedule(ckpt, cfg, steps_per_epoch)
        start_epoch, step, history.records = restore(ckpt, model, optimizer, scheduler, scaler)
    ddp_model = model
    if info.distributed:
        # Wrapping broadcasts rank 0's weights, so every rank starts identical even if built differently.
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_model = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)
    ema = make_ema(model, cfg.ema_decay, ckpt)  # after the wrap, so it copies the broadcast weights
    history.ema_model = ema.module if ema is not None else None
    if info.main and out is not None:
        out.mkdir(parents=True, exist_ok=True)
    logger = MetricsLogger(out if info.main else None, resume_step=step if ckpt is not None else None)
    run = _Run(
        cfg=cfg,
        info=info,
        device=device,
        model=model,
        ddp_model=ddp_model,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        autocast=autocast,
        steps_per_epoch=steps_per_epoch,
        logger=logger,
        ema=ema,
        verbose=progress and info.main,
    )
    return run, history, start_epoch, step


def _train_epoch(run: _Run, loader: DataLoader, epoch: int, step: int) -> tuple[dict[str, Any], int]:
    """One pass over `loader`; returns the epoch record (rank-averaged means) and the updated step count."""
    cfg = run.cfg
    # Reseeded per epoch (not once per run) so a resumed run replays exactly the same data order and noise.
    seed_everything(epoch_seed(cfg.seed, epoch, run.info.rank))
    _set_epoch(loader, epoch)
    run.ddp_model.train()
    totals: dict[str, Tensor] = {}
    # disable=None lets tqdm switch itself off when stderr is not a TTY; step lines are printed instead.
    bar = tqdm(
        loader,
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=None if run.verbose else True,
    )
    lr = scheduled_lr(run.optimizer)
    for images, targets in bar:
        lr = scheduled_lr(run.optimizer)
        loss, parts, grad_norm = _train_step(run, images, targets)
        step += 1
        run.scheduler.step_update(step)
        if run.ema is not None:
            run.ema.update(run.model, step=step)
        _accumulate(totals, {"loss": loss, **parts}, run.device)
        if step % cfg.log_every == 0:
            record = {
                "kind": "step",
                "epoch": epoch,
                "step": step,
                "lr": lr,
                **_floats({"loss": loss, **parts}),
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            _check_finite(record["loss"], epoch, step, run.device)
            run.logger.log(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("kind", "epoch", "step")})
            if run.verbose and bar.disable:
                tqdm.write(_summary(record, cfg.epochs))
    bar.close()
    means = _reduce_means(totals)
    _check_finite(means.get("loss", 0.0), epoch, step, run.device)
    return {"kind": "epoch", "epoch": epoch, "step": step, "lr": lr, **means}, step


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    # DistributedSampler reshuffles per epoch from (seed, epoch), identically on every rank.
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _train_step(run: _Run, images: Tensor, targets: Tensor) -> tuple[Tensor, Mapping[str, Any], Tensor | None]:
    images = images.to(run.device, non_blocking=True)
    targets = targets.to(run.device, non_blocking=True)
    with run.autocast():
        loss, parts = run.objective(run.ddp_model, images, targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    grad_norm = None
    if run.cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not fp16-scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, run.cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.detach(), parts, grad_norm


def _accumulate(totals: dict[str, Tensor], values: Mapping[str, Any], device: torch.device) -> None:
    # Summed as device tensors: converting to float here would sync with the GPU every step.
    for name, value in values.items():
        value = torch.as_tensor(value, device=device).detach().double()
        totals[name] = totals[name] + value if name in totals else value
    totals["_batches"] = totals.get("_batches", torch.zeros((), dtype=torch.float64, device=device)) + 1


def _reduce_means(totals: dict[str, Tensor]) -> dict[str, float]:
    if not totals:
        return {}
    names = sorted(totals)  # the same order on every rank, whatever order the objective used
    sums = all_reduce_sum(torch.stack([totals[n] for n in names])).tolist()
    batches = sums[names.index("_batches")]
    means = {n: s / batches for n, s in zip(names, sums, strict=True) if n != "_batches"}
    return {"loss": means.pop("loss"), **means}


def _floats(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def _check_finite(loss: float, epoch: int, step: int, device: torch.device) -> None:
    # Agreed over ranks: if only the rank that saw the NaN raised, the others would hang in an all-reduce.
    bad = all_reduce_sum(torch.tensor(0.0 if math.isfinite(loss) else 1.0, device=device))
    if bad.item():
        raise VitCompressError(
            f"loss became non-finite at epoch {epoch} step {step}; lower TrainConfig.lr, keep clip_grad on, "
            "or use amp='bf16' instead of 'fp16'"
        )


@torch.no_grad()
def _evaluate(run: _Run, loader: DataLoader, evaluate_fn: EvaluateFn) -> dict[str, Any]:
    models = [("val_", run.model)]
    if run.ema is not None:
        models.append(("val_ema_", run.ema.module))
    out: dict[str, Any] = {}
    for prefix, module in models:
        was_training = module.training
        module.eval()
        with run.autocast():
            metrics = evaluate_fn(module, loader)
        module.train(was_training)
        out.update({prefix + k: v if isinstance(v, (int, str)) else float(v) for k, v in metrics.items()})
    return out


def _summary(record: Mapping[str, Any], epochs: int) -> str:
    done = " done" if record["kind"] == "epoch" else ""
    head = f"epoch {record['epoch'] + 1}/{epochs}{done} step {record['step']}:"
    rest = " ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k not in ("kind", "epoch", "step")
    )
    return f"{head} {rest}"


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


def _steps_per_epoch(loader: DataLoader) -> int:
    try:
        steps = len(loader)
    except TypeError as e:
        raise VitCompressError(
            "train_loader has no length, but the lr schedule is per step; use a map-style dataset or give "
            "the loader a __len__"
        ) from e
    if steps == 0:
        raise VitCompressError("train_loader yields no batches; check the dataset size, batch_size and drop_last")
    return steps


def _save(run: _Run, path: Path, history: History, epoch: int, step: int) -> None:
    state = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": history.records,
    }
    meta = {
        "epoch": epoch + 1,
        "step": step,
        "steps_per_epoch": run.steps_per_epoch,
        "world_size": run.info.world_size,
        "ema": run.ema is not None,
        "config": run.cfg.to_dict(),
    }
    ema_state = run.ema.module.state_dict() if run.ema is not None else None
    save_checkpoint(path, run.model.state_dict(), state, meta, ema_state)
