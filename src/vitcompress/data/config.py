"""What a job reads its data with: the source and loader settings (`DataConfig`) and the training-time
augmentation and regularisation (`AugmentConfig`). Field names follow timm's `train.py`, so `--aa`, `--reprob`,
`--mixup`, `--smoothing`, ... mean here what they mean there.
"""

from __future__ import annotations

import dataclasses

from vitcompress.config import BaseConfig
from vitcompress.data.policy import check_aa_policy
from vitcompress.errors import VitCompressError

MIXUP_MODES = ("batch", "pair", "elem")
ERASE_MODES = ("const", "rand", "pixel")
INTERPOLATIONS = ("random", "bilinear", "bicubic", "nearest", "lanczos", "hamming", "box")


@dataclasses.dataclass
class DataConfig(BaseConfig):
    """Where the images come from and how they are loaded."""

    data: str = "digits"
    """digits or cluttered-digits (built-in), an ImageFolder root with train/ and val/, folder:<path> or hfds:<path>."""
    batch_size: int = 64
    """Images per process and per micro-batch (the global batch is batch_size × world size × grad_accum_steps)."""
    workers: int = 0
    """DataLoader worker processes; 0 loads in the training process (fastest for the in-memory digits)."""
    pin_mem: bool | None = None
    """Pin loaded batches in page-locked memory for faster host-to-GPU copies; None: pin when CUDA is used."""
    persistent_workers: bool = True
    """Keep the worker processes alive between epochs (only with workers > 0)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead (only with workers > 0); None: torch's default of 2."""

    def validate(self) -> None:
        if not isinstance(self.data, str) or not self.data.strip():
            raise VitCompressError(f"data={self.data!r} must name a dataset; use e.g. --data digits")
        if self.batch_size < 1:
            raise VitCompressError(f"batch_size={self.batch_size} must be >= 1; pass e.g. --batch-size 64")
        if self.workers < 0:
            raise VitCompressError(f"workers={self.workers} must be >= 0; pass 0 to load in the main process")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise VitCompressError(f"prefetch_factor={self.prefetch_factor} must be >= 1, or None for torch's 2")


