"""Fixtures that build tiny datasets on disk, so the folder and HF paths are tested without any download."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def random_image(rng: np.random.Generator, height: int = 20, width: int = 24) -> Image.Image:
    """A small random RGB image; odd sizes so the resize in the transform is exercised."""
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_image_folder(splits={"train": ["cat", "dog"], "val": ["cat"]}, per_class=2)` -> root."""

    def make(
        splits: dict[str, Sequence[str]] | None = None, per_class: int = 2, root: Path | None = None
    ) -> Path:
        root = root or tmp_path / "imagefolder"
        splits = (
            splits if splits is not None else {"train": ["cat", "dog", "emu"], "val": ["cat", "dog", "emu"]}
        )
        rng = np.random.default_rng(0)
        for split, classes in splits.items():
            for name in classes:
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    random_image(rng).save(folder / f"{i}.png")
        root.mkdir(parents=True, exist_ok=True)
        return root

    return make


@pytest.fixture
def make_hf_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a tiny DatasetDict written by `save_to_disk`; `class_label=False` stores plain int labels."""
    datasets = pytest.importorskip("datasets")

    def make(
        splits: Sequence[str] = ("train", "validation"), rows: int = 6, class_label: bool = True
    ) -> Path:
        rng = np.random.default_rng(0)
        label_type = (
            datasets.ClassLabel(names=["ant", "bee", "cow"]) if class_label else datasets.Value("int64")
        )
        features = datasets.Features(
            {"image": datasets.Image(), "label": label_type, "note": datasets.Value("string")}
        )
        parts = {
            split: datasets.Dataset.from_dict(
                {
                    "image": [random_image(rng) for _ in range(rows)],
                    "label": [i % 3 for i in range(rows)],
                    "note": ["x"] * rows,
                },
                features=features,
            )
            for split in splits
        }
        root = tmp_path / "hfds"
        datasets.DatasetDict(parts).save_to_disk(str(root))
        return root

    return make
