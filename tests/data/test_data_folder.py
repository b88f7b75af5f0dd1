"""ImageFolder datasets through timm's factories, and HuggingFace datasets saved with `save_to_disk`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vitcompress.data import build_loaders
from vitcompress.errors import VitCompressError


def check_batch(loader: torch.utils.data.DataLoader, size: tuple[int, int, int], num_classes: int) -> None:
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape[1:] == size
    assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
    assert 0 <= int(y.min()) and int(y.max()) < num_classes


@pytest.mark.parametrize("size", [(3, 32, 32), (1, 16, 20)])
def test_image_folder_via_timm(make_image_folder: Callable[..., Path], size: tuple[int, int, int]) -> None:
    root = make_image_folder()
    train, val, info = build_loaders(str(root), input_size=size, batch_size=4)
    assert info.num_classes == 3 and info.class_names == ("cat", "dog", "emu")
    assert (info.train_size, info.val_size) == (6, 6)
    assert info.name == f"folder:{root}" and len(info.mean) == size[0]
    check_batch(train, size, 3)
    check_batch(val, size, 3)
    assert sorted(int(t) for _, y in val for t in y) == [0, 0, 1, 1, 2, 2]


def test_folder_scheme_and_validation_dir(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder({"train": ["a", "b"], "validation": ["a", "b"]})
    _, val, info = build_loaders(f"folder:{root}", input_size=(3, 16, 16), batch_size=2)
    assert info.name == f"folder:{root}" and info.num_classes == 2 and info.val_size == 4
    check_batch(val, (3, 16, 16), 2)


def test_val_with_fewer_classes_keeps_train_indices(make_image_folder: Callable[..., Path]) -> None:
    root = make_image_folder({"train": ["cat", "dog", "emu"], "val": ["emu"]})
    _, val, info = build_loaders(str(root), input_size=(3, 16, 16), batch_size=8)
    assert info.num_classes == 3
    assert [int(t) for _, y in val for t in y] == [2, 2]


def test_folder_mean_std_override(make_image_folder: Callable[..., Path]) -> None:
    _, _, info = build_loaders(str(make_image_folder()), (3, 16, 16), mean=(0.5,), std=(0.25, 0.25, 0.25))
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize("val_split", ["validation", "val", "test"])
def test_hf_dataset_on_disk(make_hf_dataset: Callable[..., Path], val_split: str) -> None:
    root = make_hf_dataset(splits=("train", val_split))
    train, val, info = build_loaders(f"hfds:{root}", input_size=(3, 16, 16), batch_size=4)
    assert info.num_classes == 3 and info.class_names == ("ant", "bee", "cow")
    assert (info.train_size, info.val_size) == (6, 6) and info.name == f"hfds:{root}"
    check_batch(train, (3, 16, 16), 3)
    assert [int(t) for _, y in val for t in y] == [0, 1, 2, 0, 1, 2]


def test_hf_dataset_bare_path_grey_and_int_labels(make_hf_dataset: Callable[..., Path]) -> None:
    root = make_hf_dataset(class_label=False)
    train, _, info = build_loaders(str(root), input_size=(1, 12, 12), batch_size=3)
    assert info.name == f"hfds:{root}" and info.num_classes == 3 and info.class_names == ()
    check_batch(train, (1, 12, 12), 3)


def test_hf_dataset_needs_train_and_val(make_hf_dataset: Callable[..., Path]) -> None:
    root = make_hf_dataset(splits=("train",))
    with pytest.raises(VitCompressError, match="needs 'train' and one of"):
        build_loaders(f"hfds:{root}", input_size=(3, 16, 16))


def test_hf_single_split_is_rejected(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"label": [0, 1]}).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(VitCompressError, match="single split; save a DatasetDict"):
        build_loaders(f"hfds:{tmp_path / 'one'}", input_size=(3, 16, 16))


def test_hf_without_datasets_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(
        VitCompressError, match=r"need the `datasets` package; pip install 'vitcompress\[hf\]'"
    ):
        build_loaders(f"hfds:{tmp_path}", input_size=(3, 16, 16))
