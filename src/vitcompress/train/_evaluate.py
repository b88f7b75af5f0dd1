"""The evaluator `fit` uses when the caller gives none: top-1/top-5 accuracy and cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from vitcompress.train.distributed import all_reduce_sum
from vitcompress.train.objectives import head_logits


@torch.no_grad()
def _default_evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent, as timm reports them) and mean cross-entropy over `loader`.

    `fit` calls it with the model in eval mode under the run's autocast. Multi-head outputs are averaged,
    which is what timm's distilled DeiT does itself at inference. Soft targets are scored by their argmax.
    Under DDP the sums are all-reduced, so a sharded val loader (DistributedSampler) gives the global figures
    and an unsharded one gives the same figures as one process would (with `n` counted once per rank).

    Returns:
        `{"top1", "top5", "loss", "n"}`.
    """
    device = next(model.parameters()).device
    # correct@1, correct@5, summed loss, samples; float64 so large val sets count exactly
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = torch.stack(head_logits(model(images))).float().mean(0)
        if targets.ndim == 2:
            targets = targets.argmax(1)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
        sums += torch.stack(
            [
                top5[:, 0].sum(),
                top5.any(1).sum(),
                F.cross_entropy(logits, targets, reduction="sum"),
                torch.tensor(len(targets), device=device),
            ]
        ).double()
    all_reduce_sum(sums)
    correct1, correct5, loss, n = sums.tolist()
    n_safe = max(n, 1.0)
    return {
        "top1": 100 * correct1 / n_safe,
        "top5": 100 * correct5 / n_safe,
        "loss": loss / n_safe,
        "n": int(n),
    }
