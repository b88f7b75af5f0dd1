"""`profile`: parameters, MACs and optionally latency of a model (or an exported ONNX graph) in one call."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from torch import nn

from vitcompress.metrics._checks import model_device_dtype, validate_input_size
from vitcompress.metrics.latency import measure_latency
from vitcompress.metrics.macs import count_macs
from vitcompress.metrics.params import count_params


def _si(value: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Size and cost of a model for one input size."""

    params: int | None
    """Unique parameters (tied weights counted once); None for an ONNX graph not written by `export_onnx`."""
    macs: int | None
    """Multiply-accumulates per image (FLOPs = 2 x MACs); None for an ONNX graph not written by `export_onnx`."""
    input_size: tuple[int, int, int]
    """`(channels, height, width)` the MACs and latency were measured at."""
    latency_ms: float | None = None
    """Median forward time for a batch of `batch_size`, in milliseconds; None if not measured."""
    batch_size: int = 1
    """Images per timed forward pass."""
    runtime: str | None = None
    """Runtime the latency was measured in (`eager`, `compile`, `onnxruntime`); None: eager by default, unstated."""
    threads: int | None = None
    """CPU threads of the timed runtime; None: not stated (torch's current count)."""

    def __str__(self) -> str:
        parts = [f"params {'n/a' if self.params is None else _si(self.params)}",
                 f"MACs {'n/a' if self.macs is None else _si(self.macs)}"]
        if self.latency_ms is not None:
            how = [f"batch {self.batch_size}", *([self.runtime] if self.runtime else []),
                   *([f"{self.threads} thread{'s' * (self.threads > 1)}"] if self.threads else [])]
            parts.append(f"latency {self.latency_ms:.2f} ms ({', '.join(how)})")
        return " | ".join(parts)


def profile(
    model: nn.Module | str | os.PathLike,
    input_size: Sequence[int] = (3, 224, 224),
    latency: bool = False,
    batch_size: int = 1,
    runtime: str | None = None,
    threads: int | None = None,
) -> Profile:
    """Count parameters and MACs, and optionally time the forward pass.

    The input size is checked against the model before anything runs, so a wrong size fails with a
    message naming the right one instead of a shape error deep inside the model.

    Args:
        model: The model to profile, or a `.onnx` file (its params and MACs are those `export_onnx` recorded in
            it, else None; it is timed in onnxruntime).
        input_size: `(channels, height, width)` of one image.
        latency: Also measure latency on the model's device (takes about a second).
        batch_size: Images per timed forward pass; MACs are always per image.
        runtime: Where to time it: `eager` (default for a module), `compile` or `onnxruntime` (see
            `measure_latency`).
        threads: CPU threads while timing; default: torch's current count.

    Returns:
        The profile; `print` it for a one-line summary such as `params 22.05 M | MACs 4.60 G`.

    Raises:
        VitCompressError: If `input_size` does not fit the model.
    """
    if isinstance(model, (str, os.PathLike)):
        from vitcompress.export._ort import recorded_counts

        size, (params, macs) = tuple(input_size), recorded_counts(model)
    else:
        size = validate_input_size(model, input_size)
        params, macs = count_params(model), count_macs(model, size)
    if not latency:
        return Profile(params=params, macs=macs, input_size=size, batch_size=batch_size)  # type: ignore[arg-type]
    device = "cpu" if isinstance(model, (str, os.PathLike)) else model_device_dtype(model)[0]
    timed = measure_latency(model, size, batch_size=batch_size, device=device, runtime=runtime, threads=threads)
    return Profile(params=params, macs=macs, input_size=size, latency_ms=timed.median_ms,  # type: ignore[arg-type]
                   batch_size=batch_size, runtime=None if timed.runtime == "eager" and runtime is None else
                   timed.runtime, threads=threads)
