"""`vitcompress eval` and `vitcompress profile`: measure a model without changing it."""

from __future__ import annotations

from typing import Annotated, Any

from vitcompress.cli_args import Flags
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.errors import VitCompressError
from vitcompress.jobs.common import input_size_of, loaders_for
from vitcompress.jobs.source import ModelSource, source_of
from vitcompress.metrics import evaluate, profile
from vitcompress.metrics.profile import Profile


def eval_job(
    model: ModelSource | str,
    data: DataConfig | None = None,
    aug: Annotated[AugmentConfig | None, Flags(only=("crop_pct",))] = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Top-1/top-5/loss of `model` on the validation split of the data.

    Args:
        model: The model to evaluate.
        data: Data (its batch_size is the eval batch).
        aug: Eval transform.
        device: Where to run, e.g. cpu or cuda.
    """
    source, data = source_of(model), data or DataConfig()
    net, extra = source.resolve()
    _, val_loader, info = loaders_for(net, data, extra, seed=0, aug=aug)
    if net.num_classes != info.num_classes:
        raise VitCompressError(
            f"{source.model} predicts {net.num_classes} classes but {info.name} has {info.num_classes}; "
            "evaluate it on the data it was trained for"
        )
    return evaluate(net.to(device), val_loader, device=device)


def profile_job(
    model: ModelSource | str,
    input_size: list[int] | None = None,
    latency: bool = False,
    batch_size: int = 1,
) -> Profile:
    """Params, MACs (attention matmuls counted) and optionally CPU latency of `model`.

    Args:
        model: The model to profile.
        input_size: C H W of one image; default: the model's.
        latency: Also time the forward pass on CPU.
        batch_size: Batch size of the latency measurement.
    """
    net, _ = source_of(model).resolve()
    return profile(net, tuple(input_size) if input_size else input_size_of(net), latency=latency,
                   batch_size=batch_size)
