"""Hardware-aligned widths for `select(..., multiple_of=k, multiple_of_tokens=t)`.

GPU fast paths want widths that are multiples of 8 (fp16 Tensor Cores; flash attention needs head_dim % 8 == 0),
which is why NViT prunes in groups of 8 and Torch-Pruning offers `round_to`. The solver first thresholds the
mask values as usual, then every width is rounded here; costs are computed on the rounded widths, so the budget
bisection meets its target with the widths that will actually be extracted.

Rounding rules.
    A width is rounded to the nearest allowed value, halves up. Allowed: 0, k, 2k, ... up to the full width,
    and the full width itself (the layer as the original had it, even when k does not divide it).
    Attention: each head's kept dims (a head rounded to 0 is removed). Whole-head models (q/k-norm, Eva,
        Swin V2) keep heads whole: their widths are 0 or head_dim, aligned when head_dim % k == 0 and otherwise
        left at the original head_dim (the full-width rule); `multiple_of` then only rounds their MLPs.
    MLP: each owner's (layer's, or multiplexed group's) kept hidden units.
    Tokens (only with multiple_of_tokens): each layer's sequence length, prefix tokens included (what the
        matmuls see), at least one patch token; the kept sets stay nested over depth.
Each rounded width keeps its group's best-scoring units. Rounding is non-decreasing in the thresholded count,
so the cost stays monotone in the threshold and the bisection still holds.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from vitcompress.errors import VitCompressError


def check_multiple(name: str, value: Any) -> int:
    """`value` as a positive int, or one VitCompressError line."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise VitCompressError(f"{name}={value!r} must be a positive int such as 8 (1 leaves widths as selected)")
    return int(value)


def check_fits(name: str, k: int, widths: dict[str, int]) -> None:
    """Refuse a k above a width it would round: that width could only be kept whole or removed entirely."""
    for what, width in widths.items():
        if k > width:
            raise VitCompressError(
                f"{name}={k} is larger than the {width} {what}, which could then only be kept whole or removed; "
                f"pick {name} <= {width}"
            )


def nearest_aligned(count: np.ndarray, full: np.ndarray, k: int) -> np.ndarray:
    """Each count rounded to the nearest of {0, k, 2k, ... <= full} ∪ {full}, halves up (elementwise)."""
    down = count // k * k
    up = np.minimum(down + k, full)  # the next multiple, or the full width when that multiple would pass it
    return np.where(count - down >= up - count, up, down)


def align_groups(flags: np.ndarray, group: np.ndarray, rank: np.ndarray, full: np.ndarray, k: int) -> np.ndarray:
    """Round the kept units of every group (a head's dims, an owner's MLP units) to an aligned width.

    Args:
        flags: Kept flag per unit.
        group: Group index per unit.
        rank: Rank of each unit within its group, best score first (0 = best).
        full: Full width per group.
        k: The multiple.

    Returns:
        New flags: each group keeps its top `nearest_aligned(kept)` units.
    """
    width = nearest_aligned(np.bincount(group[flags], minlength=len(full)), full, k)
    return rank < width[group]


def align_tokens(grid: np.ndarray, ranking: np.ndarray, prefix: int, k: int) -> np.ndarray:
    """Round every layer's sequence length (prefix + kept patches) to an aligned one, keeping the sets nested.

    Args:
        grid: (layers, patches) kept flags, nested over layers, at least one patch per layer.
        ranking: (layers, patches) patch indices of each layer, best score first.
        prefix: Class/distillation/register tokens, always kept.
        k: The multiple.

    Returns:
        New (layers, patches) flags: layer l keeps the best-ranked (at l) of the patches layer l-1 kept.
    """
    patches = grid.shape[1]
    full = prefix + patches
    shortest = min(full, -(-(prefix + 1) // k) * k)  # the shortest aligned sequence with a patch token in it
    # Lengths never grow with depth (nested input, non-decreasing rounding), so each layer can pick from the last.
    keep = np.maximum(nearest_aligned(prefix + grid.sum(1), full, k), shortest) - prefix
    out = np.zeros_like(grid)
    alive = np.ones(patches, dtype=bool)
    for layer, (n, order) in enumerate(zip(keep, ranking, strict=True)):
        out[layer, order[alive[order]][:n]] = True
        alive = out[layer]
    return out
