"""Data: train/val loaders over timm datasets, and the built-in offline `digits` and `cluttered-digits` datasets.

    train_loader, val_loader, info = build_loaders("digits", input_size=(3, 32, 32), batch_size=64)
    aug = AugmentConfig(aa="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.8, cutmix=1.0, smoothing=0.1)
    train_loader, val_loader, info = build_loaders(
        DataConfig("/data/imagenet", batch_size=128, workers=8), input_size=(3, 224, 224), aug=aug
    )
    mixup = build_mixup(aug, info.num_classes)  # None without Mixup/CutMix; the loss smooths by loss_smoothing(aug)

Spec forms: `digits`, `cluttered-digits` (built-in, `digits.py`, `cluttered.py`); an ImageFolder root (or
`folder:<path>`) with `train/` and `val/` class subfolders; `hfds:<path>` for a HuggingFace DatasetDict written
by `save_to_disk` (needs `pip install 'vitcompress[hf]'`).
"""

from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.data.info import DataInfo
from vitcompress.data.loaders import build_datasets, build_loaders, describe_data
from vitcompress.data.mixup import build_mixup, loss_smoothing
from vitcompress.data.samplers import EpochSampler, SeededDataset

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DataInfo",
    "EpochSampler",
    "SeededDataset",
    "build_datasets",
    "build_loaders",
    "build_mixup",
    "describe_data",
    "loss_smoothing",
]
