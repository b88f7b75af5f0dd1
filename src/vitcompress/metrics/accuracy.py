"""Top-k accuracy and loss over a data loader, global across ranks when run under torchrun."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics._checks import check_device, eval_mode, model_device_dtype


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Count samples whose target class is among the k highest logits, for each k.

    A k larger than the number of classes is clamped to it (top-5 of a 3-class problem is top-3,
    i.e. always correct) rather than failing inside `topk`.

    Args:
        logits: `(batch, classes)` scores.
        target: `(batch,)` class indices, or `(batch, classes)` soft/one-hot labels (argmax is used).
        ks: The k values.

    Returns:
        The number of correct samples for each k, in the order of `ks`.
    """
    return [int(c) for c in _topk_correct(logits, target, ks)]


def _topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    if logits.ndim != 2:
        raise VitCompressError(
            f"logits must be (batch, classes), got shape {tuple(logits.shape)}; flatten extra dims first"
        )
    if not ks or any(k < 1 for k in ks):
        raise VitCompressError(f"every k must be >= 1, got ks={tuple(ks)}; pass e.g. ks=(1, 5)")
    target = target.argmax(dim=-1) if target.ndim == 2 else target
    max_k = min(max(ks), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices  # (batch, max_k), best first
    hits = top.eq(target.view(-1, 1))
    # A sample is correct at k if the target sits in the first k columns.
    return torch.stack([hits[:, : min(k, max_k)].any(dim=1).sum() for k in ks])


def _logits(output: Any) -> torch.Tensor:
    # DeiT-distilled already averages its two heads in eval mode; a tuple here means a model that
    # returns both heads, which are averaged the same way.
    if isinstance(output, (tuple, list)):
        return torch.stack([o.float() for o in output]).mean(dim=0)
    return output.float()


def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy and mean cross-entropy of `model` over `loader`.

    The one evaluator: the jobs call it, and `fit` uses it when given no `evaluate_fn` (inside the run's
    autocast, which it then keeps). Under `torch.distributed` each rank evaluates its own shard and the counts
    are all-reduced, so every rank returns the same global numbers. A `DistributedSampler` pads the last shard
    with repeated samples, and an unsharded loader is counted once per rank; `n` shows either.

    Args:
        model: The classifier; it must already be on `device`. Put in eval mode for the pass; each
            module's training flag is restored afterwards.
        loader: Yields `(images, targets)` batches; targets are class indices or soft labels (argmax is used).
        device: Where batches are moved to; default: where the model is.
        amp_dtype: Run the forward under `torch.autocast` with this dtype (e.g. `torch.bfloat16`); None leaves
            any autocast the caller entered in force.

    Returns:
        `{"top1": %, "top5": %, "loss": mean cross-entropy, "n": samples}`; top-k in 0..100.

    Raises:
        VitCompressError: If the model is not on `device` or the loader yields no samples (on every rank
            alike, since the check follows the all-reduce).
    """
    device = check_device(model, device if device is not None else model_device_dtype(model)[0])
    # A nested autocast(enabled=False) would switch off the caller's autocast (fit's), so enter one only if asked.
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    # correct@1, correct@5, summed loss, samples: one float64 tensor, so one all-reduce syncs everything exactly.
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    with eval_mode(model), torch.no_grad(), autocast:
        for images, target in loader:
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            logits = _logits(model(images))
            hard_target = target.argmax(dim=-1) if target.ndim == 2 else target
            totals[:2] += _topk_correct(logits, hard_target, (1, 5))
            totals[2] += F.cross_entropy(logits.float(), hard_target, reduction="sum")
            totals[3] += hard_target.numel()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    n = int(totals[3].item())
    if n == 0:
        raise VitCompressError(
            "the validation loader yielded no samples; check the dataset path, its val split and the batch size"
        )
    return {
        "top1": 100.0 * totals[0].item() / n,
        "top5": 100.0 * totals[1].item() / n,
        "loss": totals[2].item() / n,
        "n": n,
    }
