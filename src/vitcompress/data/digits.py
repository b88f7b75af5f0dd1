"""The built-in dataset: scikit-learn's 8x8 handwritten digits, preprocessed once into tensors.

It ships with scikit-learn, so examples, tests and benchmarks run offline. The split is fixed (stratified
80/20 with an internal seed) so every run and benchmark scores the same 360 val images, whatever `seed`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, get_worker_info

from vitcompress.data.info import DataInfo
from vitcompress.data.spec import resolve_norm

NUM_CLASSES = 10
VAL_FRACTION = 0.2
SPLIT_SEED = 0
# Pixel mean/std of the train split at native 8x8 resolution, scaled to [0, 1]. Fixed constants (not
# recomputed per input size) so a checkpoint's normalisation does not depend on its training resolution.
DIGITS_MEAN = (0.305,)
DIGITS_STD = (0.376,)


@dataclasses.dataclass(frozen=True)
class DigitsAugment:
    """Cheap random affine jitter; no flips, since a mirrored 2 or 5 is not a 2 or 5."""

    max_translate: float = 0.1
    """Largest shift, as a fraction of the image side."""
    scale: tuple[float, float] = (0.9, 1.1)
    """Range of the zoom factor."""
    max_rotate_deg: float = 10.0
    """Largest rotation; small enough that a 6 never becomes a 9."""

    def theta(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """`n` random `(2, 3)` affine matrices for `F.affine_grid` (they map output to input coordinates)."""
        u = torch.rand(n, 4, generator=generator) * 2 - 1  # uniform in [-1, 1)
        angle = math.radians(self.max_rotate_deg) * u[:, 0]
        lo, hi = self.scale
        zoom = lo + (hi - lo) * (u[:, 1] + 1) / 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Normalised coordinates span 2 units per image side, hence the factor 2 on the shift.
        tx, ty = 2 * self.max_translate * u[:, 2], 2 * self.max_translate * u[:, 3]
        return torch.stack([cos, -sin, tx, sin, cos, ty], dim=1).view(n, 2, 3)


class DigitsDataset(Dataset):
    """In-memory `(image, target)` pairs; images are stored once in [0, 1] and normalised when fetched.

    The DataLoader fetches whole batches through `__getitems__`, so jitter and normalisation run as batched
    ops: per-sample calls to tiny multi-threaded kernels cost milliseconds each on a busy 2-core machine.

    Args:
        images: `(N, 1, H, W)` float images in [0, 1], already resized.
        targets: `(N,)` int64 class indices.
        channels: Number of channels to replicate the grey image to.
        mean: Per-channel mean, `channels` values.
        std: Per-channel std, `channels` values.
        augment: Random jitter applied before normalisation, or None for evaluation.
        seed: Seeds the jitter when loading in the main process.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: DigitsAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.targets = targets
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The samples at `indices`, as the list of pairs that the default collate function expects."""
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.augment is not None:
            images = self._jitter(images)
        # Jitter before normalising: zero padding is then the digits' own background, not the mean.
        images = (images.expand(-1, self.channels, -1, -1) - self.mean) / self.std
        return list(zip(images, self.targets[index], strict=True))

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        # Inside a DataLoader worker, torch has seeded the global generator from the loader's generator and
        # the worker id; our own generator would be copied into every worker and repeat one jitter in each.
        generator = self.generator if get_worker_info() is None else None
        theta = self.augment.theta(len(images), generator)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(images, targets, train_idx, val_idx)`: all 1797 images in [0, 1] and the fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values are counts 0..16
    train_idx, val_idx = train_test_split(
        np.arange(len(digits.target)),
        test_size=VAL_FRACTION,
        stratify=digits.target,
        random_state=SPLIT_SEED,
    )
    return images, digits.target, train_idx, val_idx


def _resize(images: np.ndarray, height: int, width: int) -> torch.Tensor:
    x = torch.from_numpy(images).unsqueeze(1)
    if x.shape[-2:] == (height, width):
        return x.contiguous()
    # Bicubic overshoots at the strokes' edges; clamp keeps the [0, 1] range the normalisation assumes.
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp_(0, 1)


def build_digits(
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    train_augment: bool = True,
    seed: int = 0,
) -> tuple[DigitsDataset, DigitsDataset, DataInfo]:
    """Train and val datasets for the built-in digits, resized to `input_size` once, up front.

    Args:
        input_size: `(C, H, W)`, C in {1, 3}; the grey digits are replicated to C channels.
        mean: Per-channel mean (one value or C); defaults to `DIGITS_MEAN`.
        std: Per-channel std (one value or C); defaults to `DIGITS_STD`.
        train_augment: Apply `DigitsAugment` jitter to the train split.
        seed: Seeds the jitter (the split itself never depends on it).

    Returns:
        `(train_dataset, val_dataset, info)`.
    """
    channels, height, width = input_size
    mean_c = resolve_norm(mean, DIGITS_MEAN, channels, "mean")
    std_c = resolve_norm(std, DIGITS_STD, channels, "std")
    images, targets, train_idx, val_idx = load_split()
    targets = torch.from_numpy(targets).long()
    augment = DigitsAugment() if train_augment else None
    norm = dict(channels=channels, mean=mean_c, std=std_c)
    # Split before resizing: at 224x224 only the resized splits (~360 MB in all) are held, not twice that.
    train = DigitsDataset(
        _resize(images[train_idx], height, width), targets[train_idx], augment=augment, seed=seed, **norm
    )
    val = DigitsDataset(_resize(images[val_idx], height, width), targets[val_idx], **norm)
    info = DataInfo(
        num_classes=NUM_CLASSES,
        input_size=(channels, height, width),
        mean=mean_c,
        std=std_c,
        train_size=len(train),
        val_size=len(val),
        name="digits",
        class_names=tuple(str(i) for i in range(NUM_CLASSES)),
    )
    return train, val, info
