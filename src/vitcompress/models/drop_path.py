"""Set a model's stochastic-depth rate after it is built: plain, loaded, multiplexed, masked or extracted."""

from __future__ import annotations

from timm.layers import DropPath, calculate_drop_path_rates
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import transformer_layers
from vitcompress.models.spec import SPEC_ATTR, unwrap

BRANCHES = ("drop_path1", "drop_path2")


def set_drop_path(model: nn.Module, rate: float) -> nn.Module:
    """Give the blocks of `model` timm's drop-path rates for `rate`, in place, and return `model`.

    timm's rule (`drop_path_rate` of `create_model`): block i of D drops its residual branches with probability
    linearly rising from 0 to `rate`, over all blocks of all stages. A block's `drop_path1`/`drop_path2` module is
    replaced by a timm `DropPath` (an `Identity` where the rate is 0, as timm builds it), so the result is the
    model `create_model(..., drop_path_rate=rate)` would give. A model that carries a vitcompress spec gets the
    new rate in its spec too, so that a saved and loaded model rebuilds with it.

    Args:
        model: A timm ViT/Swin or a vitcompress model derived from one (its blocks have drop_path1/drop_path2).
        rate: The last block's rate, in [0, 1).

    Raises:
        VitCompressError: If the rate is out of range or the model has no such blocks.
    """
    if not 0 <= rate < 1:
        raise VitCompressError(f"drop_path={rate} must be in [0, 1), e.g. 0.1")
    try:
        layers = transformer_layers(model)
    except VitCompressError as e:
        raise VitCompressError(f"{type(unwrap(model)).__name__} has no transformer blocks to set drop_path on; "
                               "drop --drop-path") from e
    if not layers or not all(hasattr(layer, b) for layer in layers for b in BRANCHES):
        raise VitCompressError(f"{type(unwrap(model)).__name__}'s blocks have no drop_path1/drop_path2; "
                               "drop --drop-path")
    for layer, prob in zip(layers, calculate_drop_path_rates(rate, len(layers)), strict=True):
        for branch in BRANCHES:
            setattr(layer, branch, DropPath(prob) if prob > 0 else nn.Identity())
    spec = getattr(unwrap(model), SPEC_ATTR, None)
    if spec is not None:
        # The base is rebuilt first and every later step copies its blocks' drop paths, so the base holds the rate.
        spec["base"]["kwargs"]["drop_path_rate"] = float(layers[-1].drop_path1.drop_prob) if rate > 0 else 0.0
    return model


def drop_path_rates(model: nn.Module) -> list[float]:
    """Each block's drop-path rate, in execution order (0 for an `Identity`)."""
    return [float(getattr(layer.drop_path1, "drop_prob", 0.0)) for layer in transformer_layers(model)]
