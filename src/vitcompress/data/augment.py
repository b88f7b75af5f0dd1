"""Train and eval transforms from timm's own factory (`timm.data.create_transform`), driven by `AugmentConfig`.

Nothing here re-implements an augmentation: this module maps config fields to timm's arguments, checks the
auto-augment policy string before any data is touched (timm would fail later with a bare assert, or silently
ignore a misspelt section), and works around one incompatibility between timm's posterize op and Pillow >= 13.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vitcompress.data.config import AugmentConfig
from vitcompress.data.policy import check_aa_policy
from vitcompress.errors import VitCompressError

# Today's behaviour for an unset field, on image folders (the digits have their own, see `digits.py`).
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_HFLIP = 0.5
DEFAULT_COLOR_JITTER = 0.4


def _posterize(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
    """timm's posterize op, with 0 bits giving the black image that Pillow < 13 returned.

    RandAugment's `inc1` ops (the DeiT policy) and AutoAugment v0 ask for 0 bits at the top magnitude; Pillow 13
    raises a ValueError there, which would end a training run after a few hundred images.
    """
    from PIL import Image
    from timm.data import auto_augment

    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def _fix_posterize(transform: Any) -> None:
    """Point every timm posterize op inside `transform` (a Compose, or an auto-augment) at `_posterize`."""
    from timm.data import auto_augment

    for part in getattr(transform, "transforms", [transform]):
        ops = getattr(part, "ops", None) or [op for sub in getattr(part, "policy", []) for op in sub]
        for op in ops:
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize


def train_kwargs(
    aug: AugmentConfig,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    hflip: float = DEFAULT_HFLIP,
    color_jitter: float | None = DEFAULT_COLOR_JITTER,
) -> dict[str, Any]:
    """`create_transform` arguments for the training transform; `hflip`/`color_jitter` fill unset fields."""
    jitter = color_jitter if aug.color_jitter is None else aug.color_jitter
    return dict(
        input_size=input_size,
        is_training=True,
        mean=mean,
        std=std,
        interpolation=aug.train_interpolation or DEFAULT_INTERPOLATION,
        hflip=hflip if aug.hflip is None else aug.hflip,
        # 0 means off; timm would still build a ColorJitter that changes nothing.
        color_jitter=jitter or None,
        scale=None if aug.scale is None else tuple(aug.scale),
        ratio=None if aug.ratio is None else tuple(aug.ratio),
        auto_augment=aug.aa,
        re_prob=aug.reprob,
        re_mode=aug.remode,
        re_count=aug.recount,
    )


def eval_kwargs(
    aug: AugmentConfig, input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> dict[str, Any]:
    """`create_transform` arguments for the eval transform: resize to size / crop_pct, centre crop."""
    return dict(
        input_size=input_size,
        is_training=False,
        mean=mean,
        std=std,
        interpolation=DEFAULT_INTERPOLATION,
        crop_pct=aug.crop_pct,
    )


def create(**kwargs: Any) -> Any:
    """`timm.data.create_transform(**kwargs)` with the posterize fix, and timm's errors as one line."""
    from timm.data import create_transform

    check_aa_policy(kwargs.get("auto_augment"))
    try:
        transform = create_transform(**kwargs)
    except (AssertionError, ValueError, KeyError) as err:  # what timm raises for arguments it cannot use
        raise VitCompressError(f"timm could not build the transform ({err}); check the augmentation options") from None
    for part in transform if isinstance(transform, tuple) else (transform,):
        _fix_posterize(part)
    return transform


def timm_transforms(
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    train_augment: bool = True,
    aug: AugmentConfig | None = None,
) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """timm's `(train, eval)` transforms for images decoded by PIL (image folders, HF datasets).

    Args:
        input_size: `(C, H, W)` of the output tensors.
        mean: Per-channel normalisation mean (C values).
        std: Per-channel normalisation std (C values).
        train_augment: False gives the train split the eval transform (no randomness at all).
        aug: The augmentation options; None, or an unset field, is timm's standard training transform
            (random resized crop, flip 0.5, colour jitter 0.4, bicubic).

    Returns:
        `(train_transform, eval_transform)`.
    """
    aug = aug or AugmentConfig()
    eval_tf = create(**eval_kwargs(aug, input_size, mean, std))
    train_tf = create(**train_kwargs(aug, input_size, mean, std)) if train_augment else eval_tf
    return train_tf, eval_tf