@dataclasses.dataclass
class AugmentConfig(BaseConfig):
    """Training augmentation and regularisation, built from timm's own factories.

    The defaults change nothing: ImageFolder/HF data get timm's standard training transform, the built-in digits
    keep their light affine jitter. The DeiT recipe (both papers' numbers) is `aa: rand-m9-mstd0.5-inc1`,
    `reprob: 0.25`, `mixup: 0.8`, `cutmix: 1.0`, `smoothing: 0.1`, `aug_repeats: 3`, `color_jitter: 0.3`.
    """

    aa: str | None = None
    """Auto-augment policy: a timm policy string such as rand-m9-mstd0.5-inc1 (RandAugment), original, v0 or
    augmix-m5-w4-d2; None: no auto-augment."""
    reprob: float = 0.0
    """Random-erasing probability per image (DeiT: 0.25)."""
    remode: str = "pixel"
    """Random-erasing fill: pixel (per-pixel normal noise), rand (per-channel) or const (zeros)."""
    recount: int = 1
    """Random-erasing count: up to this many boxes per image."""
    mixup: float = 0.0
    """Mixup alpha; > 0 turns Mixup on (DeiT: 0.8). Targets become soft (soft-target cross-entropy)."""
    cutmix: float = 0.0
    """CutMix alpha; > 0 turns CutMix on (DeiT: 1.0)."""
    cutmix_minmax: list[float] | None = None
    """CutMix box ratio [min, max]; overrides the cutmix alpha when set."""
    mixup_prob: float = 1.0
    """Probability of applying Mixup or CutMix to a batch."""
    mixup_switch_prob: float = 0.5
    """Probability of CutMix instead of Mixup when both are on."""
    mixup_mode: str = "batch"
    """How Mixup/CutMix parameters are drawn: per batch, per pair or per element."""
    smoothing: float = 0.0
    """Label smoothing of the ground-truth term (DeiT: 0.1); with Mixup it smooths the soft targets."""
    aug_repeats: float = 0
    """Repeated augmentation: each image appears this many times per epoch, on different ranks (timm's
    RepeatAugSampler; DeiT: 3); 0 turns it off."""
    color_jitter: float | None = None
    """Colour-jitter strength (brightness, contrast and saturation); None: timm's default (0.4) on image folders,
    none on digits; 0 turns it off. As in timm and DeiT, an aa policy other than 3a turns it off."""
    scale: list[float] | None = None
    """Random-resized-crop area range [min, max]; None: timm's [0.08, 1.0] on image folders."""
    ratio: list[float] | None = None
    """Random-resized-crop aspect-ratio range [min, max]; None: timm's [3/4, 4/3] on image folders."""
    hflip: float | None = None
    """Horizontal-flip probability; None: 0.5 on image folders, 0 on digits (a mirrored 2 is no 2)."""
    train_interpolation: str | None = None
    """Resize interpolation of the training transform: random, bilinear, bicubic, ...; None: bicubic."""
    crop_pct: float | None = None
    """Eval centre-crop fraction (resize to size / crop_pct, then crop); None: timm's 0.875."""
    drop_path: float | None = None
    """Stochastic-depth rate of the trained model, linearly rising over depth to this value (DeiT-S: 0.1);
    None keeps the model's own."""

    def validate(self) -> None:
        check_aa_policy(self.aa)
        for name in ("reprob", "mixup_prob", "mixup_switch_prob", "smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise VitCompressError(f"{name}={value} must be in [0, 1]")
        if self.remode not in ERASE_MODES:
            raise VitCompressError(f"remode={self.remode!r} must be one of {ERASE_MODES}")
        if self.recount < 1:
            raise VitCompressError(f"recount={self.recount} must be >= 1 (boxes per erased image)")
        if self.mixup < 0 or self.cutmix < 0:
            raise VitCompressError(f"mixup={self.mixup} and cutmix={self.cutmix} must be >= 0 (0 turns them off)")
        if self.mixup_mode not in MIXUP_MODES:
            raise VitCompressError(f"mixup_mode={self.mixup_mode!r} must be one of {MIXUP_MODES}")
        if self.cutmix_minmax is not None and (
            len(self.cutmix_minmax) != 2 or not 0 < self.cutmix_minmax[0] <= self.cutmix_minmax[1] <= 1
        ):
            raise VitCompressError(f"cutmix_minmax={self.cutmix_minmax} must be [min, max] with 0 < min <= max <= 1")
        if self.aug_repeats < 0 or 0 < self.aug_repeats < 1:
            raise VitCompressError(f"aug_repeats={self.aug_repeats} must be 0 (off) or >= 1 (e.g. 3)")
        if self.color_jitter is not None and self.color_jitter < 0:
            raise VitCompressError(f"color_jitter={self.color_jitter} must be >= 0")
        for name in ("scale", "ratio"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not 0 < value[0] <= value[1]):
                raise VitCompressError(f"{name}={value} must be [min, max] with 0 < min <= max")
        if self.hflip is not None and not 0.0 <= self.hflip <= 1.0:
            raise VitCompressError(f"hflip={self.hflip} must be in [0, 1]")
        if self.train_interpolation is not None and self.train_interpolation not in INTERPOLATIONS:
            raise VitCompressError(
                f"train_interpolation={self.train_interpolation!r} must be one of {INTERPOLATIONS}"
            )
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise VitCompressError(f"crop_pct={self.crop_pct} must be in (0, 1], e.g. 0.875")
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise VitCompressError(f"drop_path={self.drop_path} must be in [0, 1), e.g. 0.1")

    @property
    def mixes(self) -> bool:
        """True when Mixup or CutMix is on, so targets are soft and batches must be even."""
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0 or self.cutmix_minmax is not None)
