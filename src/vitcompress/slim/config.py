"""SlimConfig (which masks to attach) and SparsityConfig (the ℓ1 pressure that trains them)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError

MASK_TYPES = ("attn", "mlp", "tokens")


@dataclasses.dataclass
class SlimConfig(BaseConfig):
    attn: bool = True
    """Attention masks: one value per (layer, head, head-dim), multiplying q, k and v of that dim. On q/k-norm
    models one value per (layer, head): a LayerNorm over fewer dims is another function, so heads stay whole."""

    mlp: bool = True
    """MLP masks: one value per (layer, hidden unit), applied after the activation."""

    tokens: bool = False
    """Token masks: one value per (layer, patch position); a token dropped at a layer stays dropped after it and
    has no influence on any other token (class/distillation/register tokens are never masked)."""

    token_init: float = 3.0
    """θ at init for the token masks; a token's value is tanh(θ)/tanh(token_init), exactly 1 at init."""

    def validate(self) -> None:
        if not (self.attn or self.mlp or self.tokens):
            raise VitCompressError("SlimConfig masks nothing; enable at least one of attn, mlp, tokens")
        if not self.token_init > 0:
            raise VitCompressError(f"token_init={self.token_init} must be > 0 (the paper uses 3.0)")

    @property
    def types(self) -> list[str]:
        return [t for t in MASK_TYPES if getattr(self, t)]


@dataclasses.dataclass
class SparsityConfig(BaseConfig):
    """The ℓ1 pressure on the masks during the search, one weight per mask type."""

    # Version 2 renamed attn_weight/mlp_weight/tokens_weight to l1_*: `attn_weight` is DistillConfig's relation
    # weight, and both configs are flags of `vitcompress slim search`.
    VERSION: ClassVar[int] = 2

    l1_attn: float = 2e-4
    """ℓ1 weight of the attention masks (paper, DeiT-S/B: 2e-4)."""

    l1_mlp: float = 5e-5
    """ℓ1 weight of the MLP masks (paper: 5e-5)."""

    l1_tokens: float = 1e-4
    """ℓ1 weight of the token masks' values tanh(θ)/tanh(θ_init) (paper: 1e-4)."""

    macs_weighted: bool = False
    """Weight each mask element by the MACs it controls, relative to the mean element of its type (see
    `vitcompress.slim.cost.element_macs`); the per-type weights keep their meaning."""

    mask_lr: float | None = None
    """Learning rate of the masks (their own AdamW group, no weight decay); None: the training lr."""

    def validate(self) -> None:
        for kind in MASK_TYPES:
            if self.weight(kind) < 0:
                raise VitCompressError(f"l1_{kind}={self.weight(kind)} must be >= 0 (0 turns that term off)")
        if self.mask_lr is not None and not self.mask_lr > 0:
            raise VitCompressError(f"mask_lr={self.mask_lr} must be > 0; use None for the training lr")

    def weight(self, mask_type: str) -> float:
        """The ℓ1 weight of one mask type ("attn", "mlp" or "tokens")."""
        return getattr(self, f"l1_{mask_type}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparsityConfig:
        """Also reads version-1 dicts (saved models' extras, old recipes), whose weights were `<type>_weight`."""
        data = dict(data)
        if data.get("version", cls.VERSION) < 2:
            data = {_V1_NAMES.get(k, k): v for k, v in data.items()}
            data["version"] = cls.VERSION
        return super().from_dict(data)


_V1_NAMES = {f"{kind}_weight": f"l1_{kind}" for kind in MASK_TYPES}
