"""Mixup/CutMix from timm (`timm.data.Mixup`), and the label smoothing the ground-truth loss must then use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitcompress.data.config import AugmentConfig
from vitcompress.errors import VitCompressError

if TYPE_CHECKING:
    from timm.data import Mixup


def check_mixup(aug: AugmentConfig, num_classes: int | None = None, batch_size: int | None = None) -> None:
    """Raise a one-line `VitCompressError` when Mixup/CutMix is on but cannot work; a no-op when it is off.

    Args:
        aug: The augmentation options.
        num_classes: Classes of the dataset, if known: mixing needs two.
        batch_size: Per-process batch size, if known: timm's Mixup pairs each image with its mirror in the
            batch, so the batch must be even.
    """
    if not aug.mixes:
        return
    if num_classes is not None and num_classes < 2:
        raise VitCompressError(
            f"Mixup/CutMix needs at least 2 classes but the dataset has {num_classes}; "
            "set mixup and cutmix to 0 (--mixup 0 --cutmix 0) or use data with more classes"
        )
    if batch_size is not None and batch_size % 2:
        raise VitCompressError(
            f"batch_size={batch_size} is odd, but Mixup/CutMix pairs each image with its mirror in the batch; "
            f"use an even batch size (e.g. --batch-size {batch_size + 1}) or set mixup and cutmix to 0"
        )


def build_mixup(aug: AugmentConfig, num_classes: int) -> Mixup | None:
    """timm's `Mixup` for the options in `aug`, or None when Mixup and CutMix are off.

    Call it on a whole batch, `images, soft_targets = mixup(images, targets)`, before the forward. With Mixup
    on, the targets are soft `(B, num_classes)` distributions with `aug.smoothing` already folded into them,
    so the ground-truth loss is a soft-target cross-entropy with no smoothing of its own; without Mixup the
    targets stay class indices and the loss smooths by `aug.smoothing`. `loss_smoothing(aug)` gives the value
    to pass to the loss in both cases. Mixup draws from NumPy's global generator (and `random`'s), so a run
    that resumes exactly restores those.

    Args:
        aug: The augmentation options (`mixup`, `cutmix`, `cutmix_minmax`, `mixup_prob`, `mixup_switch_prob`,
            `mixup_mode`, `smoothing`).
        num_classes: Number of classes of the targets.

    Returns:
        A `timm.data.Mixup`, or None when `aug.mixes` is False.

    Raises:
        VitCompressError: Mixup/CutMix is on and the dataset has fewer than 2 classes.
    """
    if not aug.mixes:
        return None
    check_mixup(aug, num_classes)
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=aug.mixup,
        cutmix_alpha=aug.cutmix,
        cutmix_minmax=None if aug.cutmix_minmax is None else tuple(aug.cutmix_minmax),
        prob=aug.mixup_prob,
        switch_prob=aug.mixup_switch_prob,
        mode=aug.mixup_mode,
        label_smoothing=aug.smoothing,
        num_classes=int(num_classes),
    )


def loss_smoothing(aug: AugmentConfig) -> float:
    """The label smoothing the ground-truth loss applies itself: 0 with Mixup on (the soft targets carry
    `aug.smoothing` already), `aug.smoothing` otherwise."""
    return 0.0 if aug.mixes else float(aug.smoothing)
