"""The training objective of a weight-distilled student: L = L_pred + w_attn·L_attn + w_hidden·L_hidden."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim, num_prefix_tokens, transformer_layers, window_layout
from vitcompress.models.spec import unwrap
from vitcompress.multiplexing.distill import (
    ActivationRecorder,
    hidden_relation_mse,
    layer_pairs,
    logits_kd,
    relation_kl,
)
from vitcompress.multiplexing.distill_config import DistillConfig


def _attn_width(layer: nn.Module) -> int:
    return layer.attn.num_heads * head_dim(layer.attn)


class DistillationObjective:
    """Callable `(model, images, targets) -> (loss, components)` for the training loop.

    The teacher is frozen and kept in eval mode. Components ("ce", "kd_logits", "kd_attn", "kd_hidden") are
    reported separately every step.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None, config: DistillConfig | None = None) -> None:
        self.config = config = config or DistillConfig()
        if config.uses_teacher and teacher is None:
            raise VitCompressError("distillation needs a teacher; pass one or use DistillConfig.off()")
        raw = unwrap(student)
        if hasattr(raw, "set_distilled_training"):
            raw.set_distilled_training(True)  # DeiT-distilled student: CE on the class head, KD on the dist head
        self.teacher = teacher
        self.s_prefix, self.t_prefix = num_prefix_tokens(raw), 0
        self.attn_pairs: list[tuple[int, int]] = []
        self.hidden_pairs: list[tuple[int, int]] = []
        self.recorders: tuple[ActivationRecorder, ActivationRecorder] | None = None
        if teacher is None or not config.uses_teacher:
            return
        teacher.eval().requires_grad_(False)
        self.t_prefix = num_prefix_tokens(teacher)
        s_layers, t_layers = transformer_layers(raw), transformer_layers(teacher)
        if config.attn_weight > 0:
            self.attn_pairs = layer_pairs(config.attn_layers, len(s_layers), len(t_layers))
        if config.hidden_weight > 0:
            self.hidden_pairs = layer_pairs(config.hidden_layers, len(s_layers), len(t_layers))
        self.heads = config.relation_heads or s_layers[0].attn.num_heads
        for s, t in self.attn_pairs:
            # Swin relations are per window: both sides must cut the map into the same windows, shifted alike.
            if window_layout(s_layers[s]) != window_layout(t_layers[t]):
                raise VitCompressError(
                    f"attention pair [{s}, {t}]: student and teacher layers use different windows "
                    f"(resolution, window, shift: {window_layout(s_layers[s])} vs {window_layout(t_layers[t])}); "
                    "pair layers of the same stage position, shifted with shifted (e.g. odd with odd)"
                )
            for who, width in (("student", _attn_width(s_layers[s])), ("teacher", _attn_width(t_layers[t]))):
                if width % self.heads:
                    raise VitCompressError(
                        f"relation_heads={self.heads} does not divide the {who}'s attention width {width}; "
                        "pick a common divisor of both widths"
                    )
        self.recorders = (
            ActivationRecorder(raw, [s for s, _ in self.attn_pairs], [s for s, _ in self.hidden_pairs]),
            ActivationRecorder(teacher, [t for _, t in self.attn_pairs], [t for _, t in self.hidden_pairs]),
        )

    def _align(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Same tokens on both sides: (B, N, C) as is, or patch tokens only if prefix counts differ."""
        s, t = (x.flatten(1, -2) if x.dim() == 4 else x for x in (s, t))  # Swin maps are (B, H, W, C)
        if s.shape[1] != t.shape[1]:
            s, t = s[:, self.s_prefix:], t[:, self.t_prefix:]
        if s.shape[:2] != t.shape[:2]:
            raise VitCompressError(
                f"student and teacher see different token layouts ({tuple(s.shape[:2])} vs {tuple(t.shape[:2])}); "
                "relation distillation needs the same patch grid, so use the same patch and input size"
            )
        return s, t

    def __call__(self, model: nn.Module, images: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        if self.recorders:
            for rec in self.recorders:
                rec.active = True
        try:
            t_logits = None
            if self.teacher is not None and cfg.uses_teacher:
                with torch.no_grad():
                    t_logits = self._teacher_logits(images)
            out = model(images)
            loss, parts = self._losses(out, t_logits, targets)
        finally:
            if self.recorders:
                for rec in self.recorders:
                    rec.active = False
                    rec.clear()
        parts["loss"] = loss.detach()
        return loss, {k: float(v) for k, v in parts.items()}

    def _teacher_logits(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        teacher = unwrap(self.teacher)
        if not hasattr(teacher, "set_distilled_training"):
            return self.teacher(images)
        # A DeiT-distilled teacher averages its two heads in eval mode; keep them apart, so a distilled
        # student's dist head learns from the teacher's dist head (and a copy of the teacher gets zero KD).
        feats = teacher.forward_features(images)
        return teacher.head(feats[:, 0]), teacher.head_dist(feats[:, 1])

    def _losses(self, out, t_logits: Tensor | None, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        cls_logits, dist_logits = out if isinstance(out, tuple) else (out, out)
        ce = F.cross_entropy(cls_logits, targets)
        parts = {"ce": ce.detach()}
        loss = (1.0 - cfg.alpha) * ce
        if t_logits is not None and cfg.alpha > 0:
            if isinstance(t_logits, tuple):  # distilled teacher: dist head to dist head, else its prediction
                t_logits = t_logits[1] if isinstance(out, tuple) else (t_logits[0] + t_logits[1]) / 2
            kd = logits_kd(dist_logits, t_logits, cfg.temperature, cfg.logits_loss)
            loss = loss + cfg.alpha * kd
            parts["kd_logits"] = kd.detach()
        if self.attn_pairs:
            s_rec, t_rec = self.recorders
            terms = []
            for s, t in self.attn_pairs:
                sq = {n: _tokens(v) for n, v in s_rec.qkv[s].items()}
                tq = {n: _tokens(v) for n, v in t_rec.qkv[t].items()}
                for rel in cfg.relations:
                    (sx, tx), (sy, ty) = self._align(sq[rel[0]], tq[rel[0]]), self._align(sq[rel[1]], tq[rel[1]])
                    terms.append(relation_kl((sx, sy), (tx, ty), self.heads))
            attn = torch.stack(terms).mean()
            loss = loss + cfg.attn_weight * attn
            parts["kd_attn"] = attn.detach()
        if self.hidden_pairs:
            s_rec, t_rec = self.recorders
            terms = [hidden_relation_mse(*self._align(s_rec.hidden[s], t_rec.hidden[t]), cfg.hidden_chunk)
                     for s, t in self.hidden_pairs]
            hidden = torch.stack(terms).mean()
            loss = loss + cfg.hidden_weight * hidden
            parts["kd_hidden"] = hidden.detach()
        return loss, parts


def _tokens(x: Tensor) -> Tensor:
    """(B, H, N, d) heads layout -> (B, N, H*d)."""
    return x.transpose(1, 2).flatten(2)
