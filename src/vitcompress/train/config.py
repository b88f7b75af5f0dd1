"""Settings for the one training loop shared by plain training, distillation and mask search."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError

AMP_MODES = ("none", "bf16", "fp16")

# Fields that define the lr schedule: a resumed run must match the checkpoint on these, or the schedule it
# continues would not be the one the first half of the run followed.
SCHEDULE_FIELDS = ("epochs", "lr", "min_lr", "warmup_epochs", "grad_accum_steps", "lr_base", "lr_base_size",
                   "lr_base_scale")
LR_SCALES = ("linear", "sqrt")


@dataclasses.dataclass
class TrainConfig(BaseConfig):
    """Optimisation settings for `vitcompress.train.fit` (AdamW + warmup/cosine, stepped per update)."""

    VERSION: ClassVar[int] = 1

    epochs: int = 10
    """Number of passes over the training loader."""
    lr: float = 5e-4
    """Peak AdamW lr, reached after warmup; param groups with their own lr keep their ratio to it."""
    min_lr: float = 1e-6
    """Learning rate at the end of the cosine decay (scaled like `lr` for groups with their own lr)."""
    weight_decay: float = 0.05
    """Decoupled AdamW weight decay; never applied to biases, norms, 1-D params, tokens or masks."""
    warmup_epochs: float = 1
    """Linear warmup length in epochs; fractional values are fine since the schedule moves every step."""
    clip_grad: float | None = 5.0
    """Clip the global gradient norm to this value; None disables clipping."""
    amp: str = "none"
    """Mixed precision: "none", "bf16" (CPU or CUDA) or "fp16" (CUDA only, with a gradient scaler)."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights with this decay (e.g. 0.9998) and evaluate it too."""
    seed: int = 0
    """Seed for data order, augmentation and dropout; each epoch and rank derives its own stream from it."""
    log_every: int = 10
    """Write a step record to metrics.jsonl every this many optimiser steps."""
    eval_every: int = 1
    """Evaluate every this many epochs; the last epoch is always evaluated."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated into one optimizer step (the global batch grows by this factor)."""
    lr_base: float | None = None
    """If set, the peak lr is lr_base scaled by global batch / lr_base_size (timm's --lr-base) and `lr` is
    ignored; e.g. the DeiT recipe is lr_base 5e-4 at lr_base_size 512."""
    lr_base_size: int = 512
    """The global batch size at which lr_base applies."""
    lr_base_scale: str = "linear"
    """How lr_base scales with the global batch: linear (DeiT, Swin, both papers) or sqrt."""
    compile: bool = False
    """torch.compile the trained model (the teacher stays eager); the first steps are slow while it compiles."""
    checkpoint_every_steps: int | None = None
    """Also checkpoint every this many optimizer steps inside an epoch (an epoch end always checkpoints)."""
    checkpoint_every_minutes: float | None = None
    """Also checkpoint when this many minutes have passed since the last checkpoint."""
    checkpoint_hist: int = 1
    """How many of the latest checkpoints to keep; older ones are deleted once a newer one is complete."""

    def validate(self) -> None:
        if self.epochs < 1:
            raise VitCompressError(f"epochs={self.epochs} must be >= 1; set TrainConfig.epochs to a positive int")
        if self.lr <= 0:
            raise VitCompressError(f"lr={self.lr} must be > 0; set TrainConfig.lr to e.g. 5e-4")
        if not 0 <= self.min_lr <= self.lr:
            raise VitCompressError(f"min_lr={self.min_lr} must be in [0, lr={self.lr}]; lower min_lr")
        if self.weight_decay < 0:
            raise VitCompressError(f"weight_decay={self.weight_decay} must be >= 0; use 0 to disable it")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise VitCompressError(
                f"warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs}]; shorten the warmup"
            )
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise VitCompressError(
                f"clip_grad={self.clip_grad} must be > 0; use None (--clip-grad none) to disable clipping")
        if self.amp not in AMP_MODES:
            raise VitCompressError(f"amp={self.amp!r} is not one of {AMP_MODES}; pick one of those")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise VitCompressError(
                f"ema_decay={self.ema_decay} must be in (0, 1); use None (--ema-decay none) to disable EMA")
        if self.seed < 0:
            raise VitCompressError(f"seed={self.seed} must be >= 0; pick a non-negative int")
        if self.grad_accum_steps < 1:
            raise VitCompressError(
                f"grad_accum_steps={self.grad_accum_steps} must be >= 1; use 1 for no accumulation"
            )
        if self.lr_base is not None and self.lr_base <= 0:
            raise VitCompressError(f"lr_base={self.lr_base} must be > 0, or None to use lr as given")
        if self.lr_base_size < 1:
            raise VitCompressError(f"lr_base_size={self.lr_base_size} must be >= 1, e.g. 512")
        if self.lr_base_scale not in LR_SCALES:
            raise VitCompressError(f"lr_base_scale={self.lr_base_scale!r} must be one of {LR_SCALES}")
        for name in ("checkpoint_every_steps", "checkpoint_every_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise VitCompressError(f"{name}={value} must be > 0, or None to checkpoint at epoch ends only")
        if self.checkpoint_hist < 1:
            raise VitCompressError(f"checkpoint_hist={self.checkpoint_hist} must be >= 1 (checkpoints kept)")
        if self.log_every < 1 or self.eval_every < 1:
            raise VitCompressError(
                f"log_every={self.log_every} and eval_every={self.eval_every} must be >= 1; raise them"
            )
