"""Each augmentation option gives exactly what timm's own `create_transform` gives for the same seed.

The expected side is built independently, from timm's parts only: `create_transform` with timm's argument
names and `create_dataset` on the same folder, seeded as `SeededDataset` seeds a sample.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_dataset, create_transform
from timm.data.random_erasing import RandomErasing

from vitcompress.data import AugmentConfig, build_datasets, build_loaders
from vitcompress.data.augment import _posterize, timm_transforms
from vitcompress.data.samplers import seed_all

SIZE = (3, 16, 16)
SEEDS = (0, 1, 2)
DEIT = dict(aa="rand-m9-mstd0.5-inc1", reprob=0.25, color_jitter=0.3)

# (our AugmentConfig fields, the same request in timm's create_transform names)
OPTIONS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"aa": "rand-m9-mstd0.5-inc1"}, {"auto_augment": "rand-m9-mstd0.5-inc1"}),
    ({"aa": "rand-m7-n3-mstd1-tweights"}, {"auto_augment": "rand-m7-n3-mstd1-tweights"}),
    ({"aa": "original"}, {"auto_augment": "original"}),
    ({"aa": "augmix-m5-w4-d2"}, {"auto_augment": "augmix-m5-w4-d2"}),
    ({"reprob": 1.0, "remode": "pixel", "recount": 3}, {"re_prob": 1.0, "re_mode": "pixel", "re_count": 3}),
    ({"reprob": 0.5, "remode": "const"}, {"re_prob": 0.5, "re_mode": "const"}),
    ({"reprob": 1.0, "remode": "rand"}, {"re_prob": 1.0, "re_mode": "rand"}),
    ({"color_jitter": 0.3}, {"color_jitter": 0.3}),
    ({"color_jitter": 0.0}, {"color_jitter": 0.0}),
    ({"scale": [0.5, 1.0], "ratio": [0.8, 1.25]}, {"scale": (0.5, 1.0), "ratio": (0.8, 1.25)}),
    ({"hflip": 1.0}, {"hflip": 1.0}),
    ({"hflip": 0.0}, {"hflip": 0.0}),
    ({"train_interpolation": "bilinear"}, {"interpolation": "bilinear"}),
    ({"train_interpolation": "random"}, {"interpolation": "random"}),
    (DEIT, {"auto_augment": DEIT["aa"], "re_prob": 0.25, "re_mode": "pixel", "color_jitter": 0.3}),
]


def timm_train(size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...], **kwargs: Any) -> Any:
    """timm's training transform: its own defaults, with ours (bicubic) where we always differ."""
    return create_transform(size, is_training=True, interpolation=kwargs.pop("interpolation", "bicubic"),
                            mean=mean, std=std, **kwargs)


@pytest.mark.parametrize(("ours", "theirs"), OPTIONS, ids=[str(o) or "defaults" for o, _ in OPTIONS])
def test_train_option_matches_timm(make_image_folder: Callable[..., Path], ours: dict, theirs: dict) -> None:
    root = make_image_folder()
    train, _, info = build_loaders(str(root), input_size=SIZE, batch_size=2, aug=AugmentConfig(**ours))
    expected = create_dataset("", root=str(root / "train"), search_split=False, input_img_mode="RGB",
                              transform=timm_train(SIZE, info.mean, info.std, **theirs))
    for index, seed in zip((0, 3, 5), SEEDS, strict=True):
        seed_all(seed)
        want = expected[index][0]
        torch.testing.assert_close(train.dataset[(index, seed)][0], want, rtol=0, atol=0)


def test_grey_images_match_timm(make_image_folder: Callable[..., Path]) -> None:
    root, size = make_image_folder(), (1, 16, 20)
    aug = AugmentConfig(aa="rand-m9-mstd0.5-inc1", reprob=1.0)
    train, _, info = build_loaders(str(root), input_size=size, batch_size=2, aug=aug)
    assert len(info.mean) == 1
    tf = timm_train(size, info.mean, info.std, auto_augment=aug.aa, re_prob=1.0, re_mode="pixel")
    expected = create_dataset("", root=str(root / "train"), search_split=False, input_img_mode="L", transform=tf)
    for seed in SEEDS:
        seed_all(seed)
        torch.testing.assert_close(train.dataset[(1, seed)][0], expected[1][0], rtol=0, atol=0)


@pytest.mark.parametrize("crop_pct", [None, 0.9, 1.0])
def test_eval_crop_pct_matches_timm(make_image_folder: Callable[..., Path], crop_pct: float | None) -> None:
    root = make_image_folder()
    _, val, info = build_loaders(str(root), input_size=SIZE, batch_size=2, aug=AugmentConfig(crop_pct=crop_pct))
    tf = create_transform(SIZE, is_training=False, interpolation="bicubic", crop_pct=crop_pct,
                          mean=info.mean, std=info.std)
    expected = create_dataset("", root=str(root / "val"), search_split=False, input_img_mode="RGB", transform=tf)
    for index in range(len(expected)):
        torch.testing.assert_close(val.dataset[index][0], expected[index][0], rtol=0, atol=0)


