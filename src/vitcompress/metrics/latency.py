"""Wall-clock latency of one forward pass in torch eager, torch.compile or onnxruntime, with one harness.

Every runtime is timed the same way: the same seeded batch, the same untimed warm-up passes, and
`torch.utils.benchmark.Timer.blocked_autorange` over a callable, so the numbers of different runtimes compare.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics._checks import (
    check_device,
    check_positive_int,
    eval_mode,
    model_device_dtype,
    validate_input_size,
)


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass over a batch."""

    median_ms: float
    """Median time of one forward pass over the whole batch, in milliseconds."""
    iqr_ms: float
    """Interquartile range of the timed blocks, in milliseconds: the run-to-run spread."""
    batch_size: int
    """Images per forward pass."""
    threads: int
    """CPU threads the runtime used while timing (torch's, or onnxruntime's intra-op pool)."""
    runtime: str = "eager"
    """`eager` (torch), `compile` (torch.compile, default inductor) or `onnxruntime` (CPU provider)."""

    @property
    def per_image_ms(self) -> float:
        """Median milliseconds per image (`median_ms / batch_size`)."""
        return self.median_ms / self.batch_size


RUNTIMES = ("eager", "compile", "onnxruntime")


def measure_latency(
    model: nn.Module | str | os.PathLike,
    input_size: Sequence[int],
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 1.0,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    runtime: str | None = None,
) -> LatencyResult:
    """Time the model's forward pass in eval mode without gradients.

    `Timer.blocked_autorange` picks how many calls to time per block, so short forwards are not
    dominated by timer overhead; on CUDA it synchronizes before reading the clock.

    Args:
        model: The model to time; it must already be on `device`. A path to a `.onnx` file runs in onnxruntime.
        input_size: `(channels, height, width)` of one image.
        batch_size: Images per forward pass.
        threads: CPU threads while timing (torch's, or onnxruntime's intra-op pool); defaults to
            `torch.get_num_threads()`.
        min_run_time: Seconds of timed calls to collect at least.
        device: Where the random input batch is created (torch runtimes; onnxruntime runs on CPU).
        warmup: Untimed forward passes first, so one-off allocation and kernel selection are excluded (and, for
            `compile`, the compilation itself, which happens on the first pass).
        runtime: `eager` (default for a module), `compile` (`torch.compile`), or `onnxruntime` (default for a
            `.onnx` path): a module is then exported with `export_onnx`, checked against torch, and timed on CPU.

    Returns:
        The median and spread of the forward time over the batch.

    Raises:
        VitCompressError: If an argument is invalid, the model is not on `device`, or the runtime cannot run it.
    """
    is_graph = isinstance(model, (str, os.PathLike))
    runtime = runtime or ("onnxruntime" if is_graph else "eager")
    if runtime not in RUNTIMES:
        raise VitCompressError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if is_graph and runtime != "onnxruntime":
        raise VitCompressError(f"{model} is an ONNX graph: it runs in onnxruntime only, not runtime={runtime!r}")
    check_positive_int("batch_size", batch_size)
    if threads is not None:
        check_positive_int("threads", threads)
    if min_run_time <= 0:
        raise VitCompressError(f"min_run_time must be > 0 seconds, got {min_run_time!r}; pass e.g. 1.0")
    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        ms = _onnxruntime_times(model, input_size, batch_size, threads, min_run_time, warmup)
    else:
        size = validate_input_size(model, input_size)
        device = check_device(model, device)
        _, dtype = model_device_dtype(model)
        images = torch.randn(batch_size, *size, device=device, dtype=dtype)
        with eval_mode(model), torch.no_grad():
            forward = torch.compile(model) if runtime == "compile" else model
            # torch.compile compiles on the first call: at least one untimed pass, or the compile is timed
            ms = _time(forward, images, threads, min_run_time, max(warmup, 1) if runtime == "compile" else warmup)
    return LatencyResult(median_ms=ms[0], iqr_ms=ms[1], batch_size=batch_size, threads=threads, runtime=runtime)


def _onnxruntime_times(model: nn.Module | str | os.PathLike, input_size: Sequence[int], batch_size: int,
                       threads: int, min_run_time: float, warmup: int) -> tuple[float, float]:
    """Time an ONNX file, or a module exported (and checked) to a temporary one, in onnxruntime."""
    from vitcompress.export._ort import input_size_of_session, numpy_dtype, ort_session

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, nn.Module):
            from vitcompress.export.onnx import export_onnx

            check_device(model, "cpu")
            size = validate_input_size(model, input_size)
            model = export_onnx(model, Path(tmp) / "model.onnx", input_size=size,
                                check_batch_size=batch_size + 1).path
        elif not Path(model).is_file():
            raise VitCompressError(f"ONNX file {model} does not exist; check the path")
        session = ort_session(model, threads=threads)
    size = input_size_of_session(session)
    if tuple(input_size) != size:
        raise VitCompressError(f"input_size {tuple(input_size)} does not match the ONNX graph's {size}; "
                               f"pass input_size={size}")
    name = session.get_inputs()[0].name
    images = torch.randn(batch_size, *size).numpy().astype(numpy_dtype(session))
    return _time(lambda x: session.run(None, {name: x}), images, threads, min_run_time, warmup)


def _time(forward: Callable[[Any], Any], images: Any, threads: int, min_run_time: float,
          warmup: int) -> tuple[float, float]:
    """Median and IQR in ms of `forward(images)`, after `warmup` untimed calls, under `threads` torch threads."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # warmup under the timed thread count: pools size themselves on first use
    try:
        for _ in range(warmup):
            forward(images)
        scope = {"forward": forward, "images": images}
        timer = _timer_class()(stmt="forward(images)", globals=scope, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        torch.set_num_threads(previous_threads)
    return measurement.median * 1e3, measurement.iqr * 1e3


def _timer_class():
    """`torch.utils.benchmark.Timer`, imported on first use.

    Importing it loads torch.utils.cpp_extension, which on a CUDA build of torch without a CUDA runtime logs a
    "No CUDA runtime is found" warning that means nothing for a CPU timing; that logger is quietened.
    """
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    return Timer
