"""Checks and context managers shared by the metrics: input shapes, devices and eval mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from vitcompress.errors import VitCompressError


def validate_input_size(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int, int]:
    """Return `input_size` as a tuple after checking it against the model, before anything runs.

    Args:
        model: The model the input is meant for.
        input_size: `(channels, height, width)` of one image.

    Returns:
        The validated `(channels, height, width)`.

    Raises:
        VitCompressError: If the size is malformed or the model cannot take it.
    """
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else ()
    # bool is an int subclass; `(True, 32, 32)` is a bug, not a size.
    if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise VitCompressError(
            f"input_size must be 3 positive ints (channels, height, width), got {input_size!r}; "
            "pass e.g. input_size=(3, 224, 224)"
        )
    patch_embed = getattr(model, "patch_embed", None)
    proj = getattr(patch_embed, "proj", None)
    channels = getattr(proj, "in_channels", None)
    expected = fixed_input_size(model)
    if channels is not None and size[0] != channels:
        fix = expected if expected is not None else (channels, *size[1:])
        raise VitCompressError(
            f"input_size {size} has {size[0]} channels but the model's patch_embed takes {channels}; "
            f"pass input_size={fix}"
        )
    if expected is not None and size != expected:
        raise VitCompressError(
            f"input_size {size} does not match the model's {expected}; pass input_size={expected}"
        )
    return size  # type: ignore[return-value]


def fixed_input_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The only `(C, H, W)` a timm model accepts, or None if it takes any size (or we cannot tell).

    `pretrained_cfg['input_size']` is deliberately not used: timm keeps the pretrained default there
    even when the model was built with another `img_size`, so it is not a constraint.
    """
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is None:
        return None
    # timm's PatchEmbed asserts the exact size only when strict (ViT with dynamic_img_size is not).
    if not getattr(patch_embed, "strict_img_size", True) or getattr(model, "dynamic_img_size", False):
        return None
    proj = getattr(patch_embed, "proj", None)
    channels = getattr(proj, "in_channels", 3)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return (int(channels), int(height), int(width))


def check_positive_int(name: str, value: object) -> None:
    """Raise `VitCompressError` unless `value` is an int >= 1 (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VitCompressError(f"{name} must be a positive int, got {value!r}; pass e.g. {name}=1")


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating tensor (CPU float32 if it has none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def check_device(model: nn.Module, device: str | torch.device) -> torch.device:
    """Return `device` as a `torch.device` after checking the model already lives there.

    Metrics never move the model: moving is a side effect the caller should see in their own code.
    """
    device = torch.device(device)
    model_device, _ = model_device_dtype(model)
    same_index = device.index is None or model_device.index in (None, device.index)
    if any(True for _ in model.parameters()) and (model_device.type != device.type or not same_index):
        raise VitCompressError(
            f"model is on {model_device} but device={str(device)!r}; "
            f"call model.to({str(device)!r}) first or pass device={str(model_device)!r}"
        )
    return device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own flag.

    Restoring per module (not `model.train(was_training)`) keeps deliberately frozen submodules,
    e.g. a norm layer left in eval during fine-tuning, as the caller had them.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