def test_no_train_augment_is_the_eval_transform(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder()
    train, _, _ = build_datasets(str(root), SIZE, train_augment=False, aug=AugmentConfig(**DEIT, crop_pct=0.9))
    tf = create_transform(SIZE, is_training=False, interpolation="bicubic", crop_pct=0.9)
    expected = create_dataset("", root=str(root / "train"), search_split=False, input_img_mode="RGB", transform=tf)
    torch.testing.assert_close(train[2][0], expected[2][0], rtol=0, atol=0)


def test_hf_dataset_option_matches_timm(make_hf_dataset: Callable[..., Path]) -> None:
    datasets = pytest.importorskip("datasets")
    root = make_hf_dataset()
    aug = AugmentConfig(**DEIT)
    train, _, info = build_loaders(f"hfds:{root}", input_size=SIZE, batch_size=2, aug=aug)
    tf = timm_train(SIZE, info.mean, info.std, auto_augment=aug.aa, re_prob=0.25, re_mode="pixel", color_jitter=0.3)
    rows = datasets.load_from_disk(str(root))["train"]
    for index, seed in zip((0, 4), SEEDS, strict=False):
        seed_all(seed)
        want = tf(rows[index]["image"].convert("RGB"))
        torch.testing.assert_close(train.dataset[(index, seed)][0], want, rtol=0, atol=0)


def test_posterize_to_zero_bits_is_black_not_a_crash() -> None:
    # Pillow >= 13 rejects 0 bits, which timm's RandAugment (inc1) and AutoAugment v0 ask for at top magnitude.
    image = Image.new("RGB", (8, 8), (200, 100, 50))
    assert _posterize(image, 0).getextrema() == ((0, 0),) * 3
    assert _posterize(image, 4).getpixel((0, 0)) == (192, 96, 48)
    train_tf, _ = timm_transforms(SIZE, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, aug=AugmentConfig(aa="v0"))
    for seed in range(400):  # v0 asks for 0 bits in about 2% of images
        seed_all(seed)
        train_tf(image)


# ---------------------------------------------------------------- digits


def digits_train(aug: AugmentConfig | None, size: tuple[int, int, int] = (1, 16, 16)) -> Any:
    return build_datasets("digits", size, aug=aug)[0]


def test_digits_jitter_draws_from_the_global_generator() -> None:
    train = digits_train(None)
    assert train.per_image is None and train.erase is None and train.augment is not None
    torch.manual_seed(7)
    first = train.__getitems__([0, 1])
    torch.manual_seed(7)
    again = train.__getitems__([0, 1])
    other = train.__getitems__([0, 1])
    assert torch.equal(first[0][0], again[0][0]) and not torch.equal(first[0][0], other[0][0])


def test_digits_random_erasing_is_timms_on_the_batch() -> None:
    aug = AugmentConfig(reprob=1.0, remode="pixel", recount=2)
    erased, plain = digits_train(aug), digits_train(None)
    assert erased.per_image is None  # erasing alone stays on batched tensors
    seed_all(3)
    got = torch.stack([x for x, _ in erased.__getitems__([0, 1, 2, 3])])
    seed_all(3)
    want = torch.stack([x for x, _ in plain.__getitems__([0, 1, 2, 3])])
    RandomErasing(1.0, mode="pixel", max_count=2, device="cpu")(want)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_digits_flip_is_timms_after_the_jitter() -> None:
    flipped, plain = digits_train(AugmentConfig(hflip=1.0)), digits_train(None)
    seed_all(4)
    got = torch.stack([x for x, _ in flipped.__getitems__([5, 6])])
    seed_all(4)
    want = torch.stack([x for x, _ in plain.__getitems__([5, 6])]).flip(-1)
    # The per-image path goes through 8-bit PIL images: equal up to half a grey level.
    torch.testing.assert_close(got, want, rtol=0, atol=0.5 / 255 / plain.std.item() + 1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_auto_augment_and_colour_jitter(channels: int) -> None:
    size = (channels, 16, 16)
    for aug in (AugmentConfig(aa="rand-m9-mstd0.5-inc1", reprob=0.25), AugmentConfig(color_jitter=0.4)):
        train, plain = digits_train(aug, size), digits_train(None, size)
        assert train.per_image is not None and train.augment is not None  # jitter kept, options added
        seed_all(5)
        a = torch.stack([x for x, _ in train.__getitems__(list(range(8)))])
        seed_all(5)
        b = torch.stack([x for x, _ in train.__getitems__(list(range(8)))])
        seed_all(5)
        c = torch.stack([x for x, _ in plain.__getitems__(list(range(8)))])
        assert a.shape == (8, *size) and torch.equal(a, b) and not torch.allclose(a, c, atol=0.1)


def test_digits_random_resized_crop_replaces_the_jitter() -> None:
    train = digits_train(AugmentConfig(scale=[0.6, 1.0]))
    assert train.augment is None and train.per_image is not None
    x, _ = train[0]
    assert x.shape == (1, 16, 16)
