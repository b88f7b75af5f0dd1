"""`cluttered-digits`: scikit-learn's digits, upsampled onto a larger canvas among fragments of other digits and
pixel noise (the construction of the cluttered-MNIST benchmark of Mnih et al., 2014, with the digit near the
centre).

Why: on the plain 8x8 digits every model and method ends within a few val images of 100%, so compression methods
cannot be told apart. Here the model must tell a digit from the digit-like strokes over and around it, so a small
ViT ends well below saturation and capacity shows: with the `cluttered-teacher` recipe (seed 0) a 3-layer ViT of
width 32 reaches 71.75%, the recipe's 6 layers of width 64 85.40%, 12 layers 87.50%. It is still generated offline
from scikit-learn. The digit stays near the centre because a ViT this small, trained from scratch for minutes,
learns wandering digits too slowly: with sides 15-20 within 3 pixels of the centre the teacher recipe was at 37%
after 15 of its 30 epochs (75% on this data), and digits placed anywhere (among denser clutter) kept a 12-layer one
at chance for the 6 epochs tried.

Exactly what it is (`ClutterConfig` defaults): 10 balanced classes on a 32x32 grey canvas. Each image is one
source digit upsampled (bicubic) to a random side in [18, 20] pixels, placed at most 1 pixel per axis from the
canvas centre, and 5 fragments (random 6x6 crops of random digits of the same split, each upsampled to a random
side in the same range) at random places anywhere on the canvas, composited by pixel-wise maximum, plus Gaussian
pixel noise (std 0.05), clipped to [0, 1] and stored as 8-bit grey. Source digits are split as `digits` splits
them (`digits.load_split`: fixed, stratified 1437/360), and a split's clutter comes from that split's digits only,
so no val image holds ink of a train digit. Train: 500 images per class (5,000; each train digit used 3-4
times); val: 200 per class (2,000; each of the 360 val digits 5-6 times, at other sizes, places and clutter).
All draws come from one NumPy generator per split seeded by `ClutterConfig.seed` (part of the dataset, never the
run's seed), so the bytes of both splits are fixed. Train augmentation is the digits' (`digits.py`).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from vitcompress.data.config import AugmentConfig
from vitcompress.data.digits import NUM_CLASSES, DigitsDataset, build_in_memory, load_split, resize_images
from vitcompress.data.info import DataInfo
from vitcompress.errors import VitCompressError

NAME = "cluttered-digits"
# Pixel mean/std of the default train split at its native 32x32, in [0, 1]; fixed constants, as for digits.
CLUTTERED_MEAN = (0.177,)
CLUTTERED_STD = (0.296,)


@dataclasses.dataclass(frozen=True)
class ClutterConfig:
    """How the canvases are drawn; the defaults are the `cluttered-digits` dataset."""

    canvas: int = 32
    """Side of the square canvas, in pixels."""
    digit_sizes: tuple[int, int] = (18, 20)
    """Smallest and largest side of a pasted digit (the 8x8 source upsampled), in pixels, both included."""
    max_offset: int | None = 1
    """Largest shift of a digit from the canvas centre, in pixels per axis; None: anywhere on the canvas."""
    fragments: int = 5
    """Clutter fragments per image."""
    fragment_size: int = 6
    """Side of a fragment: a square crop of an upsampled digit."""
    noise_std: float = 0.05
    """Std of the Gaussian noise added to every pixel (images in [0, 1])."""
    train_per_class: int = 500
    """Train images per class."""
    val_per_class: int = 200
    """Val images per class."""
    seed: int = 0
    """Seed of the generators; part of the dataset's definition, never the run's seed."""

    def __post_init__(self) -> None:
        lo, hi = self.digit_sizes
        if not 1 <= lo <= hi <= self.canvas:
            raise VitCompressError(f"digit_sizes={self.digit_sizes} must be [lo, hi] with 1 <= lo <= hi <= canvas")
        if not 1 <= self.fragment_size <= lo:
            raise VitCompressError(f"fragment_size={self.fragment_size} must be in [1, {lo}] (the smallest digit)")
        if self.fragments < 0 or self.noise_std < 0 or min(self.train_per_class, self.val_per_class) < 1:
            raise VitCompressError("fragments and noise_std must be >= 0, images per class >= 1")


def _scaled(images: np.ndarray, sizes: range) -> dict[int, np.ndarray]:
    """Each source digit upsampled to every side in `sizes`: `{side: (N, side, side)}`."""
    return {s: resize_images(images, s, s)[:, 0].numpy() for s in sizes}


def _places(
    rng: np.random.Generator, sides: np.ndarray | int, rooms: np.ndarray | int, max_offset: int | None = None
) -> np.ndarray:
    """Random top-left corners `(..., 2)` that keep squares of `sides` wholly inside squares of `rooms`, at most
    `max_offset` pixels per axis from the centred place (None: anywhere)."""
    slack = np.asarray(rooms) - np.asarray(sides)
    low, high = np.zeros_like(slack), slack
    if max_offset is not None:
        low, high = np.maximum(low, slack // 2 - max_offset), np.minimum(high, slack // 2 + max_offset)
    twice = lambda a: np.repeat(a[..., None], 2, axis=-1)  # noqa: E731
    return rng.integers(twice(low), twice(high) + 1)


def _render_split(
    images: np.ndarray, targets: np.ndarray, per_class: int, config: ClutterConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`per_class` cluttered canvases of every class from one split's source digits, in a shuffled order."""
    lo, hi = config.digit_sizes
    scaled = _scaled(images, range(lo, hi + 1))
    # Every source digit of a class is used equally often (up to one), in a random order.
    picks = np.concatenate(
        [np.resize(rng.permutation(np.flatnonzero(targets == c)), per_class) for c in range(NUM_CLASSES)]
    )
    picks = picks[rng.permutation(len(picks))]
    n, fs = len(picks), config.fragment_size
    # Every draw up front, in arrays of fixed shapes: the bytes then depend on the seed alone, and it is fast.
    digit_side = rng.integers(lo, hi + 1, size=n)
    digit_at = _places(rng, digit_side, config.canvas, config.max_offset)
    frag_source = rng.integers(len(images), size=(n, config.fragments))
    frag_side = rng.integers(lo, hi + 1, size=(n, config.fragments))
    frag_crop = _places(rng, fs, frag_side)
    frag_at = _places(rng, np.full_like(frag_side, fs), config.canvas)
    noise = rng.normal(0.0, config.noise_std, size=(n, config.canvas, config.canvas)).astype(np.float32)
    out = np.zeros((n, config.canvas, config.canvas), dtype=np.float32)
    for i, canvas in enumerate(out):
        for j in range(config.fragments):
            (cy, cx), (y, x) = frag_crop[i, j], frag_at[i, j]
            fragment = scaled[int(frag_side[i, j])][frag_source[i, j], cy : cy + fs, cx : cx + fs]
            np.maximum(canvas[y : y + fs, x : x + fs], fragment, out=canvas[y : y + fs, x : x + fs])
        side, (y, x) = int(digit_side[i]), digit_at[i]
        np.maximum(canvas[y : y + side, x : x + side], scaled[side][picks[i]], out=canvas[y : y + side, x : x + side])
    pixels = np.rint(np.clip(out + noise, 0.0, 1.0) * 255).astype(np.uint8)
    return pixels, targets[picks].astype(np.int64)


