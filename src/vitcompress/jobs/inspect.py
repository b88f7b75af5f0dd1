"""`vitcompress eval` and `vitcompress profile`: measure a model without changing it."""

from __future__ import annotations

from typing import Any

from vitcompress.errors import VitCompressError
from vitcompress.jobs.common import input_size_of, loaders_for
from vitcompress.metrics import evaluate, profile
from vitcompress.metrics.profile import Profile
from vitcompress.models.resolve import resolve_model


def eval_job(
    model: str,
    data: str,
    arch: str | None = None,
    pretrained: bool = False,
    model_args: dict[str, Any] | None = None,
    batch_size: int = 128,
    workers: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Top-1/top-5/loss of `model` on the validation split of `data`."""
    net, extra = resolve_model(model, arch=arch, pretrained=pretrained, model_args=model_args)
    _, val_loader, info = loaders_for(net, data, extra, batch_size, workers, seed=0)
    if net.num_classes != info.num_classes:
        raise VitCompressError(
            f"{model} predicts {net.num_classes} classes but {info.name} has {info.num_classes}; "
            "evaluate it on the data it was trained for"
        )
    return evaluate(net.to(device), val_loader, device=device)


def profile_job(
    model: str,
    input_size: tuple[int, int, int] | None = None,
    arch: str | None = None,
    model_args: dict[str, Any] | None = None,
    latency: bool = False,
    batch_size: int = 1,
) -> Profile:
    """Params, MACs (attention matmuls counted) and optionally CPU latency of `model`."""
    net, _ = resolve_model(model, arch=arch, model_args=model_args)
    return profile(net, input_size or input_size_of(net), latency=latency, batch_size=batch_size)
