"""`profile`: parameters, MACs and optionally latency of a model in one call."""

from __future__ import annotations

import dataclasses
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

    params: int
    """Unique parameters (tied weights counted once)."""
    macs: int
    """Multiply-accumulates per image (FLOPs = 2 x MACs)."""
    input_size: tuple[int, int, int]
    """`(channels, height, width)` the MACs and latency were measured at."""
    latency_ms: float | None = None
    """Median forward time for a batch of `batch_size`, in milliseconds; None if not measured."""
    batch_size: int = 1
    """Images per timed forward pass."""

    def __str__(self) -> str:
        parts = [f"params {_si(self.params)}", f"MACs {_si(self.macs)}"]
        if self.latency_ms is not None:
            parts.append(f"latency {self.latency_ms:.2f} ms (batch {self.batch_size})")
        return " | ".join(parts)


def profile(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    latency: bool = False,
    batch_size: int = 1,
) -> Profile:
    """Count parameters and MACs, and optionally time the forward pass.

    The input size is checked against the model before anything runs, so a wrong size fails with a
    message naming the right one instead of a shape error deep inside the model.

    Args:
        model: The model to profile.
        input_size: `(channels, height, width)` of one image.
        latency: Also measure latency on the model's device (takes about a second).
        batch_size: Images per timed forward pass; MACs are always per image.

    Returns:
        The profile; `print` it for a one-line summary such as `params 22.05 M | MACs 4.60 G`.

    Raises:
        VitCompressError: If `input_size` does not fit the model.
    """
    size = validate_input_size(model, input_size)
    latency_ms = None
    if latency:
        device, _ = model_device_dtype(model)
        latency_ms = measure_latency(model, size, batch_size=batch_size, device=device).median_ms
    return Profile(
        params=count_params(model),
        macs=count_macs(model, size),
        input_size=size,
        latency_ms=latency_ms,
        batch_size=batch_size,
    )
