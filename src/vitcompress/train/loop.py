"""The one training loop, for plain training, distillation and mask search, in one process or under torchrun.

What differs between those jobs is the `Objective` and the param groups; everything else (AdamW, warmup +
cosine per step, gradient accumulation, clipping, AMP, EMA, DDP, torch.compile, Mixup, checkpoints between
any two steps, SIGTERM/SIGINT, metrics files) lives here once.

Exact resume: the data order, the augmentation and every random draw of a step are functions of
(seed, epoch, batch index, rank), never of how long the process has been running, so a run killed at any
moment and resumed from its last checkpoint computes exactly what the uninterrupted run computes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vitcompress.data.samplers import EpochSampler, SeededDataset
from vitcompress.errors import VitCompressError
from vitcompress.metrics.accuracy import evaluate as _default_evaluate
from vitcompress.train._run import Mixup, Run, build_run, global_totals, loader_batch_size, save_run
from vitcompress.train.config import TrainConfig
from vitcompress.train.distributed import all_reduce_sum, cleanup, setup_distributed
from vitcompress.train.interrupt import TrainingInterrupted, catch_signals, signal_name
from vitcompress.train.log import History
from vitcompress.train.objectives import Objective
from vitcompress.train.optim import scheduled_lr
from vitcompress.train.resume import Position
from vitcompress.train.seed import epoch_seed, seed_everything, step_seed

EvaluateFn = Callable[[nn.Module, DataLoader], Mapping[str, Any]]
TIMING_KEYS = ("epoch_time_s", "img_s")
"""Record fields that measure time: they differ between otherwise identical runs."""


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
    mixup: Mixup | None = None,
    run_meta: Mapping[str, Any] | None = None,
) -> History:
    """Train `model` in place to minimise `objective`, evaluating, logging and checkpointing.

    Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the model is wrapped in DistributedDataParallel and
    only rank 0 writes files or prints. Each rank should get its shard of the data, e.g. through a
    `DistributedSampler` or `vitcompress.data.samplers.EpochSampler`, whose `set_epoch` is called here. A
    process group set up by the caller is kept; one that `fit` had to set up itself is destroyed on return.

    Checkpoints go to `out_dir/checkpoint/step-<n>/` at every epoch end and, if asked, every
    `cfg.checkpoint_every_steps` steps or `cfg.checkpoint_every_minutes`; SIGTERM or SIGINT writes one and
    raises `TrainingInterrupted`. Resuming mid-epoch is bit-exact when the train loader's sampler has
    `set_start` (the loaders of `vitcompress.data.build_loaders` do); with another sampler the batches already
    trained on are re-read and skipped, which is exact only if the loader's order is a function of the epoch
    and its dataset draws no randomness.

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
        TrainingInterrupted: After checkpointing a run stopped by SIGTERM/SIGINT.
    """
    _check_seeded_sampler(train_loader)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = setup_distributed()
    try:
        out = Path(out_dir) if out_dir is not None else None
        run, history, position = build_run(
            model, train_loader, objective, cfg, out, param_groups, resume, device, progress, info, mixup, run_meta
        )
        with catch_signals() as stop:
            run.stop = stop
            while position.epoch < cfg.epochs:
                start = time.perf_counter()
                record = _train_epoch(run, train_loader, history, position)
                epoch = position.epoch
                if val_loader is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                    record.update(_evaluate(run, val_loader, evaluate_fn or _default_evaluate))
                record["epoch_time_s"] = time.perf_counter() - start
                history.records.append(record)
                position.epoch, position.batches_done = epoch + 1, 0
                if info.main and out is not None:
                    run.logger.log(record)
                    run.logger.write_csv(history.records)
                save_run(run, history, position, totals={})
                if run.verbose:
                    tqdm.write(_summary(record, cfg.epochs))
        return history
    finally:
        if owns_group:
            cleanup()


def _check_seeded_sampler(loader: DataLoader) -> None:
    """An `EpochSampler` yields `(index, seed)` pairs, which only a `SeededDataset` reads: say so before training
    rather than let the dataset fail on a tuple index deep inside a DataLoader worker."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochSampler) and not isinstance(getattr(loader, "dataset", None), SeededDataset):
        raise VitCompressError(
            "the train loader's EpochSampler yields (index, seed) pairs but its dataset is not a SeededDataset; wrap "
            "it: DataLoader(SeededDataset(dataset), sampler=EpochSampler(dataset, ...)) (vitcompress.data.samplers)"
        )


