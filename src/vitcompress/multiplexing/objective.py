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


def _name(model: nn.Module) -> str:
    return type(unwrap(model)).__name__


def _relation_layers(model: nn.Module, role: str) -> list[nn.Module]:
    """The transformer layers whose activations the relation terms hook, or a one-line error for any other model."""
    try:
        layers = transformer_layers(model)
    except VitCompressError:  # no transformer blocks
        layers = []

    def readable(layer: nn.Module) -> bool:
        attn = getattr(layer, "attn", None)
        taps = all(isinstance(getattr(attn, t, None), nn.Module) for t in ("q_norm", "k_norm", "v_tap"))
        projected = any(isinstance(getattr(attn, p, None), nn.Module) for p in ("qkv", "q_proj"))  # fused/separate
        return hasattr(attn, "num_heads") and (projected or taps)

    if not layers or not all(map(readable, layers)):
        fix = ("pass a transformer (ViT/DeiT/Swin/EVA/BEiT) as relation_teacher" if role.endswith("teacher")
               else "use a ViT/DeiT/Swin/EVA student")
        raise VitCompressError(
            f"the {role} {_name(model)} has no transformer blocks, which the attention/hidden relation terms read; "
            f"{fix}, or set attn_weight=0 and hidden_weight=0 to distil logits only"
        )
    return layers


def _check_classes(student: int | None, teacher: int | None, who: nn.Module) -> None:
    if student is not None and teacher is not None and student != teacher:
        raise VitCompressError(
            f"the teacher {_name(who)} predicts {teacher} classes, the student {student}; "
            "distil from a teacher with the student's classes (e.g. fine-tuned on the same data)"
        )


def _features(model: nn.Module):
    """What a relation-only teacher runs: its blocks (hooked) without the head, where timm offers that."""
    features = getattr(unwrap(model), "forward_features", None)
    return features if callable(features) else model


