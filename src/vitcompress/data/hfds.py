"""HuggingFace datasets saved on disk (`DatasetDict.save_to_disk`), with timm's transforms.

timm's `hfds/` reader goes through `datasets.load_dataset`, which is meant for hub names and data files:
depending on the `datasets` version it rejects a `save_to_disk` folder or re-imports it into a cache.
`load_from_disk` memory-maps the arrow files as they are, so a small `Dataset` around it is faster and
version-proof.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from vitcompress.data.augment import timm_transforms
from vitcompress.data.config import AugmentConfig
from vitcompress.data.folder import image_mode
from vitcompress.data.info import DataInfo
from vitcompress.data.spec import resolve_norm
from vitcompress.errors import VitCompressError

VAL_SPLITS = ("validation", "val", "test")
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label", "target")


class HfImageDataset(Dataset):
    """`(image, target)` pairs from one split of an on-disk HF dataset.

    Args:
        split: A `datasets.Dataset`.
        image_column: Column of `datasets.Image` feature.
        label_column: Column of integer class indices.
        transform: Applied to the decoded PIL image.
        mode: PIL mode images are converted to before the transform.
    """

    def __init__(self, split: Any, image_column: str, label_column: str, transform: Any, mode: str) -> None:
        # Only the two columns we read, so rows do not decode unrelated (possibly large) fields.
        self.split = split.select_columns([image_column, label_column])
        self.image_column = image_column
        self.label_column = label_column
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = self.split[int(index)]
        image = self.transform(row[self.image_column].convert(self.mode))
        return image, int(row[self.label_column])


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise VitCompressError(
            "HF datasets need the `datasets` package; pip install 'vitcompress[hf]'"
        ) from None
    return datasets


def _pick_column(
    split: Any, candidates: tuple[str, ...], feature_type: type, what: str, path: str, typed_only: bool
) -> str:
    """A conventional column name if present (of `feature_type` if `typed_only`), else the first typed one."""
    features = split.features
    typed = [name for name, feature in features.items() if isinstance(feature, feature_type)]
    named = [name for name in candidates if name in features and (not typed_only or name in typed)]
    if named or typed:
        return (named or typed)[0]
    raise VitCompressError(
        f"HF dataset {path} has no {what} column (columns: {sorted(features)}); "
        f"add a '{candidates[0]}' column of type datasets.{feature_type.__name__}"
    )


def _num_classes(split: Any, label_column: str) -> tuple[int, tuple[str, ...]]:
    feature = split.features[label_column]
    names = getattr(feature, "names", None)
    if names:
        return len(names), tuple(names)
    # Plain integer labels: the classes are whatever occurs in train (reads one column, not the images).
    return int(max(split[label_column])) + 1, ()


def load_splits(path: str) -> tuple[Any, Any, Any]:
    """`(datasets_module, train_split, val_split)` of a `save_to_disk` folder; the first of VAL_SPLITS."""
    datasets = _import_datasets()
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as err:
        raise VitCompressError(
            f"{path} is not a dataset written by save_to_disk ({err}); pass a save_to_disk folder"
        ) from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise VitCompressError(
            f"HF dataset {path} is a single split; save a DatasetDict with 'train' and 'validation' splits"
        )
    val_name = next((s for s in VAL_SPLITS if s in loaded), None)
    if "train" not in loaded or val_name is None:
        raise VitCompressError(
            f"HF dataset {path} has splits {sorted(loaded)}; it needs 'train' and one of {list(VAL_SPLITS)}"
        )
    return datasets, loaded["train"], loaded[val_name]


def build_hfds(
    path: str,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    train_augment: bool = True,
    aug: AugmentConfig | None = None,
) -> tuple[Dataset, Dataset, DataInfo]:
    """Train and val datasets from a `save_to_disk` DatasetDict, with timm's train/eval transforms.

    Args:
        path: Folder written by `DatasetDict.save_to_disk`, with `train` and `validation` (or `val`, `test`).
        input_size: `(C, H, W)`; C=1 decodes images as greyscale.
        mean: Per-channel mean; defaults to ImageNet's.
        std: Per-channel std; defaults to ImageNet's.
        train_augment: timm's training augmentation on the train split.
        aug: Augmentation options for `timm.data.create_transform`; None: timm's standard transforms.

    Returns:
        `(train_dataset, val_dataset, info)`.

    Raises:
        VitCompressError: `datasets` is missing, or the folder lacks the splits or columns needed.
    """
    datasets, train_split, val_split = load_splits(path)
    # Images must be an Image feature (decoded to PIL); labels may be ClassLabel or plain integers.
    image_col = _pick_column(train_split, IMAGE_COLUMNS, datasets.Image, "image", path, typed_only=True)
    label_col = _pick_column(train_split, LABEL_COLUMNS, datasets.ClassLabel, "label", path, typed_only=False)
    for column in (image_col, label_col):
        if column not in val_split.features:
            raise VitCompressError(
                f"HF dataset {path}: the val split lacks column '{column}'; give both splits that column"
            )
    num_classes, class_names = _num_classes(train_split, label_col)
    channels = input_size[0]
    mean_c = resolve_norm(mean, IMAGENET_DEFAULT_MEAN, channels, "mean")
    std_c = resolve_norm(std, IMAGENET_DEFAULT_STD, channels, "std")
    train_tf, eval_tf = timm_transforms(input_size, mean_c, std_c, train_augment, aug)
    mode = image_mode(channels)
    train = HfImageDataset(train_split, image_col, label_col, train_tf, mode)
    val = HfImageDataset(val_split, image_col, label_col, eval_tf, mode)
    info = DataInfo(
        num_classes=num_classes,
        input_size=input_size,
        mean=mean_c,
        std=std_c,
        train_size=len(train),
        val_size=len(val),
        name=f"hfds:{path}",
        class_names=class_names,
    )
    return train, val, info
