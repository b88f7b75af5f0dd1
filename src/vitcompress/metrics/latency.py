"""Wall-clock latency of one forward pass, measured with `torch.utils.benchmark`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

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
    """CPU threads torch used while timing."""

    @property
    def per_image_ms(self) -> float:
        """Median milliseconds per image (`median_ms / batch_size`)."""
        return self.median_ms / self.batch_size


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int],
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 1.0,
    device: str | torch.device = "cpu",
    warmup: int = 3,
) -> LatencyResult:
    """Time the model's forward pass in eval mode without gradients.

    `Timer.blocked_autorange` picks how many calls to time per block, so short forwards are not
    dominated by timer overhead; on CUDA it synchronizes before reading the clock.

    Args:
        model: The model to time; it must already be on `device`.
        input_size: `(channels, height, width)` of one image.
        batch_size: Images per forward pass.
        threads: CPU threads for torch while timing; defaults to `torch.get_num_threads()`.
        min_run_time: Seconds of timed calls to collect at least.
        device: Where the random input batch is created.
        warmup: Untimed forward passes first, so one-off allocation and kernel selection are excluded.

    Returns:
        The median and spread of the forward time over the batch.

    Raises:
        VitCompressError: If an argument is invalid or the model is not on `device`.
    """
    size = validate_input_size(model, input_size)
    check_positive_int("batch_size", batch_size)
    if threads is not None:
        check_positive_int("threads", threads)
    if min_run_time <= 0:
        raise VitCompressError(f"min_run_time must be > 0 seconds, got {min_run_time!r}; pass e.g. 1.0")
    device = check_device(model, device)
    threads = threads or torch.get_num_threads()
    _, dtype = model_device_dtype(model)
    images = torch.randn(batch_size, *size, device=device, dtype=dtype)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # warmup under the timed thread count: pools size themselves on first use
    try:
        with eval_mode(model), torch.no_grad():
            for _ in range(warmup):
                model(images)
            scope = {"model": model, "images": images}
            timer = _timer_class()(stmt="model(images)", globals=scope, num_threads=threads)
            measurement = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        torch.set_num_threads(previous_threads)
    return LatencyResult(
        median_ms=measurement.median * 1e3,
        iqr_ms=measurement.iqr * 1e3,
        batch_size=batch_size,
        threads=threads,
    )


def _timer_class():
    """`torch.utils.benchmark.Timer`, imported on first use.

    Importing it loads torch.utils.cpp_extension, which on a CUDA build of torch without a CUDA runtime logs a
    "No CUDA runtime is found" warning that means nothing for a CPU timing; that logger is quietened.
    """
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.benchmark import Timer

    return Timer
