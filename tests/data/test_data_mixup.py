"""`build_mixup` is timm's Mixup, `loss_smoothing` says who smooths, and the train loader keeps batches even."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.data import Mixup

from vitcompress.data import AugmentConfig, build_loaders, build_mixup, loss_smoothing
from vitcompress.errors import VitCompressError


@pytest.mark.parametrize(
    "fields",
    [
        dict(mixup=0.8, cutmix=1.0, smoothing=0.1),  # the DeiT recipe
        dict(mixup=0.8, mixup_mode="pair", mixup_prob=0.6),
        dict(cutmix=1.0, mixup_mode="elem", mixup_switch_prob=0.2, smoothing=0.2),
        dict(cutmix_minmax=[0.3, 0.8]),
    ],
)
def test_build_mixup_matches_timm(fields: dict) -> None:
    aug = AugmentConfig(**fields)
    ours = build_mixup(aug, num_classes=5)
    theirs = Mixup(
        mixup_alpha=aug.mixup,
        cutmix_alpha=aug.cutmix,
        cutmix_minmax=aug.cutmix_minmax,
        prob=aug.mixup_prob,
        switch_prob=aug.mixup_switch_prob,
        mode=aug.mixup_mode,
        label_smoothing=aug.smoothing,
        num_classes=5,
    )
    images, targets = torch.randn(8, 3, 12, 12), torch.arange(8) % 5
    for seed in range(4):
        np.random.seed(seed)
        got = ours(images.clone(), targets)  # timm mixes the images in place
        np.random.seed(seed)
        want = theirs(images.clone(), targets)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert got[1].shape == (8, 5)


def test_no_mixup_and_the_loss_smoothing() -> None:
    assert build_mixup(AugmentConfig(smoothing=0.1), num_classes=10) is None
    assert build_mixup(AugmentConfig(mixup=0.8, mixup_prob=0.0), num_classes=10) is None
    assert loss_smoothing(AugmentConfig(smoothing=0.1)) == 0.1
    assert loss_smoothing(AugmentConfig(smoothing=0.1, mixup=0.8)) == 0.0  # folded into the soft targets


def test_mixing_loader_drops_the_last_odd_batch() -> None:
    aug = AugmentConfig(mixup=0.8, cutmix=1.0)
    train, val, info = build_loaders("digits", input_size=(1, 8, 8), batch_size=100, aug=aug)
    assert train.drop_last and not val.drop_last
    sizes = [len(y) for _, y in train]
    assert sizes == [100] * (info.train_size // 100)
    plain, _, _ = build_loaders("digits", input_size=(1, 8, 8), batch_size=100)
    assert not plain.drop_last


def one_line_error(match: str, call: Callable[[], object]) -> None:
    with pytest.raises(VitCompressError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_mixup_on_one_class(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder({"train": ["cat"], "val": ["cat"]}, per_class=4)
    aug = AugmentConfig(mixup=0.8)
    one_line_error("needs at least 2 classes but the dataset has 1", lambda: build_mixup(aug, num_classes=1))
    one_line_error(
        r"needs at least 2 classes.*--mixup 0 --cutmix 0",
        lambda: build_loaders(str(root), input_size=(3, 16, 16), batch_size=2, aug=aug),
    )


def test_mixup_with_an_odd_batch() -> None:
    one_line_error(
        r"batch_size=7 is odd, but Mixup/CutMix pairs each image with its mirror.*--batch-size 8",
        lambda: build_loaders("digits", input_size=(1, 8, 8), batch_size=7, aug=AugmentConfig(cutmix=1.0)),
    )


def test_mixup_with_less_than_one_batch(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder()  # 6 train images
    one_line_error(
        r"gives 6 samples per process, fewer than one batch of 8",
        lambda: build_loaders(str(root), input_size=(3, 16, 16), batch_size=8, aug=AugmentConfig(mixup=0.8)),
    )
