"""`vitcompress eval` and `vitcompress profile`: measure a model without changing it."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated, Any

from vitcompress.cli_args import Flags
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.errors import VitCompressError
from vitcompress.export.onnx import export_onnx
from vitcompress.jobs.common import input_size_of, loaders_for
from vitcompress.jobs.source import ModelSource, source_of
from vitcompress.metrics import evaluate, measure_latency, profile
from vitcompress.metrics.latency import RUNTIMES
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
    batch_size: list[int] | None = None,
    runtime: str | None = None,
    threads: int | None = None,
) -> list[Profile]:
    """Params, MACs (attention matmuls counted) and optionally CPU latency of `model`, one line per batch size.

    Args:
        model: The model to profile; a .onnx file too (timed in onnxruntime; params and MACs as export recorded).
        input_size: C H W of one image; default: the model's.
        latency: Also time the forward pass on CPU.
        batch_size: Batch sizes of the latency measurement, e.g. 1 32 (default 1).
        runtime: Where to time it: eager, compile (torch.compile) or onnxruntime (the model exported to ONNX and
            checked first); default eager, onnxruntime for a .onnx file.
        threads: CPU threads while timing; default: torch's current count.
    """
    batch_sizes = [batch_size] if isinstance(batch_size, int) else list(batch_size or [1])
    if runtime is not None and runtime not in RUNTIMES:  # before the model is built
        raise VitCompressError(f"--runtime {runtime} is not one of {', '.join(RUNTIMES)}")
    if not str(source_of(model).model).lower().endswith(".onnx"):
        net, _ = source_of(model).resolve()
        size = tuple(input_size) if input_size else input_size_of(net)
    else:  # an exported graph: no torch module to build, its input size is fixed in the graph
        net = source_of(model).model
        size = _graph_input_size(net, input_size)
    counted = profile(net, size)
    if not latency:
        return [counted]
    with tempfile.TemporaryDirectory() as tmp:
        if runtime == "onnxruntime" and not isinstance(net, str):  # export (and check) once for every batch size
            net = export_onnx(net, Path(tmp) / "model.onnx", input_size=size,
                              check_batch_size=max(batch_sizes) + 1).path
        timed = [measure_latency(net, size, batch_size=b, threads=threads, runtime=runtime) for b in batch_sizes]
    return [dataclasses.replace(counted, latency_ms=t.median_ms, batch_size=t.batch_size, runtime=t.runtime,
                                threads=t.threads) for t in timed]


def _graph_input_size(path: str, input_size: list[int] | None) -> tuple[int, int, int]:
    """The (C, H, W) fixed in an ONNX graph; a different --input-size is refused (the graph cannot take it)."""
    from vitcompress.export._ort import input_size_of_session, ort_session, recorded_counts

    recorded_counts(path)  # a missing or non-ONNX file fails here, in one line
    size = input_size_of_session(ort_session(path))
    if input_size and tuple(input_size) != size:
        raise VitCompressError(f"--input-size {' '.join(map(str, input_size))} does not match the ONNX graph's "
                               f"{size}; drop it or pass --input-size {' '.join(map(str, size))}")
    return size
