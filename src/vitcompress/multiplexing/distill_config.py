"""DistillConfig: the weight-distillation loss of MiniViT (prediction, self-attention and hidden-state terms)."""

from __future__ import annotations

import dataclasses

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError

RELATIONS = ("qq", "kk", "vv", "qk", "kq", "qv", "vq", "kv", "vk")
LayerPairs = str | list[list[int]]


@dataclasses.dataclass
class DistillConfig(BaseConfig):
    alpha: float = 0.5
    """Prediction loss = (1 - alpha) * CE(ground truth) + alpha * KD(logits). 1.0 is the paper's pure KD."""

    temperature: float = 1.0
    """Softmax temperature of the soft logit distillation (the KL term is scaled by T² as usual); unused by "hard"."""

    distillation_type: str = "soft"
    """Logit term: "soft" (match the teacher's distribution with `logits_loss`) or "hard" (DeiT: cross-entropy
    on the teacher's argmax; a distilled student's dist head learns from it)."""

    logits_loss: str = "kl"
    """Soft distillation's loss: "kl": KL(teacher || student), zero when they agree; "soft_ce": the official soft
    cross-entropy."""

    attn_weight: float = 1.0
    """Weight of the self-attention relation term (0 turns it off)."""

    hidden_weight: float = 0.1
    """Weight of the hidden-state relation term (0 turns it off)."""

    relations: list[str] = dataclasses.field(default_factory=lambda: ["qq", "kk", "vv"])
    """Which Q/K/V relations to match: the paper's Q-Q, K-K, V-V by default; any of the 9 pairs allowed."""

    relation_heads: int | None = None
    """Relation heads A: Q/K/V are split into A parts so teacher and student widths may differ.
    Default: the student's number of attention heads."""

    attn_layers: LayerPairs = "last"
    """Student↔teacher layer pairs for the attention term: "last", "all" (each student layer to the teacher
    layer at the same relative depth) or explicit [[student, teacher], ...]."""

    hidden_layers: LayerPairs = "last"
    """Layer pairs for the hidden-state term, same forms as `attn_layers`."""

    hidden_chunk: int = 1024
    """Rows of the token×token similarity matrix computed at once (recomputed in backward), bounding memory."""

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise VitCompressError(f"alpha={self.alpha} must be in [0, 1] (share of KD in the prediction loss)")
        if self.temperature <= 0:
            raise VitCompressError(f"temperature={self.temperature} must be > 0")
        if self.distillation_type not in ("soft", "hard"):
            raise VitCompressError(f"distillation_type={self.distillation_type!r} must be 'soft' or 'hard'")
        if self.logits_loss not in ("kl", "soft_ce"):
            raise VitCompressError(f"logits_loss={self.logits_loss!r} must be 'kl' or 'soft_ce'")
        if self.attn_weight < 0 or self.hidden_weight < 0:
            raise VitCompressError("attn_weight and hidden_weight must be >= 0 (0 turns a term off)")
        bad = [r for r in self.relations if r not in RELATIONS]
        if bad or not self.relations:
            raise VitCompressError(f"relations {bad or '[]'} invalid; choose from {list(RELATIONS)}")
        if self.relation_heads is not None and self.relation_heads < 1:
            raise VitCompressError(f"relation_heads={self.relation_heads} must be >= 1")
        for name in ("attn_layers", "hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, str):
                if value not in ("last", "all"):
                    raise VitCompressError(f"{name}={value!r} must be 'last', 'all' or [[student, teacher], ...]")
            elif not all(len(p) == 2 for p in value):
                raise VitCompressError(f"{name} pairs must each be [student_layer, teacher_layer]")
        if self.hidden_chunk < 1:
            raise VitCompressError(f"hidden_chunk={self.hidden_chunk} must be >= 1")

    @classmethod
    def off(cls) -> DistillConfig:
        """No distillation at all: ground-truth CE only (the plain weight-sharing ablation)."""
        return cls(alpha=0.0, attn_weight=0.0, hidden_weight=0.0)

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.uses_relations

    @property
    def uses_relations(self) -> bool:
        """Whether a relation term (Q/K/V or hidden states) is on: only these need a transformer teacher."""
        return self.attn_weight > 0 or self.hidden_weight > 0
