"""The one shape of every training job: resolve, load, check, evaluate before, fit, evaluate after, save, report.

A job says only what is its own in two functions: `prepare` (what to train, with which objective, and which
models to score before training) and `summarize` (its report). Everything else, in the order that guarantees
nothing is written on bad input, lives here once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from vitcompress.data import DataInfo
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.data.mixup import build_mixup, check_mixup, loss_smoothing
from vitcompress.export import save
from vitcompress.jobs import common
from vitcompress.jobs.source import ModelSource
from vitcompress.metrics import evaluate
from vitcompress.models.drop_path import set_drop_path
from vitcompress.report import write_report
from vitcompress.report.run import render_run
from vitcompress.train import TrainConfig, fit
from vitcompress.train.distributed import DistInfo, cleanup


@dataclasses.dataclass
class Context:
    """What `prepare` gets: the resolved model and everything known about the run before training."""

    model: nn.Module
    extra: dict[str, Any]
    info: DataInfo
    dist: DistInfo
    smoothing: float
    """Label smoothing the ground-truth loss applies itself (0 when Mixup folds it into soft targets)."""


@dataclasses.dataclass
class Plan:
    """What a job trains and how."""

    model: nn.Module
    objective: Any
    before: dict[str, nn.Module] = dataclasses.field(default_factory=dict)
    """Models scored on the val split before training (the teacher, the original, the model as given)."""
    param_groups: list[dict[str, Any]] | None = None
    configs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The job's own settings as JSON (e.g. {"multiplex": ..., "distill": ...}): saved with the model, written
    to the report and checked on resume."""
    score_more: Callable[[Callable[[nn.Module], dict[str, float]]], Any] | None = None
    """After training, on every rank (evaluation all-reduces under torchrun): given a function that scores a
    model on the val split, what else the job measures (e.g. a search's budget curve); goes to `Outcome.more`."""


@dataclasses.dataclass
class Outcome:
    """What `summarize` gets after training."""

    plan: Plan
    info: DataInfo
    history: Any
    before: dict[str, dict[str, float]]
    after: dict[str, float]
    configs: dict[str, Any]
    """Every config of the run (the job's, data, augment and train) as JSON."""
    more: Any = None
    """What `Plan.score_more` returned (None without one)."""


Summary = tuple[dict[str, Any], str, dict[str, str]]  # report, title, Markdown tables


def run_training(
    source: ModelSource,
    out: str | Path,
    train: TrainConfig,
    data: DataConfig,
    aug: AugmentConfig,
    prepare: Callable[[Context], Plan],
    summarize: Callable[[Outcome], Summary],
    can_reset: Callable[[dict[str, Any]], bool] = lambda extra: not extra,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one training job; returns its report on rank 0 (an empty dict on the other ranks).

    Args:
        source: The model the job starts from.
        out: Output directory: model.safetensors + spec.json, report.md/json, metrics, checkpoint/.
        train: Optimisation settings.
        data: Data source and loader settings.
        aug: Augmentation and regularisation (Mixup, smoothing, drop-path, ...).
        prepare: Builds the `Plan` from the resolved model.
        summarize: Builds `(report, title, tables)` from the `Outcome`; may write more files into `out`.
        can_reset: Whether the source's head may be resized to the data, from its saved metadata.
        resume: Continue from `out`/checkpoint.
        progress: Show progress.
    """
    check_mixup(aug, batch_size=data.batch_size)  # before anything is built or written
    dist = common.start_job(train.seed)
    try:
        net, extra = source.resolve()
        train_loader, val_loader, info = common.loaders_for(
            net, data, extra, train.seed, aug=aug, distributed=dist.world_size > 1
        )
        common.check_classes(net, info, source.model, can_reset=can_reset(extra))
        plan = prepare(Context(net, extra, info, dist, loss_smoothing(aug)))
        mixup = build_mixup(aug, info.num_classes)
        if aug.drop_path is not None:
            set_drop_path(plan.model, aug.drop_path)
        before = {name: evaluate(m.to(dist.device), val_loader) for name, m in plan.before.items()}
        configs = {**plan.configs, "data_config": data.to_dict(), "augment": aug.to_dict()}
        run_meta = {"source": source.to_dict(), **configs}
        history = fit(
            plan.model, train_loader, val_loader, plan.objective, train, out_dir=out, resume=resume,
            device=dist.device, param_groups=plan.param_groups, progress=progress, mixup=mixup, run_meta=run_meta,
        )
        after = evaluate(plan.model, val_loader)
        more = plan.score_more(lambda m: evaluate(m.to(dist.device), val_loader)) if plan.score_more else None
        configs["train"] = train.to_dict()
        report: dict[str, Any] = {}
        if dist.rank == 0:
            # The source's own metadata (its normalisation, earlier surgeries) carries over; this run's settings win.
            save(plan.model, out, extra={**extra, **common.data_extra(info), **configs})
            report, title, tables = summarize(Outcome(plan, info, history, before, after, configs, more))
            report = {**report, **configs}
            write_report(out, report, title, tables)
            render_run(out)
        return report
    finally:
        cleanup()
