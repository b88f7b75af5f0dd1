"""MultiplexConfig: how layers are grouped to share weights and which weight transformations each layer gets."""

from __future__ import annotations

import dataclasses
import numbers

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError

INIT_CHOICES = ("first", "average", "index")


@dataclasses.dataclass
class MultiplexConfig(BaseConfig):
    share: int | str = 2
    """Consecutive layers per shared group (a last group may be smaller); `depth` gives a single shared layer.
    On Swin, groups never cross a stage and "stage" shares all blocks of a stage."""

    groups: list[list[int]] | None = None
    """Explicit partition of layer indices into sharing groups, e.g. [[0, 1, 2], [3, 4], ...]; overrides `share`.
    Every layer must appear exactly once (on Swin: indices count blocks across stages, groups stay in a stage)."""

    init: str = "first"
    """How a group's shared weights start from the teacher: "first" layer of the group, "average" of the
    group's layers, or "index" (the `init_index`-th layer of each group, clamped to the group's last layer)."""

    init_index: int = 0
    """Position within each group used when init="index"."""

    attn_transform: bool = True
    """Per-layer H×H mixing of attention maps across heads, before and after softmax (identity at init)."""

    mlp_transform: bool = True
    """Per-layer depth-wise conv over the patch-token grid before the MLP (residual, zero init = identity)."""

    kernel_size: int = 7
    """Kernel size of the depth-wise conv of the MLP transformation (odd)."""

    def validate(self) -> None:
        if isinstance(self.share, str):
            if self.share != "stage":
                raise VitCompressError(f"share={self.share!r} is not valid; use a positive int or 'stage' (Swin)")
        elif isinstance(self.share, bool) or not isinstance(self.share, int) or self.share < 1:
            raise VitCompressError(f"share={self.share!r} must be an integer >= 1 (layers per shared group)")
        if self.init not in INIT_CHOICES:
            raise VitCompressError(f"init={self.init!r} is not valid; choose one of {INIT_CHOICES}")
        if self.init_index < 0:
            raise VitCompressError(f"init_index={self.init_index} must be >= 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise VitCompressError(f"kernel_size={self.kernel_size} must be a positive odd integer (e.g. 3, 5, 7)")
        if self.groups is not None:
            if (
                not isinstance(self.groups, list | tuple)
                or not self.groups
                or not all(isinstance(g, list | tuple) and g for g in self.groups)
            ):
                raise VitCompressError("groups must be a non-empty list of non-empty lists of layer indices")
            # int() would silently turn 1.5 into 1 (and "1" into 1); a layer index must already be an integer.
            bad = [i for g in self.groups for i in g
                   if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
            if bad:
                raise VitCompressError(
                    f"groups: {bad[0]!r} is not a layer index; use integers, e.g. [[0, 1], [2, 3]]"
                )
            self.groups = [[int(i) for i in g] for g in self.groups]
