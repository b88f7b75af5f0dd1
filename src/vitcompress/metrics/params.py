"""Parameter counts that count a shared (tied) parameter once."""

from __future__ import annotations

from torch import nn
from torch.nn.parameter import UninitializedParameter

from vitcompress.errors import VitCompressError


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters, each unique `Parameter` counted once.

    Weight-multiplexed models register the same `Parameter` (or the same module) under several
    layers; counting by name would count those weights once per layer.

    Args:
        model: Any `nn.Module`.
        trainable_only: Count only parameters with `requires_grad=True`.

    Returns:
        The parameter count.

    Raises:
        VitCompressError: If the model still has uninitialized (lazy) parameters.
    """
    seen: set[int] = set()
    total = 0
    # remove_duplicate=False plus our own id() set makes the dedup explicit rather than a side effect
    # of `parameters()`' default.
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        if isinstance(param, UninitializedParameter):
            raise VitCompressError(
                f"parameter {name!r} is uninitialized (lazy module); run one forward pass before counting"
            )
        if trainable_only and not param.requires_grad:
            continue
        total += param.numel()
    return total