def _train_epoch(run: Run, loader: DataLoader, history: History, position: Position) -> dict[str, Any]:
    """Train the rest of `position.epoch`, from its `batches_done`-th micro-batch; returns the epoch record."""
    cfg, epoch = run.cfg, position.epoch
    # For samplers that shuffle from the global generator when their iterator is created (a plain
    # DataLoader(shuffle=True)): the order then depends on (seed, epoch) only.
    seed_everything(epoch_seed(cfg.seed, epoch, run.info.rank))
    batches = _start_epoch(loader, epoch, position.batches_done)
    totals = _restored_totals(position, run)
    run.ddp_model.train()
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=math.ceil(position.batches_done / cfg.grad_accum_steps),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=None if run.verbose else True,  # None: tqdm switches itself off when stderr is not a TTY
    )
    lr, images_seen, train_time = scheduled_lr(run.optimizer), 0, 0.0
    while position.batches_done < run.batches_per_epoch:
        tick = time.perf_counter()
        lr = scheduled_lr(run.optimizer)
        group = min(cfg.grad_accum_steps, run.batches_per_epoch - position.batches_done)
        step_parts, n_images, grad_norm = _optimizer_step(run, batches, epoch, position.batches_done, group)
        if n_images == 0:  # the loader ran out early (a sampler shorter than its len)
            break
        for parts in step_parts:
            _accumulate(totals, parts, run.device)
        position.batches_done += len(step_parts)
        position.step += 1
        run.scheduler.step_update(position.step)
        if run.ema is not None:
            run.ema.update(run.model, step=position.step)
        elapsed = time.perf_counter() - tick
        images_seen, train_time = images_seen + n_images, train_time + elapsed
        bar.update(1)
        if position.step % cfg.log_every == 0:
            _log_step(run, bar, epoch, position.step, lr, step_parts, grad_norm, n_images / max(elapsed, 1e-9))
        _maybe_checkpoint(run, history, position, totals)
    bar.close()
    means = _reduce_means(totals)
    _check_finite(means.get("loss", 0.0), epoch, position.step, run.device)
    img_s = images_seen * run.info.world_size / max(train_time, 1e-9)
    return {"kind": "epoch", "epoch": epoch, "step": position.step, "lr": lr, **means, "img_s": img_s}


def _start_epoch(loader: DataLoader, epoch: int, skip: int) -> Iterator:
    """The loader's iterator for `epoch`, positioned after its first `skip` micro-batches."""
    samplers = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if sampler is not None and all(sampler is not s for s in samplers):
            samplers.append(sampler)
    exact = False
    for sampler in samplers:
        # DistributedSampler and EpochSampler reshuffle per epoch from (seed, epoch), identically on every rank.
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if skip and hasattr(sampler, "set_start"):
            sampler.set_start(skip * loader_batch(loader))
            exact = True
    iterator = iter(loader)
    if skip and not exact:
        for _ in range(skip):  # no cheaper way for a sampler that cannot start mid-epoch
            next(iterator)
    return iterator


def loader_batch(loader: DataLoader) -> int:
    size = loader_batch_size(loader)
    if size is None:
        raise VitCompressError("cannot resume mid-epoch: the train loader does not say its batch size")
    return size


def _restored_totals(position: Position, run: Run) -> dict[str, Tensor]:
    # The saved sums are over all ranks; rank 0 carries them so the epoch-end all-reduce counts them once.
    if not position.totals or not run.info.main:
        return {name: torch.zeros((), dtype=torch.float64, device=run.device) for name in position.totals}
    return {name: torch.tensor(v, dtype=torch.float64, device=run.device) for name, v in position.totals.items()}


def _optimizer_step(
    run: Run, batches: Iterator, epoch: int, first: int, group: int
) -> tuple[list[dict[str, Any]], int, Tensor | None]:
    """Accumulate `group` micro-batches into one optimizer update; returns their parts, images and grad norm."""
    step_parts: list[dict[str, Any]] = []
    n_images = 0
    run.optimizer.zero_grad(set_to_none=True)
    for j in range(group):
        try:
            images, targets = next(batches)
        except StopIteration:
            break
        # Only the last micro-batch of a group all-reduces gradients; the others accumulate locally.
        last = j == group - 1
        sync = contextlib.nullcontext() if last or not hasattr(run.ddp_model, "no_sync") else run.ddp_model.no_sync()
        with sync:
            seed_everything(step_seed(run.cfg.seed, epoch, first + j, run.info.rank))
            loss, parts = _forward(run, images, targets)
            run.scaler.scale(loss / group).backward()
        step_parts.append({"loss": loss.detach(), **parts})
        n_images += len(images)
    if not step_parts:
        return step_parts, 0, None
    grad_norm = None
    if run.cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not fp16-scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, run.cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return step_parts, n_images, grad_norm


