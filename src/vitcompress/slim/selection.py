"""`Selection`: which attention dims, MLP units and patch tokens an extracted model keeps, per layer."""

from __future__ import annotations

import dataclasses
from typing import Any

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError
from vitcompress.slim.cost import Structure


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)


@dataclasses.dataclass
class Selection(BaseConfig):
    """Kept indices per layer; None leaves that dimension untouched. JSON-serialisable (`to_dict`/`from_dict`)."""

    attn: list[list[list[int]]] | None = None
    """Per layer, per head: the kept head-dim indices (a head with none left is removed; q/k-norm models keep
    heads whole). Layers sharing multiplexed weights must keep the same dims. On Swin, layers run in execution
    order over all stages and each lists its own stage's heads."""

    mlp: list[list[int]] | None = None
    """Per layer: the kept MLP hidden units (shared by the layers of a multiplexed group)."""

    tokens: list[list[int]] | None = None
    """Per layer: the kept patch positions (0 .. num_patches-1), each layer's a subset of the previous layer's;
    class/distillation/register tokens are always kept. ViT only (Swin keeps every token)."""

    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    """How it was chosen and what it costs (target, shares, params, MACs, ratios; on a model of several stages
    (Swin) also `stage_shares`, the kept share of each stage's attention dims and MLP units); informational only."""

    def validate(self) -> None:
        if self.attn is not None and not (
                isinstance(self.attn, list) and all(isinstance(layer, list) and all(_is_index_list(h) for h in layer)
                                                    for layer in self.attn)):
            raise VitCompressError("Selection.attn must be a list (layers) of lists (heads) of dim indices")
        for name in ("mlp", "tokens"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, list) and all(_is_index_list(v) for v in value)):
                raise VitCompressError(f"Selection.{name} must be a list (layers) of lists of indices")
        for name in ("attn", "mlp", "tokens"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _sorted_unique(value, name))
        if self.tokens is not None:
            for i in range(1, len(self.tokens)):
                if not set(self.tokens[i]) <= set(self.tokens[i - 1]):
                    raise VitCompressError(
                        f"Selection.tokens: layer {i} keeps tokens that layer {i - 1} dropped; a dropped token "
                        "stays dropped, so each layer's kept tokens must be a subset of the previous layer's"
                    )

    def check(self, s: Structure) -> None:
        """Raise unless this selection fits a model of structure `s`."""
        lists = {"attn": self.attn, "mlp": self.mlp, "tokens": self.tokens}
        for name, value in lists.items():
            if value is not None and len(value) != s.depth:
                raise VitCompressError(f"Selection.{name} has {len(value)} layers; the model has {s.depth}")
        if self.tokens is not None and not s.has_tokens:
            raise VitCompressError(
                "Selection.tokens is set, but Swin keeps every token: the paper searched Swin without token "
                "masks; select attention and MLP dims only"
            )
        if self.attn is not None:
            for i, heads in enumerate(self.attn):
                num_heads, head_dim = s.heads_of(s.owner[i]), s.head_dim_of(s.owner[i])
                if len(heads) != num_heads:
                    raise VitCompressError(f"Selection.attn layer {i} lists {len(heads)} heads; the model has "
                                           f"{num_heads}")
                for h, dims in enumerate(heads):
                    _check_range(dims, head_dim, f"attn layer {i} head {h}")
                    if s.per_head and len(dims) not in (0, head_dim):
                        raise VitCompressError(
                            f"Selection.attn layer {i} head {h} keeps {len(dims)} of {head_dim} dims; this model "
                            "has q/k-norm (a LayerNorm over head_dim), so heads are kept or removed whole"
                        )
        if self.mlp is not None:
            for i, units in enumerate(self.mlp):
                _check_range(units, s.hidden_of(s.owner[i]), f"mlp layer {i}")
        if self.tokens is not None:
            for i, kept in enumerate(self.tokens):
                _check_range(kept, s.num_patches, f"tokens layer {i}")
                if not kept:
                    raise VitCompressError(f"Selection.tokens layer {i} keeps no patch token; keep at least one")
        for name in ("attn", "mlp"):
            value = lists[name]
            if value is None:
                continue
            for o in range(s.num_owners):
                layers = s.layers_of(o)
                if any(value[i] != value[layers[0]] for i in layers):
                    raise VitCompressError(
                        f"Selection.{name}: layers {layers} share multiplexed weights but keep different "
                        "indices; a shared weight is sliced once, so they must agree"
                    )

    def widths(self, s: Structure) -> tuple[list[int], list[int], list[int]]:
        """(attention dims per owner, MLP units per owner, patch tokens per layer) this selection keeps."""
        attn, hidden, tokens = s.full()
        first = [s.layers_of(o)[0] for o in range(s.num_owners)]
        if self.attn is not None:
            attn = [sum(len(h) for h in self.attn[i]) for i in first]
        if self.mlp is not None:
            hidden = [len(self.mlp[i]) for i in first]
        if self.tokens is not None:
            tokens = [len(t) for t in self.tokens]
        return attn, hidden, tokens

    def kept_heads(self, s: Structure) -> list[int]:
        """Heads that keep at least one dim, per owner (the others are removed on extraction)."""
        if self.attn is None:
            return [s.heads_of(o) for o in range(s.num_owners)]
        return [sum(1 for h in self.attn[s.layers_of(o)[0]] if h) for o in range(s.num_owners)]

    def cost(self, s: Structure) -> tuple[int, int]:
        """(MACs per image, params) of the model this selection extracts."""
        self.check(s)
        return s.cost(*self.widths(s), self.kept_heads(s))

    @property
    def is_empty(self) -> bool:
        return self.attn is None and self.mlp is None and self.tokens is None


def _sorted_unique(value: list, name: str) -> list:
    if name == "attn":
        return [[_unique(h, name) for h in layer] for layer in value]
    return [_unique(v, name) for v in value]


def _unique(indices: list[int], name: str) -> list[int]:
    out = sorted(set(indices))
    if len(out) != len(indices):
        raise VitCompressError(f"Selection.{name} lists an index twice; list each kept index once")
    return out


def _check_range(indices: list[int], size: int, where: str) -> None:
    if indices and (indices[0] < 0 or indices[-1] >= size):
        raise VitCompressError(f"Selection {where}: indices must be in 0..{size - 1}, got {indices[0]}..{indices[-1]}")
