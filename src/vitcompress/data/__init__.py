"""Data: train/val loaders over timm datasets, and the built-in offline `digits` dataset.

    train_loader, val_loader, info = build_loaders("digits", input_size=(3, 32, 32), batch_size=64)

Spec forms: `digits`; an ImageFolder root (or `folder:<path>`) with `train/` and `val/` class subfolders;
`hfds:<path>` for a HuggingFace DatasetDict written by `save_to_disk` (needs `pip install 'vitcompress[hf]'`).
"""

from vitcompress.data.info import DataInfo
from vitcompress.data.loaders import build_datasets, build_loaders, describe_data

__all__ = ["DataInfo", "build_datasets", "build_loaders", "describe_data"]
