"""`vitcompress train`: train or fine-tune a plain timm model (e.g. a teacher on the built-in data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.jobs.common import describe_row
from vitcompress.jobs.skeleton import Context, Outcome, Plan, Summary, run_training
from vitcompress.jobs.source import ModelSource, source_of
from vitcompress.report import markdown_table
from vitcompress.train import CrossEntropyObjective, TrainConfig


def train_job(
    model: ModelSource | str,
    out: str | Path,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    aug: AugmentConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` on the data with cross-entropy, save it to `out` (loadable with `vitcompress.load`).

    Args:
        model: The model to train; a timm name built here gets a head for the data's classes.
        out: Output directory (model, report, metrics, checkpoint).
        train: Training.
        data: Data.
        aug: Augmentation and regularisation.
        resume: Continue the run in <out>/checkpoint.
        progress: Show a progress bar.
    """
    source = source_of(model)

    def prepare(ctx: Context) -> Plan:
        return Plan(ctx.model, CrossEntropyObjective(ctx.smoothing))

    def summarize(o: Outcome) -> Summary:
        row = describe_row(source.model, o.plan.model, o.after, latency=False)
        report = {"model": row, "val": o.after, "epochs": o.history.records}
        return report, f"train {source.model} on {o.info.name}", {"model": markdown_table([row])}

    return run_training(source, out, train or TrainConfig(), data or DataConfig(), aug or AugmentConfig(),
                        prepare, summarize, resume=resume, progress=progress)
