"""The built-in digits dataset: shapes, the fixed split, normalisation, augmentation and determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vitcompress.data import DataInfo, build_datasets, build_loaders, describe_data
from vitcompress.data.digits import DIGITS_MEAN, DIGITS_STD, load_split


def first_batches(loader: torch.utils.data.DataLoader, n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def test_batches_shapes_dtypes_and_info() -> None:
    train, val, info = build_loaders("digits", input_size=(3, 32, 32), batch_size=32)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert torch.isfinite(x).all()
    assert info.num_classes == 10 and info.name == "digits"
    assert info.input_size == (3, 32, 32)
    assert info.train_size + info.val_size == 1797
    assert info.train_size == len(train.dataset) and info.val_size == len(val.dataset)
    targets = torch.cat([y for _, y in val])
    assert targets.min() == 0 and targets.max() == 9
    assert len(targets) == info.val_size


@pytest.mark.parametrize("size", [(3, 32, 32), (1, 16, 16), (3, 12, 20), (1, 8, 8)])
def test_resize_to_requested_input_size(size: tuple[int, int, int]) -> None:
    train, val, info = build_loaders("digits", input_size=size, batch_size=8)
    for loader in (train, val):
        x, _ = next(iter(loader))
        assert x.shape == (8, *size)
    assert info.input_size == size and len(info.mean) == len(info.std) == size[0]
    if size[0] == 3:  # grey digits replicated, so the three channels are identical
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_split_is_fixed_stratified_and_disjoint() -> None:
    _, targets, train_idx, val_idx = load_split()
    assert len(train_idx) + len(val_idx) == 1797
    assert not set(train_idx) & set(val_idx)
    assert sorted([*train_idx, *val_idx]) == list(range(1797))
    val_counts = np.bincount(targets[val_idx], minlength=10)
    assert val_counts.min() >= 35 and val_counts.max() <= 37  # ~20% of each class's ~180 images


def test_shipped_digits_and_split_are_scikit_learns() -> None:
    # load_split reads the CSV and a stored split without importing scikit-learn; both must be its own.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from vitcompress.data.digits import SPLIT_SEED, VAL_FRACTION

    images, targets, train_idx, val_idx = load_split()
    digits = load_digits()
    np.testing.assert_array_equal(images, digits.images.astype(np.float32) / 16.0)
    np.testing.assert_array_equal(targets, digits.target)
    expected = train_test_split(np.arange(len(digits.target)), test_size=VAL_FRACTION, stratify=digits.target,
                                random_state=SPLIT_SEED)
    np.testing.assert_array_equal(train_idx, expected[0])
    np.testing.assert_array_equal(val_idx, expected[1])


def test_building_the_data_does_not_import_scikit_learn() -> None:
    code = ("import sys, vitcompress as vc; vc.build_loaders('cluttered-digits', input_size=(3, 32, 32)); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_val_set_does_not_depend_on_seed() -> None:
    _, val_a, _ = build_datasets("digits", (1, 16, 16), seed=0)
    _, val_b, _ = build_datasets("digits", (1, 16, 16), seed=123)
    assert torch.equal(val_a.images, val_b.images) and torch.equal(val_a.targets, val_b.targets)


def test_same_seed_same_batches_other_seed_differs() -> None:
    runs = [first_batches(build_loaders("digits", (3, 16, 16), batch_size=16, seed=s)[0]) for s in (0, 0, 1)]
    for (xa, ya), (xb, yb) in zip(runs[0], runs[1], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(runs[0][0][1], runs[2][0][1])


def test_same_seed_same_batches_with_workers() -> None:
    runs = [
        first_batches(build_loaders("digits", (1, 16, 16), batch_size=16, num_workers=2, seed=0)[0])
        for _ in range(2)
    ]
    for (xa, ya), (xb, yb) in zip(*runs, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_val_loader_is_ordered_and_unaugmented() -> None:
    _, val, _ = build_loaders("digits", (1, 16, 16), batch_size=64)
    first = torch.cat([x for x, _ in val])
    second = torch.cat([x for x, _ in val])
    assert torch.equal(first, second)


def test_augmentation_jitters_but_keeps_the_digit() -> None:
    plain, _, _ = build_datasets("digits", (1, 32, 32), train_augment=False)
    jittered, _, _ = build_datasets("digits", (1, 32, 32), train_augment=True)
    x0, y0 = plain[0]
    x1, y1 = jittered[0]
    assert y0 == y1 and not torch.equal(x0, x1)
    # Small affine jitter: still far more alike than two different digits are.
    corr = torch.corrcoef(torch.stack([x0.flatten(), x1.flatten()]))[0, 1]
    assert corr > 0.5


def test_default_normalisation_is_the_train_split_statistics() -> None:
    images, _, train_idx, _ = load_split()
    assert images[train_idx].mean() == pytest.approx(DIGITS_MEAN[0], abs=1e-3)
    assert images[train_idx].std() == pytest.approx(DIGITS_STD[0], abs=1e-3)
    train, _, _ = build_datasets("digits", (1, 8, 8), train_augment=False)
    x = torch.stack([image for image, _ in train.__getitems__(list(range(len(train))))])
    assert x.mean().item() == pytest.approx(0.0, abs=0.01)
    assert x.std().item() == pytest.approx(1.0, abs=0.01)


def test_mean_std_override_is_broadcast_to_channels() -> None:
    _, val, info = build_loaders("digits", (3, 16, 16), mean=(0.5,), std=(0.5,))
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.5, 0.5, 0.5)
    x, _ = next(iter(val))
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6


def test_describe_data_matches_build_loaders() -> None:
    info = describe_data("digits", (1, 16, 16))
    assert info == build_loaders("digits", (1, 16, 16))[2]


def test_data_info_round_trips_through_json() -> None:
    info = describe_data("digits", (3, 8, 8))
    assert DataInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_importing_data_loads_neither_sklearn_nor_datasets() -> None:
    # timm is left out: the top-level package may import it for the models; these two only data needs.
    code = "import sys, vitcompress.data; print([m for m in ('sklearn', 'datasets') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_loader_settings_from_data_config() -> None:
    from vitcompress.data import DataConfig, EpochSampler, SeededDataset

    cfg = DataConfig("digits", batch_size=32, workers=2, pin_mem=False, persistent_workers=False, prefetch_factor=3)
    train, val, _ = build_loaders(cfg, input_size=(1, 8, 8))
    for loader in (train, val):
        assert (loader.batch_size, loader.num_workers, loader.pin_memory) == (32, 2, False)
        assert not loader.persistent_workers and loader.prefetch_factor == 3
    assert isinstance(train.sampler, EpochSampler) and isinstance(train.dataset, SeededDataset)
    # Without workers torch refuses persistent workers and a prefetch factor, so they are not passed.
    train, _, _ = build_loaders(DataConfig("digits", prefetch_factor=3), input_size=(1, 8, 8))
    assert train.num_workers == 0 and train.prefetch_factor is None and not train.persistent_workers
    assert train.pin_memory == torch.cuda.is_available()  # pin_mem=None: pin when CUDA is there
