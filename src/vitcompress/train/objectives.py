"""What the loop minimises: an `Objective` maps (model, images, targets) to a loss and its named parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Objective(Protocol):
    """A training loss. Called once per step inside the loop's autocast context.

    `model` is what the loop trains, possibly wrapped in `DistributedDataParallel`: call it as `model(images)`
    (use forward hooks for intermediate features) because DDP only synchronises gradients for work done
    through its `forward`. A frozen teacher lives on the objective itself and is never wrapped; if the
    objective is an `nn.Module`, `fit` moves it to the training device.

    Returns:
        The scalar loss to backpropagate, and named components for logging (e.g. `{"ce": .., "kd": ..}`).
        Components may be floats or detached 0-dim tensors; tensors avoid a host sync every step because
        the loop only reads them when it logs.
    """

    def __call__(
        self, model: nn.Module, images: Tensor, targets: Tensor
    ) -> tuple[Tensor, Mapping[str, float | Tensor]]: ...


def head_logits(output: Tensor | tuple[Tensor, ...] | list[Tensor]) -> list[Tensor]:
    """Return a model's output as a list of logits tensors, one per classification head.

    timm's distilled DeiT returns `(cls_logits, dist_logits)` in train mode when `distilled_training` is set;
    every other classifier returns one tensor.
    """
    if isinstance(output, (tuple, list)):
        return list(output)
    return [output]


class CrossEntropyObjective:
    """Cross-entropy against hard labels (class indices) or soft labels (per-class probabilities, e.g. mixup).

    For a model with several heads (timm's distilled DeiT in `distilled_training` mode returns
    `(cls_logits, dist_logits)`) the loss is the mean of each head's cross-entropy, so every head learns the
    labels; a distillation objective should instead point the distillation head at the teacher.

    Args:
        label_smoothing: Passed to `F.cross_entropy`; 0 disables it.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, images: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        heads = head_logits(model(images))
        # Loss in fp32: under autocast the logits may be bf16/fp16, too coarse for a stable log-softmax.
        losses = [F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing) for logits in heads]
        loss = torch.stack(losses).mean()
        return loss, {"ce": loss.detach()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label_smoothing={self.label_smoothing})"