class DistillationObjective:
    """Callable `(model, images, targets) -> (loss, components)` for the training loop.

    Logits are distilled from `teacher`, which may be any timm classifier (a CNN such as RegNetY, as for DeiT and
    Mini-DeiT); the Q/K/V and hidden-state relations from `relation_teacher` when given, else from `teacher`, and
    these need a transformer (ViT/DeiT, Swin V1/V2, EVA/DINOv3, BEiT). Only the teachers a term needs are frozen,
    put in eval mode and run, each once per step under the caller's autocast. Targets are class indices or, from
    Mixup/CutMix, per-class probabilities (the teacher sees the same mixed images). Components ("ce", "kd_logits",
    "kd_attn", "kd_hidden") are reported separately every step. `close()` removes the forward hooks the objective
    registered.

    Args:
        student: The model being trained (possibly wrapped); a DeiT-distilled one trains its dist head on the KD term.
        teacher: Logit teacher; None only when `config.alpha` is 0 and no relation term needs it.
        config: The distillation loss; default `DistillConfig()`.
        relation_teacher: Teacher of the relation terms (default: `teacher`); ignored when they are off.
        label_smoothing: Of the ground-truth cross-entropy on class-index targets (soft targets carry their own).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        config: DistillConfig | None = None,
        relation_teacher: nn.Module | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.config = config = config or DistillConfig()
        relations = config.uses_relations
        relation_teacher = relation_teacher if relation_teacher is not None else teacher
        if (config.alpha > 0 and teacher is None) or (relations and relation_teacher is None):
            raise VitCompressError("distillation needs a teacher; pass one or use DistillConfig.off()")
        if not 0.0 <= label_smoothing < 1.0:
            raise VitCompressError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.label_smoothing = label_smoothing
        raw = unwrap(student)
        if hasattr(raw, "set_distilled_training"):
            raw.set_distilled_training(True)  # DeiT-distilled student: CE on the class head, KD on the dist head
        # A teacher no term reads is left alone: a logit-only CNN is never asked for transformer blocks.
        self.teacher = teacher if config.alpha > 0 else None
        self.relation_teacher = relation_teacher if relations else None
        for model in {id(m): m for m in (self.teacher, self.relation_teacher) if m is not None}.values():
            model.eval().requires_grad_(False)
        if self.teacher is not None:
            _check_classes(getattr(raw, "num_classes", None), getattr(unwrap(teacher), "num_classes", None), teacher)
        self.s_prefix, self.t_prefix = num_prefix_tokens(raw), 0
        self.attn_pairs: list[tuple[int, int]] = []
        self.hidden_pairs: list[tuple[int, int]] = []
        self.recorders: tuple[ActivationRecorder, ActivationRecorder] | None = None
        self._closed = False
        if relations:
            self._hook_relations(raw, self.relation_teacher)

    def _hook_relations(self, raw: nn.Module, teacher: nn.Module) -> None:
        config = self.config
        self.t_prefix = num_prefix_tokens(teacher)
        s_layers, t_layers = _relation_layers(raw, "student"), _relation_layers(teacher, "relation teacher")
        self._roles = (f"student {_name(raw)}", f"relation teacher {_name(teacher)}")
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
        if self._closed:
            raise VitCompressError("this DistillationObjective was closed (its hooks are removed); build a new one")
        recorders = self.recorders or ()
        for rec in recorders:
            rec.active = True
        try:
            t_logits = None
            with torch.no_grad():
                if self.teacher is not None:
                    t_logits = self._teacher_logits(images)
                if self.relation_teacher is not None and self.relation_teacher is not self.teacher:
                    _features(self.relation_teacher)(images)  # only its hooked activations are read
            out = model(images)
            self._check_recorded()
            loss, parts = self._losses(out, t_logits, targets)
        finally:
            for rec in recorders:
                rec.active = False
                rec.clear()
        parts["loss"] = loss.detach()
        return loss, {k: float(v) for k, v in parts.items()}

    def close(self) -> None:
        """Remove the forward hooks registered on the student and the relation teacher; the objective is then spent."""
        for rec in self.recorders or ():
            rec.remove()
        self._closed = True

    def __enter__(self) -> DistillationObjective:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_recorded(self) -> None:
        # An attention that bypasses the hooked modules (BEiT/EVA call F.linear on qkv's weight) records nothing.
        needed = set("".join(self.config.relations)) if self.attn_pairs else set()
        for side, rec in enumerate(self.recorders or ()):
            hidden = {pair[side] for pair in self.hidden_pairs}
            bad = {i for i, got in rec.qkv.items() if not needed <= got.keys()} | (hidden - rec.hidden.keys())
            if bad:
                raise VitCompressError(
                    f"the {self._roles[side]} exposed no Q/K/V or block output at layers {sorted(bad)} (its attention "
                    "bypasses the qkv/q_norm/k_norm modules read by hooks); relation terms support timm "
                    "ViT/DeiT/Swin/EVA/BEiT, so use one, or set attn_weight=0 and hidden_weight=0"
                )

    def _teacher_logits(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        teacher = unwrap(self.teacher)
        if not hasattr(teacher, "set_distilled_training"):
            return self.teacher(images)
        # A DeiT-distilled teacher averages its two heads in eval mode; keep them apart, so a distilled
        # student's dist head learns from the teacher's dist head (and a copy of the teacher gets zero KD).
        feats = teacher.forward_features(images)
        return teacher.head(feats[:, 0]), teacher.head_dist(feats[:, 1])

    def _prediction(self, out, t_logits, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(1 - alpha)·CE(class head, targets) + alpha·KD(dist head, teacher), in fp32 (autocast logits may be bf16)."""
        cfg = self.config
        cls_logits, dist_logits = (x.float() for x in (out if isinstance(out, tuple) else (out, out)))
        # Soft targets (Mixup/CutMix) already carry their smoothing; class indices get ours.
        soft = targets.is_floating_point()
        ce = F.cross_entropy(cls_logits, targets.float() if soft else targets,
                             label_smoothing=0.0 if soft else self.label_smoothing)
        parts = {"ce": ce.detach()}
        loss = (1.0 - cfg.alpha) * ce
        if t_logits is not None:
            if isinstance(t_logits, tuple):  # distilled teacher: dist head to dist head, else its prediction
                t_logits = t_logits[1] if isinstance(out, tuple) else (t_logits[0] + t_logits[1]) / 2
            t_logits = t_logits.float()
            _check_classes(dist_logits.shape[-1], t_logits.shape[-1], self.teacher)
            if cfg.distillation_type == "hard":  # DeiT: the teacher's argmax as a label
                kd = F.cross_entropy(dist_logits, t_logits.argmax(-1))
            else:
                kd = logits_kd(dist_logits, t_logits, cfg.temperature, cfg.logits_loss)
            loss = loss + cfg.alpha * kd
            parts["kd_logits"] = kd.detach()
        return loss, parts

    def _losses(self, out, t_logits: Tensor | None, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.config
        loss, parts = self._prediction(out, t_logits, targets)
        if self.attn_pairs:
            s_rec, t_rec = self.recorders
            terms = []
            for s, t in self.attn_pairs:
                # Aligned once per Q/K/V: a Q-Q relation then gets the same tensor twice, which relation_kl
                # differentiates with one matmul instead of two.
                qkv = {n: self._align(_tokens(v), _tokens(t_rec.qkv[t][n])) for n, v in s_rec.qkv[s].items()}
                for rel in cfg.relations:
                    (sx, tx), (sy, ty) = qkv[rel[0]], qkv[rel[1]]
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
