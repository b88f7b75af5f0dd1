"""The built-in dataset: scikit-learn's 8x8 handwritten digits, preprocessed once into tensors.

It ships with scikit-learn, so examples, tests and benchmarks run offline. The split is fixed (stratified
80/20 with an internal seed) so every run and benchmark scores the same 360 val images, whatever `seed`.

Augmentation: by default a light random affine jitter, batched on tensors. Options of `AugmentConfig` that
the digits do not turn on by themselves are honoured with timm's own transforms when asked: `aa`,
`color_jitter`, `hflip` > 0, `scale`/`ratio` (timm's random resized crop, which then replaces the affine
jitter) run per image on PIL images, between the jitter and the normalisation; random erasing (`reprob`,
`remode`, `recount`) runs on the normalised batch, as it does in timm. Every draw is from the global
generators (torch, `random`, NumPy), which the train loader's `SeededDataset` seeds per batch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from vitcompress.data import augment
from vitcompress.data.config import AugmentConfig
from vitcompress.data.info import DataInfo
from vitcompress.data.spec import resolve_norm
from vitcompress.errors import VitCompressError

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

    def theta(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
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
        per_image: A transform from an H×W PIL image (mode L for 1 channel, RGB for 3) to a `(C, H, W)`
            tensor in [0, 1], applied after the jitter; None to stay on batched tensors.
        erase: Applied to the normalised `(B, C, H, W)` batch (timm's `RandomErasing`), or None.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: DigitsAugment | None = None,
        per_image: Callable[[Image.Image], torch.Tensor] | None = None,
        erase: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.targets = targets
        self.channels = channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.per_image = per_image
        self.erase = erase

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
        if self.per_image is not None:
            images = torch.stack([self.per_image(self._to_pil(image)) for image in images])
        # Jitter before normalising: zero padding is then the digits' own background, not the mean.
        images = (images.expand(-1, self.channels, -1, -1) - self.mean) / self.std
        if self.erase is not None:
            images = self.erase(images)
        return list(zip(images, self.targets[index], strict=True))

    def _jitter(self, images: torch.Tensor) -> torch.Tensor:
        # The global generator, never one of our own: the train loader seeds it per batch from the batch's
        # place in the epoch, so a restarted process draws the same jitter; a generator seeded once per process
        # would replay epoch 0's jitter after a resume, and be copied into every worker.
        theta = self.augment.theta(len(images))
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _to_pil(self, image: torch.Tensor) -> Image.Image:
        # timm's auto-augment and colour ops are PIL ops; 8 bits lose nothing of the digits' 17 grey levels
        # at native size, and at most half a level after the resize.
        pixels = (image[0] * 255).round_().to(torch.uint8).numpy()
        pil = Image.fromarray(pixels, mode="L")
        return pil if self.channels == 1 else pil.convert("RGB")


def _asks_per_image(aug: AugmentConfig) -> bool:
    """Whether `aug` asks for an option that runs on PIL images (the digits' defaults ask for none)."""
    return bool(aug.aa or aug.color_jitter or aug.hflip or aug.scale or aug.ratio)


def digits_transforms(
    aug: AugmentConfig, input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[
    DigitsAugment | None, Callable[[Image.Image], torch.Tensor] | None, Callable[[torch.Tensor], torch.Tensor] | None
]:
    """`(jitter, per_image, erase)` for the train split: each None when `aug` does not ask for it.

    The per-image part is timm's training transform for these options, without normalisation (done once per
    batch) or erasing (done on the batch): its random resized crop only when `scale` or `ratio` is set,
    and then in place of the affine jitter; flips only when `hflip` > 0 (a mirrored 2 is no 2).
    """
    crop = aug.scale is not None or aug.ratio is not None
    jitter = None if crop else DigitsAugment()
    per_image = None
    if _asks_per_image(aug):
        from timm.data.transforms import MaybeToTensor, RandomResizedCropAndInterpolation
        from torchvision import transforms

        kwargs = augment.train_kwargs(aug, input_size, mean, std, hflip=0.0, color_jitter=None)
        primary, secondary, _ = augment.create(**{**kwargs, "re_prob": 0.0}, separate=True)
        steps = [t for t in primary.transforms if crop or not isinstance(t, RandomResizedCropAndInterpolation)]
        per_image = transforms.Compose([*steps, *secondary.transforms, MaybeToTensor()])
    erase = None
    if aug.reprob > 0:
        from timm.data.random_erasing import RandomErasing

        erase = RandomErasing(aug.reprob, mode=aug.remode, max_count=aug.recount, device="cpu")
    return jitter, per_image, erase


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(images, targets, train_idx, val_idx)`: all 1797 images in [0, 1] and the fixed stratified split.

    The split is scikit-learn's `train_test_split(test_size=VAL_FRACTION, stratify=targets,
    random_state=SPLIT_SEED)`, stored with the package (`digits_split.npz`, in its order) since it is part of the
    dataset; the images are read from the CSV scikit-learn ships, without importing scikit-learn, whose import
    costs every run seconds. tests/data/test_data_digits.py checks both against scikit-learn itself.
    """
    data = _digits_csv()
    images = data[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 16.0  # pixel values are counts 0..16
    with np.load(Path(__file__).with_name("digits_split.npz")) as split:
        train_idx, val_idx = split["train_idx"].astype(np.int64), split["val_idx"].astype(np.int64)
    return images, data[:, -1].astype(np.int64), train_idx, val_idx


def _digits_csv() -> np.ndarray:
    """scikit-learn's `digits.csv.gz` (1797 rows of 64 pixels and the label), found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise VitCompressError("the built-in digits come with scikit-learn: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn that keeps its data elsewhere: ask it
        from sklearn.datasets import load_digits

        digits = load_digits()
        return np.concatenate([digits.data, digits.target[:, None]], axis=1)
    return np.loadtxt(path, delimiter=",")


def resize_images(images: np.ndarray, height: int, width: int) -> torch.Tensor:
    """`(N, h, w)` float images in [0, 1] as a `(N, 1, height, width)` tensor (bicubic, antialiased, clamped)."""
    x = torch.from_numpy(images).unsqueeze(1)
    if x.shape[-2:] == (height, width):
        return x.contiguous()
    # Bicubic overshoots at the strokes' edges; clamp keeps the [0, 1] range the normalisation assumes.
    x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.clamp_(0, 1)


def build_in_memory(
    splits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    input_size: tuple[int, int, int],
    norm: tuple[tuple[float, ...] | None, tuple[float, ...] | None, tuple[float, ...], tuple[float, ...]],
    train_augment: bool,
    aug: AugmentConfig | None,
    name: str,
) -> tuple[DigitsDataset, DigitsDataset, DataInfo]:
    """Train and val `DigitsDataset`s of grey images held in memory, for any built-in dataset of digits.

    Args:
        splits: `(train_images, train_targets, val_images, val_targets)`; images `(N, h, w)` floats in [0, 1],
            resized here to `input_size` once, up front.
        input_size: `(C, H, W)`, C in {1, 3}; grey images are replicated to C channels.
        norm: `(mean, std, default_mean, default_std)`: the requested per-channel values (one or C, or None)
            and the dataset's own constants used where None.
        train_augment: Augment the train split: `DigitsAugment` jitter, plus what `aug` asks for.
        aug: Augmentation options (see the module docstring); None: the jitter alone.
        name: The data spec, for `DataInfo.name`.
    """
    channels, height, width = input_size
    mean, std, default_mean, default_std = norm
    mean_c = resolve_norm(mean, default_mean, channels, "mean")
    std_c = resolve_norm(std, default_std, channels, "std")
    train_images, train_targets, val_images, val_targets = splits
    jitter, per_image, erase = (
        digits_transforms(aug or AugmentConfig(), input_size, mean_c, std_c) if train_augment else (None,) * 3
    )
    kwargs = dict(channels=channels, mean=mean_c, std=std_c)
    train = DigitsDataset(
        resize_images(train_images, height, width),
        torch.from_numpy(np.asarray(train_targets)).long(),
        augment=jitter,
        per_image=per_image,
        erase=erase,
        **kwargs,
    )
    val_targets_t = torch.from_numpy(np.asarray(val_targets)).long()
    val = DigitsDataset(resize_images(val_images, height, width), val_targets_t, **kwargs)
    info = DataInfo(
        num_classes=NUM_CLASSES,
        input_size=(channels, height, width),
        mean=mean_c,
        std=std_c,
        train_size=len(train),
        val_size=len(val),
        name=name,
        class_names=tuple(str(i) for i in range(NUM_CLASSES)),
    )
    return train, val, info


def build_digits(
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    train_augment: bool = True,
    aug: AugmentConfig | None = None,
) -> tuple[DigitsDataset, DigitsDataset, DataInfo]:
    """Train and val datasets for the built-in digits, resized to `input_size` once, up front.

    Args:
        input_size: `(C, H, W)`, C in {1, 3}; the grey digits are replicated to C channels.
        mean: Per-channel mean (one value or C); defaults to `DIGITS_MEAN`.
        std: Per-channel std (one value or C); defaults to `DIGITS_STD`.
        train_augment: Augment the train split: `DigitsAugment` jitter, plus what `aug` asks for.
        aug: Augmentation options (see the module docstring); None: the jitter alone. `crop_pct` does not
            apply: the digits are resized to `input_size` whole, never cropped.

    Returns:
        `(train_dataset, val_dataset, info)`.
    """
    images, targets, train_idx, val_idx = load_split()
    # Split before resizing: at 224x224 only the resized splits (~360 MB in all) are held, not twice that.
    splits = (images[train_idx], targets[train_idx], images[val_idx], targets[val_idx])
    norm = (mean, std, DIGITS_MEAN, DIGITS_STD)
    return build_in_memory(splits, input_size, norm, train_augment, aug, "digits")