@functools.lru_cache(maxsize=2)
def _generate_cached(config: ClutterConfig) -> tuple[np.ndarray, ...]:
    images, targets, train_idx, val_idx = load_split()
    parts = []
    for split, (idx, per_class) in enumerate(((train_idx, config.train_per_class), (val_idx, config.val_per_class))):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, split]))
        parts.extend(_render_split(images[idx], targets[idx], per_class, config, rng))
    for array in parts:
        array.flags.writeable = False  # cached: callers get copies (`generate`)
    return tuple(parts)


def generate(config: ClutterConfig = ClutterConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(train_images, train_targets, val_images, val_targets)`: uint8 `(N, canvas, canvas)` and int64 `(N,)`.

    The same config gives the same bytes, whatever the global random state, the run's seed or the thread count.
    """
    return tuple(array.copy() for array in _generate_cached(config))  # type: ignore[return-value]


def build_cluttered(
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    train_augment: bool = True,
    aug: AugmentConfig | None = None,
    config: ClutterConfig = ClutterConfig(),
) -> tuple[DigitsDataset, DigitsDataset, DataInfo]:
    """Train and val datasets of `cluttered-digits`, resized from the canvas to `input_size` once, up front.

    Args:
        input_size: `(C, H, W)`, C in {1, 3}; the grey canvases are replicated to C channels. The canvas is
            32x32, so `(C, 32, 32)` sees it pixel for pixel.
        mean: Per-channel mean (one value or C); defaults to `CLUTTERED_MEAN`.
        std: Per-channel std (one value or C); defaults to `CLUTTERED_STD`.
        train_augment: Augment the train split as the digits are (affine jitter, plus what `aug` asks for).
        aug: Augmentation options, as for `digits`; None: the jitter alone.
        config: How the canvases are drawn; the default is the dataset `cluttered-digits` names.

    Returns:
        `(train_dataset, val_dataset, info)`.
    """
    train_x, train_y, val_x, val_y = _generate_cached(config)
    splits = (train_x.astype(np.float32) / 255, train_y.copy(), val_x.astype(np.float32) / 255, val_y.copy())
    return build_in_memory(splits, input_size, (mean, std, CLUTTERED_MEAN, CLUTTERED_STD), train_augment, aug, NAME)
