"""ImageFolder datasets (`root/train/<class>/*.png`, `root/val/<class>/*.png`) through timm's factories."""

from __future__ import annotations

import os

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_dataset, get_img_extensions
from torch.utils.data import Dataset

from vitcompress.data.augment import timm_transforms
from vitcompress.data.config import AugmentConfig
from vitcompress.data.info import DataInfo
from vitcompress.data.spec import resolve_norm
from vitcompress.errors import VitCompressError

VAL_DIRS = ("val", "validation")


def image_mode(channels: int) -> str:
    """PIL mode that decodes to `channels` channels."""
    return "L" if channels == 1 else "RGB"


def _has_image(folder: str, extensions: set[str]) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in extensions for f in files):
            return True
    return False


def _class_dirs(split_dir: str, extensions: set[str]) -> list[str]:
    """Class subfolder names of one split, checked to be non-empty (timm would silently drop empty ones)."""
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise VitCompressError(
            f"{split_dir} has no class subfolders; put images in {split_dir}/<class_name>/*.jpg"
        )
    empty = [n for n in names if not _has_image(os.path.join(split_dir, n), extensions)]
    if empty:
        raise VitCompressError(
            f"class folder(s) {empty} in {split_dir} hold no images ({', '.join(sorted(extensions))}); "
            "add images or remove the folders"
        )
    return names


def check_folder(root: str) -> tuple[str, str]:
    """The `(train_dir, val_dir)` of an ImageFolder root, or a `VitCompressError` saying what is missing."""
    if not os.path.isdir(root):
        raise VitCompressError(
            f"dataset path {root} is not a directory; pass an ImageFolder root with train/ and val/"
        )
    train_dir = os.path.join(root, "train")
    val_dir = next((os.path.join(root, d) for d in VAL_DIRS if os.path.isdir(os.path.join(root, d))), None)
    found = (("train/", train_dir), ("val/", val_dir))
    missing = [name for name, d in found if d is None or not os.path.isdir(d)]
    if missing:
        raise VitCompressError(
            f"dataset folder {root} has no {' or '.join(missing)} subfolder; an ImageFolder root needs "
            "train/<class>/*.jpg and val/<class>/*.jpg (val/ may be named validation/)"
        )
    extensions = get_img_extensions(as_set=True)
    train_classes = _class_dirs(train_dir, extensions)
    unknown = sorted(set(_class_dirs(val_dir, extensions)) - set(train_classes))
    if unknown:
        raise VitCompressError(
            f"{val_dir} has class folder(s) {unknown} that {train_dir} lacks; use the same classes in both"
        )
    return train_dir, val_dir


def build_folder(
    root: str,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    train_augment: bool = True,
    name: str | None = None,
    aug: AugmentConfig | None = None,
) -> tuple[Dataset, Dataset, DataInfo]:
    """Train and val `timm.data.ImageDataset`s with timm's train/eval transforms.

    Args:
        root: Folder holding `train/` and `val/` (or `validation/`) class subfolders.
        input_size: `(C, H, W)`; C=1 decodes images as greyscale.
        mean: Per-channel mean; defaults to ImageNet's (what pretrained timm ViTs expect).
        std: Per-channel std; defaults to ImageNet's.
        train_augment: timm's training augmentation on train; False gives train the eval transform.
        name: Name recorded in `DataInfo`; defaults to `folder:<root>`.
        aug: Augmentation options for `timm.data.create_transform`; None: timm's standard training
            transform (random resized crop, flip, colour jitter 0.4, bicubic) and eval crop_pct.

    Returns:
        `(train_dataset, val_dataset, info)`.
    """
    train_dir, val_dir = check_folder(root)
    channels = input_size[0]
    mean_c = resolve_norm(mean, IMAGENET_DEFAULT_MEAN, channels, "mean")
    std_c = resolve_norm(std, IMAGENET_DEFAULT_STD, channels, "std")
    train_tf, eval_tf = timm_transforms(input_size, mean_c, std_c, train_augment, aug)
    mode = image_mode(channels)
    # search_split=False: the split folders are resolved already, and timm's search falls back to the root.
    train = create_dataset("", root=train_dir, search_split=False, transform=train_tf, input_img_mode=mode)
    class_to_idx = dict(train.reader.class_to_idx)
    # The train mapping for val too, so a class missing from val/ cannot shift the indices of the others.
    val = create_dataset(
        "", root=val_dir, search_split=False, class_map=class_to_idx, transform=eval_tf, input_img_mode=mode
    )
    info = DataInfo(
        num_classes=len(class_to_idx),
        input_size=input_size,
        mean=mean_c,
        std=std_c,
        train_size=len(train),
        val_size=len(val),
        name=name or f"folder:{root}",
        class_names=tuple(sorted(class_to_idx, key=class_to_idx.get)),
    )
    return train, val, info
