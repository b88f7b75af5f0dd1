"""Pieces every job shares: data for a model, head/class checks, profiling rows."""

from __future__ import annotations

import os
import sys
from typing import Any

from torch import nn

from vitcompress.data import DataInfo, build_loaders
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.errors import VitCompressError
from vitcompress.jobs.source import ModelSource
from vitcompress.metrics import count_macs, count_params, measure_latency
from vitcompress.metrics._checks import fixed_input_size
from vitcompress.report import model_row
from vitcompress.train import seed_everything
from vitcompress.train.distributed import DistInfo, setup_distributed


def start_job(seed: int) -> DistInfo:
    """Join the process group if launched by torchrun, then seed everything from the run's seed.

    Seeding comes before any model is built: fresh weights (a new head, a timm model from scratch) come from
    torch's global generator, which torch seeds differently in every process.
    """
    dist = setup_distributed()
    seed_everything(seed)
    return dist


def input_size_of(model: nn.Module) -> tuple[int, int, int]:
    size = fixed_input_size(model)
    if size is None:
        raise VitCompressError("the model accepts any input size; pass --input-size C H W")
    return size


def loaders_for(
    model: nn.Module,
    data: DataConfig,
    extra: dict[str, Any],
    seed: int,
    aug: AugmentConfig | None = None,
    distributed: bool = False,
):
    """Loaders at the model's input size, normalised the way the model was trained (if it was saved by us)."""
    norm = extra.get("data", {})  # DataInfo of a model saved by a job; the DataConfig is "data_config"
    kwargs = dict(input_size=input_size_of(model), seed=seed, distributed=distributed, mean=norm.get("mean"),
                  std=norm.get("std"))
    return build_loaders(data, aug=aug, **kwargs)


def resolve_teacher(source: ModelSource, info: DataInfo, flag: str) -> nn.Module:
    """A teacher model (timm name, saved dir or checkpoint) that predicts the data's classes, in eval mode."""
    if not source.pretrained and not os.path.exists(source.model):
        # Offline tests build teachers by name on purpose; a user almost never means a random teacher.
        print(f"vitcompress: note: {flag} {source.model} is a timm name without {flag}-pretrained, so it starts "
              f"from random weights; add {flag}-pretrained to distil from timm's pretrained model", file=sys.stderr)
    teacher, _ = source.resolve()
    if getattr(teacher, "num_classes", None) != info.num_classes:
        raise VitCompressError(
            f"{flag} {source.model} predicts {getattr(teacher, 'num_classes', '?')} classes, the data has "
            f"{info.num_classes}; distil from a teacher trained on this data"
        )
    return teacher.eval()


def check_classes(model: nn.Module, info: DataInfo, ref: str, can_reset: bool) -> None:
    """Give a fresh timm model the data's number of classes; refuse a trained model whose head does not fit."""
    if model.num_classes == info.num_classes:
        return
    if not can_reset:
        raise VitCompressError(
            f"{ref} predicts {model.num_classes} classes but {info.name} has {info.num_classes}; "
            "use a model trained on this data (or fine-tune one with `vitcompress train`)"
        )
    model.reset_classifier(info.num_classes)


def describe_row(
    name: str, model: nn.Module, metrics: dict[str, float], latency: bool, threads: int | None = None
) -> dict[str, Any]:
    size = input_size_of(model)
    latency_ms = measure_latency(model, size, batch_size=1, threads=threads).median_ms if latency else None
    return model_row(name, count_params(model), count_macs(model, size), metrics, latency_ms)


def data_extra(info: DataInfo) -> dict[str, Any]:
    return {"data": info.to_dict()}


def loss_rows(records: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-epoch loss components (and val top-1) for a report table."""
    return [{"epoch": r["epoch"], **{k: r[k] for k in keys if k in r},
             **({"val top-1": r["val_top1"]} if "val_top1" in r else {})} for r in records]