def _forward(run: Run, images: Tensor, targets: Tensor) -> tuple[Tensor, Mapping[str, Any]]:
    images = images.to(run.device, non_blocking=True)
    targets = targets.to(run.device, non_blocking=True)
    if run.mixup is not None:
        if len(images) % 2:
            raise VitCompressError(
                f"Mixup/CutMix pairs images, but a batch has {len(images)} (odd); use an even batch size and "
                "drop_last=True"
            )
        images, targets = run.mixup(images, targets)
    with run.autocast():
        return run.objective(run.ddp_model, images, targets)


def _log_step(run: Run, bar, epoch: int, step: int, lr: float, step_parts, grad_norm, img_s: float) -> None:
    values: dict[str, float] = {}
    for name in step_parts[0]:
        values[name] = sum(float(p[name]) for p in step_parts) / len(step_parts)
    record = {"kind": "step", "epoch": epoch, "step": step, "lr": lr, **values}
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    record["img_s"] = img_s * run.info.world_size
    _check_finite(record["loss"], epoch, step, run.device)
    run.logger.log(record)
    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("kind", "epoch", "step")})
    if run.verbose and bar.disable:
        tqdm.write(_summary(record, run.cfg.epochs))


def _maybe_checkpoint(run: Run, history: History, position: Position, totals: dict[str, Tensor]) -> None:
    """Checkpoint between steps when the step or time cadence says so, or a signal asked to stop (then raise).

    Under DDP the ranks agree first: each may have seen the signal at a different step, and only rank 0's
    clock counts, but every rank must take part in the collectives of a save.
    """
    cfg = run.cfg
    by_steps = cfg.checkpoint_every_steps is not None and position.step % cfg.checkpoint_every_steps == 0
    by_time = (
        run.info.main
        and cfg.checkpoint_every_minutes is not None
        and time.monotonic() - run.last_save >= 60 * cfg.checkpoint_every_minutes
    )
    stop = run.stop.set
    if run.info.distributed:
        flags = torch.tensor([float(stop), float(by_time), float(run.stop.signum or 0)], device=run.device)
        stop_n, time_n, signum = all_reduce_sum(flags).tolist()
        stop, by_time = stop_n > 0, time_n > 0
        if stop and run.stop.signum is None:
            run.stop.signum = int(signum / stop_n)
    end_of_epoch = position.batches_done >= run.batches_per_epoch
    if not (stop or ((by_steps or by_time) and not end_of_epoch)):
        return  # an epoch end checkpoints anyway, right after evaluation
    path = save_run(run, history, position, global_totals(totals))
    if stop:
        where = f"; checkpoint in {path}" if path is not None else ""
        raise TrainingInterrupted(
            f"stopped by {signal_name(run.stop.signum)} at epoch {position.epoch + 1} step {position.step}{where}; "
            "run the same command with --resume (resume=True) to continue exactly from here",
            run.stop.signum,
        )


def _accumulate(totals: dict[str, Tensor], values: Mapping[str, Any], device: torch.device) -> None:
    # Summed as device tensors: converting to float here would sync with the GPU every step.
    for name, value in values.items():
        value = torch.as_tensor(value, device=device).detach().double()
        totals[name] = totals[name] + value if name in totals else value
    totals["_batches"] = totals.get("_batches", torch.zeros((), dtype=torch.float64, device=device)) + 1


def _reduce_means(totals: dict[str, Tensor]) -> dict[str, float]:
    sums = global_totals(totals)
    if not sums:
        return {}
    batches = sums.pop("_batches")
    means = {n: s / batches for n, s in sums.items()}
    return {"loss": means.pop("loss"), **means}


def _check_finite(loss: float, epoch: int, step: int, device: torch.device) -> None:
    # Agreed over ranks: if only the rank that saw the NaN raised, the others would hang in an all-reduce.
    bad = all_reduce_sum(torch.tensor(0.0 if math.isfinite(loss) else 1.0, device=device))
    if bad.item():
        raise VitCompressError(
            f"loss became non-finite at epoch {epoch} step {step}; lower TrainConfig.lr, keep clip_grad on, "
            "or use amp='bf16' instead of 'fp16'"
        )


@torch.no_grad()
def _evaluate(run: Run, loader: DataLoader, evaluate_fn: EvaluateFn) -> dict[str, Any]:
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
