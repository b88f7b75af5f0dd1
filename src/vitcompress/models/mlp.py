"""The one MLP core every surgery builds on, for each MLP kind timm's vision transformers use.

A hidden *unit* is what a mask scales and slimming keeps or drops: one fc1 row for timm's `Mlp`; for the gated
kinds the gate row and the value row of the same unit (timm's `GluMlp` packs them in one fc1, value half then gate
half or the reverse; `SwiGLU` keeps them in `fc1_g` and `fc1_x`), always together with that unit's fc2 column.

    x -> unit inputs -> activation (gated: act(gate) · value) -> × hidden mask -> drop1 -> norm -> fc2 -> drop2

The mask comes before the norm (timm's `scale_mlp`), so a removed unit is a zero the norm sees: extraction slices
the norm exactly with `models.sliced_norm`.

Weights are owned by the module (timm's names, so state-dict keys do not change) or bound to a multiplexed
group (`bind`), registered once elsewhere in the model.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from timm.layers import GluMlp, Mlp, SwiGLU
from torch import Tensor, nn

from vitcompress.models.attention import slice_linear
from vitcompress.models.sliced_norm import norm_linear


@dataclasses.dataclass(frozen=True)
class MlpKind:
    name: str
    inputs: tuple[str, ...]
    """Linears whose output rows are hidden units (fc2 reads them)."""
    packed: bool = False
    """One input linear holds two rows per unit (GluMlp: [first half | second half])."""

    @property
    def linears(self) -> tuple[str, ...]:
        return (*self.inputs, "fc2")

    @property
    def rows_per_unit(self) -> int:
        """Input-linear rows one hidden unit owns: 1 for a plain MLP, 2 (gate and value) for gated kinds."""
        return 2 if self.packed or len(self.inputs) > 1 else 1


PLAIN = MlpKind("mlp", ("fc1",))
GLU = MlpKind("glu", ("fc1",), packed=True)
SWIGLU = MlpKind("swiglu", ("fc1_g", "fc1_x"))
KINDS = {Mlp: PLAIN, GluMlp: GLU, SwiGLU: SWIGLU}
SUPPORTED = "timm Mlp, GluMlp (incl. SwiGLUPacked) and SwiGLU"


def mlp_kind(mlp: nn.Module) -> MlpKind | None:
    """The kind of a timm MLP or an MLP core; None for any other module (the caller refuses it in one line)."""
    if isinstance(mlp, MlpCore):
        return mlp.kind
    kind = KINDS.get(type(mlp))
    if kind == GLU and getattr(mlp, "chunk_dim", -1) != -1:  # the 1x1-conv variant, on NCHW maps
        return None
    return kind


def hidden_units(holder: nn.Module) -> int:
    """Hidden units of an MLP or of a group holding its linears (fc2's input width)."""
    return int(holder.fc2.in_features)


def unit_rows(kind: MlpKind, kept: list[int], hidden: int) -> list[int]:
    """Rows of each input linear that the kept units own (both halves of a packed GLU fc1)."""
    return kept + [hidden + i for i in kept] if kind.packed else kept


def slice_mlp(holder: nn.Module, kind: MlpKind, kept: list[int]) -> None:
    """Keep only the `kept` hidden units of the MLP linears `holder` has (an MLP, or a multiplexed group), in place."""
    hidden = hidden_units(holder)
    rows = unit_rows(kind, kept, hidden)
    for name in kind.inputs:
        setattr(holder, name, slice_linear(getattr(holder, name), out_index=rows))
    holder.fc2 = slice_linear(holder.fc2, in_index=kept)


class MlpCore(nn.Module):
    """An MLP of any supported kind, with owned or bound weights and an optional mask on its hidden units."""

    def __init__(self, kind: MlpKind, gate_last: bool = True) -> None:
        super().__init__()
        self.kind, self.gate_last = kind, gate_last
        self.act: nn.Module = nn.GELU()
        self.drop1: nn.Module = nn.Dropout(0.0)
        self.norm: nn.Module = nn.Identity()
        self.drop2: nn.Module = nn.Dropout(0.0)
        self.hidden_mask: nn.Parameter | None = None
        self._shared: nn.Module | None = None

    @classmethod
    def of(cls, mlp: nn.Module, *, owns: bool | None = None, mask: bool = False,
           share_children: bool = True) -> MlpCore:
        """A core computing what `mlp` (a timm MLP or a core) computes.

        Args:
            owns: Keep `mlp`'s linears as this module's own (default: when it has them); False for a multiplexed
                layer, whose linears come from its group (`bind`).
            mask: Add an owned `hidden_mask`, all ones (owned weights only; a group holds its own).
            share_children: Take `mlp`'s modules as they are; False: deep copies.
        """
        kind = mlp_kind(mlp)
        if kind is None:
            raise ValueError(f"{type(mlp).__name__} is not an MLP kind vitcompress knows ({SUPPORTED})")
        take = (lambda m: m) if share_children else copy.deepcopy
        core = cls(kind, bool(getattr(mlp, "gate_last", True)))
        for name in ("act", "drop1", "norm", "drop2"):
            setattr(core, name, take(getattr(mlp, name)))
        owns = isinstance(getattr(mlp, "fc2", None), nn.Linear) if owns is None else owns
        if owns:
            for name in kind.linears:
                setattr(core, name, take(getattr(mlp, name)))
            if mask:
                core.hidden_mask = nn.Parameter(torch.ones(hidden_units(core), device=core.fc2.weight.device))
        return core

    def bind(self, shared: nn.Module) -> None:
        object.__setattr__(self, "_shared", shared)  # registered once, under the model's shared groups

    def weights(self) -> nn.Module:
        return self._shared if self._shared is not None else self

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights()
        if self.kind.name == "mlp":  # kinds compare by name: a deep-copied model holds copies of them
            h = self.act(w.fc1(x))
        elif self.kind.name == "glu":
            a, b = w.fc1(x).chunk(2, dim=-1)
            h = a * self.act(b) if self.gate_last else self.act(a) * b
        else:
            h = self.act(w.fc1_g(x)) * w.fc1_x(x)
        mask = getattr(w, "hidden_mask", None)
        if mask is not None:
            h = h * mask
        return self.drop2(norm_linear(self.norm, w.fc2, self.drop1(h)))

    def extra_repr(self) -> str:
        return f"kind={self.kind.name}"
