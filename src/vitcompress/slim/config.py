"""SlimConfig (which masks to attach) and SparsityConfig (the ℓ1 pressure that trains them)."""

from __future__ import annotations

import dataclasses

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
    attn_weight: float = 2e-4
    """ℓ1 weight of the attention masks (paper, DeiT-S/B: 2e-4)."""

    mlp_weight: float = 5e-5
    """ℓ1 weight of the MLP masks (paper: 5e-5)."""

    tokens_weight: float = 1e-4
    """ℓ1 weight of the token masks' values tanh(θ)/tanh(θ_init) (paper: 1e-4)."""

    macs_weighted: bool = False
    """Weight each mask element by the MACs it controls, relative to the mean element of its type (see
    `vitcompress.slim.cost.element_macs`); the per-type weights keep their meaning."""

    mask_lr: float | None = None
    """Learning rate of the masks (their own AdamW group, no weight decay); None: the training lr."""

    def validate(self) -> None:
        for name in ("attn_weight", "mlp_weight", "tokens_weight"):
            if getattr(self, name) < 0:
                raise VitCompressError(f"{name}={getattr(self, name)} must be >= 0 (0 turns that term off)")
        if self.mask_lr is not None and not self.mask_lr > 0:
            raise VitCompressError(f"mask_lr={self.mask_lr} must be > 0; use None for the training lr")

    def weight(self, mask_type: str) -> float:
        return getattr(self, f"{mask_type}_weight")
