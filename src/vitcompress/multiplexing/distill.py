"""MiniViT weight distillation: logits, self-attention relations (Q/K/V) and hidden-state relations.

Activations are read through forward hooks on modules both timm's Attention and ours have (`q_norm`, `k_norm`,
V from `v_tap` or timm's `qkv` output, block outputs), so any timm ViT/DeiT teacher works with any student.
Swin: timm's WindowAttention has no q/k-norm, so Q, K and V are all read from its `qkv` output; either way they
arrive per window, (B·nW, heads, window area, head_dim), and relations are computed within each window.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vitcompress.errors import VitCompressError
from vitcompress.models.layers import head_dim, transformer_layers


class ActivationRecorder:
    """Keeps the latest Q, K, V and block output of chosen layers while `active`."""

    def __init__(self, model: nn.Module, attn_layers: list[int], hidden_layers: list[int]) -> None:
        self.active = False
        self.qkv: dict[int, dict[str, Tensor]] = {}
        self.hidden: dict[int, Tensor] = {}
        self._handles = []
        layers = transformer_layers(model)
        for i in attn_layers:
            attn = layers[i].attn
            self.qkv[i] = {}
            taps = {"q": getattr(attn, "q_norm", None), "k": getattr(attn, "k_norm", None),
                    "v": getattr(attn, "v_tap", None)}
            for name, tap in taps.items():
                if tap is not None:
                    self._hook(tap, lambda out, i=i, name=name: self._put_qkv(i, name, out))
            # The others are thirds of the fused qkv output: V of timm's Attention, all of Swin's WindowAttention.
            rest = tuple(name for name, tap in taps.items() if tap is None)
            if rest:
                heads, dim = attn.num_heads, head_dim(attn)

                def take(out: Tensor, i: int = i, h: int = heads, d: int = dim, names: tuple = rest) -> None:
                    parts = out.unflatten(-1, (3, h, d))  # (..., N, 3, H, d)
                    for name in names:
                        self._put_qkv(i, name, parts.select(-3, "qkv".index(name)).movedim(-2, -3))

                self._hook(attn.qkv, take)
        for i in hidden_layers:
            self._hook(layers[i], lambda out, i=i: self.hidden.__setitem__(i, out))

    def _hook(self, module: nn.Module, fn) -> None:
        def hook(_mod, _inp, out):
            if self.active:
                fn(out)

        self._handles.append(module.register_forward_hook(hook))

    def _put_qkv(self, layer: int, name: str, value: Tensor) -> None:
        self.qkv[layer][name] = value

    def clear(self) -> None:
        for d in self.qkv.values():
            d.clear()
        self.hidden.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def layer_pairs(spec: str | list[list[int]], student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """Resolve "last" / "all" / explicit pairs into (student_layer, teacher_layer) index pairs."""
    if spec == "last":
        return [(student_depth - 1, teacher_depth - 1)]
    if spec == "all":
        # Nearest layer, ties up (round() alternates on ties: uneven pairs when the teacher is shallower),
        # clamped at 0 (a teacher under half the student's depth would give -1, i.e. its last layer).
        ratio = teacher_depth / student_depth
        return [(i, max(0, math.floor((i + 1) * ratio + 0.5) - 1)) for i in range(student_depth)]
    pairs = [(int(s), int(t)) for s, t in spec]
    for s, t in pairs:
        if not (0 <= s < student_depth and 0 <= t < teacher_depth):
            raise VitCompressError(
                f"layer pair [{s}, {t}] is out of range: the student has layers 0..{student_depth - 1}, "
                f"the teacher 0..{teacher_depth - 1}"
            )
    return pairs


def relation_kl(student: Tensor, teacher: Tensor, heads: int) -> Tensor:
    """KL(teacher || student) between softmax(X Yᵀ/√(d/A)) relations, per relation head, mean over rows.

    Inputs are pairs (X, Y) of (B, N, C) tensors; C may differ between student and teacher.
    """
    def log_rel(x: Tensor, y: Tensor) -> Tensor:
        xa, ya = x.unflatten(-1, (heads, -1)).transpose(1, 2), y.unflatten(-1, (heads, -1)).transpose(1, 2)
        return (xa @ ya.transpose(-2, -1) / math.sqrt(xa.shape[-1])).log_softmax(-1)

    log_s, log_t = log_rel(*student), log_rel(*teacher)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def hidden_relation_mse(student: Tensor, teacher: Tensor, chunk: int) -> Tensor:
    """MSE between token×token cosine-similarity matrices, computed `chunk` query rows at a time.

    Each chunk is recomputed in backward (activation checkpointing), so peak memory is O(chunk·N), not O(N²):
    exact, unlike sampling tokens. Swin block outputs, (B, H, W, C) maps, come in flattened to (B, H·W, C): at
    stage 1 of a 224² input (N = 3136) the default chunk of 1024 holds 1024×3136 rows at a time where MiniViT's
    official loss builds the whole 3136×3136 matrix per image.
    """
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    n = s.shape[1]

    def block_sse(s_rows: Tensor, t_rows: Tensor, s_all: Tensor, t_all: Tensor) -> Tensor:
        return ((s_rows @ s_all.transpose(1, 2) - t_rows @ t_all.transpose(1, 2)) ** 2).sum()

    total = s.new_zeros(())
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        if n <= chunk:
            total = total + block_sse(s[:, rows], t[:, rows], s, t)
        else:
            total = total + checkpoint(block_sse, s[:, rows], t[:, rows], s, t, use_reentrant=False)
    return total / (s.shape[0] * n * n)


def logits_kd(student: Tensor, teacher: Tensor, temperature: float, kind: str) -> Tensor:
    log_s = F.log_softmax(student / temperature, dim=-1)
    p_t = F.softmax(teacher / temperature, dim=-1)
    if kind == "soft_ce":
        return -(p_t * log_s).sum(-1).mean()
    return F.kl_div(log_s, p_t, reduction="batchmean") * temperature**2
