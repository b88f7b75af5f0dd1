"""`DataInfo`: the facts about a dataset that a model and a trainer need, and nothing else."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What `build_loaders` built, in a form a checkpoint can carry next to the weights."""

    num_classes: int
    """Number of classes; targets are integers in `[0, num_classes)`."""
    input_size: tuple[int, int, int]
    """`(C, H, W)` of every image tensor the loaders yield."""
    mean: tuple[float, ...]
    """Per-channel mean subtracted from images in [0, 1] scale (one value per channel)."""
    std: tuple[float, ...]
    """Per-channel std images are divided by (one value per channel)."""
    train_size: int
    """Number of training samples (the whole split, not one rank's shard)."""
    val_size: int
    """Number of validation samples (the whole split, not one rank's shard)."""
    name: str
    """The data spec the loaders were built from, e.g. `digits` or `folder:/data/pets`."""
    class_names: tuple[str, ...] = ()
    """Class names in target order, where the source has them."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataInfo:
        """Inverse of `to_dict`; JSON lists come back as tuples so the result compares equal."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
