"""Turning a MultiplexConfig into a partition of layers into sharing groups."""

from __future__ import annotations

from collections.abc import Sequence

from vitcompress.errors import VitCompressError
from vitcompress.multiplexing.config import MultiplexConfig


def resolve_groups(cfg: MultiplexConfig, stage_depths: Sequence[int]) -> list[list[int]]:
    """Partition of global layer indices into sharing groups; no group crosses a stage boundary.

    ViT has one stage; Swin has one per resolution. Indices count layers across all stages.
    """
    depth = sum(stage_depths)
    starts = [sum(stage_depths[:s]) for s in range(len(stage_depths))]
    if cfg.groups is not None:
        return _check_explicit(cfg.groups, stage_depths, starts)
    if cfg.share == "stage":
        return [list(range(s, s + d)) for s, d in zip(starts, stage_depths, strict=True)]
    if cfg.share > max(stage_depths):
        where = "the model's depth" if len(stage_depths) == 1 else "the deepest stage"
        raise VitCompressError(
            f"share={cfg.share} is larger than {where} ({max(stage_depths)}); use 1..{max(stage_depths)}"
            + (" or share='stage'" if len(stage_depths) > 1 else "")
        )
    groups = []
    for s, d in zip(starts, stage_depths, strict=True):
        groups += [list(range(i, min(i + cfg.share, s + d))) for i in range(s, s + d, cfg.share)]
    assert sorted(i for g in groups for i in g) == list(range(depth))
    return groups


def _check_explicit(groups: list[list[int]], stage_depths: Sequence[int], starts: list[int]) -> list[list[int]]:
    depth = sum(stage_depths)
    seen: dict[int, int] = {}
    for gi, group in enumerate(groups):
        for layer in group:
            if not 0 <= layer < depth:
                raise VitCompressError(f"groups: layer {layer} is out of range; the model has layers 0..{depth - 1}")
            if layer in seen:
                raise VitCompressError(
                    f"groups: layer {layer} appears in group {seen[layer]} and group {gi}; each layer must be in "
                    "exactly one group"
                )
            seen[layer] = gi
        stages = {max(s for s in range(len(starts)) if starts[s] <= layer) for layer in group}
        if len(stages) > 1:
            raise VitCompressError(
                f"groups: group {gi} {group} spans several stages, whose blocks have different widths; "
                "keep each group inside one stage"
            )
    missing = sorted(set(range(depth)) - set(seen))
    if missing:
        raise VitCompressError(
            f"groups: layers {missing} are in no group; list every layer 0..{depth - 1} exactly once"
        )
    return [sorted(g) for g in groups]
