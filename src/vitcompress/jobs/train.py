"""`vitcompress train`: train or fine-tune a plain timm model (e.g. a teacher on the built-in data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcompress.export import save
from vitcompress.jobs.common import check_classes, data_extra, describe_row, loaders_for, start_job
from vitcompress.metrics import evaluate
from vitcompress.models.resolve import resolve_model
from vitcompress.report import markdown_table, write_report
from vitcompress.train import CrossEntropyObjective, TrainConfig, fit
from vitcompress.train.distributed import cleanup


def train_job(
    model: str,
    data: str,
    out: str | Path,
    train: TrainConfig,
    arch: str | None = None,
    pretrained: bool = False,
    model_args: dict[str, Any] | None = None,
    batch_size: int = 64,
    workers: int = 0,
    resume: bool = False,
    label_smoothing: float = 0.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` on `data`, save it to `out` (loadable with `vitcompress.load`) with a report."""
    dist = start_job(train.seed)
    try:
        net, extra = resolve_model(model, arch=arch, pretrained=pretrained, model_args=model_args)
        train_loader, val_loader, info = loaders_for(
            net, data, extra, batch_size, workers, train.seed, distributed=dist.world_size > 1
        )
        check_classes(net, info, model, can_reset=not extra)
        history = fit(
            net, train_loader, val_loader, CrossEntropyObjective(label_smoothing), train, out_dir=out,
            resume=resume, device=dist.device, progress=progress,
        )
        metrics = evaluate(net, val_loader, device=dist.device)
        report: dict[str, Any] = {}
        if dist.rank == 0:
            save(net, out, extra={**extra, **data_extra(info), "train": train.to_dict()})
            row = describe_row(model, net, metrics, latency=False)
            report = {"model": row, "val": metrics, "epochs": history.records}
            write_report(out, report, f"train {model} on {info.name}", {"model": markdown_table([row])})
        return report
    finally:
        cleanup()
