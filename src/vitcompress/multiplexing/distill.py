"""MiniViT weight distillation: logits, self-attention relations (Q/K/V) and hidden-state relations.

Activations are read through forward hooks on modules both timm's Attention and ours have (`q_norm`, `k_norm`,
V from `v_tap` or timm's `qkv` output, block outputs), so any timm ViT/DeiT teacher works with any student.
Swin: timm's WindowAttention has no q/k-norm, so Q, K and V are all read from its `qkv` output; either way they
arrive per window, (B·nW, heads, window area, head_dim), and relations are computed within each window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitcompress.errors import VitCompressError
from vitcompress.models.attention import qkv_projection
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
            rest = tuple(name for name, tap in taps.items() if tap is None)
            if rest and not _calls_qkv(attn):
                # EVA's and Swin V2's attentions add their q/v biases in F.linear (or project q, k, v separately),
                # so the qkv module never runs: the missing parts are projected again from the attention's input.
                heads = attn.num_heads

                def project(x: Tensor, i: int = i, a: nn.Module = attn, h: int = heads, names: tuple = rest) -> None:
                    with torch.no_grad():
                        parts = qkv_projection(a, x, "".join(names)).unflatten(-1, (len(names), h, -1))
                    for n, name in enumerate(names):
                        self._put_qkv(i, name, parts.select(-3, n).movedim(-2, -3))

                self._pre_hook(attn, project)
            elif rest:
                # Thirds of the fused qkv output: V of timm's Attention, all of Swin's WindowAttention.
                heads, dim = attn.num_heads, head_dim(attn)

                def take(out: Tensor, i: int = i, h: int = heads, d: int = dim, names: tuple = rest) -> None:
                    parts = out.unflatten(-1, (3, h, d))  # (..., N, 3, H, d)
                    for name in names:
                        self._put_qkv(i, name, parts.select(-3, "qkv".index(name)).movedim(-2, -3))

                self._hook(attn.qkv, take)
        for i in hidden_layers:
            self._hook(layers[i], lambda out, i=i: self.hidden.__setitem__(i, out))

    def _pre_hook(self, module: nn.Module, fn) -> None:
        def hook(_mod, args):
            if self.active:
                fn(args[0])

        self._handles.append(module.register_forward_pre_hook(hook))

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


def _calls_qkv(attn: nn.Module) -> bool:
    """Whether the attention's forward runs its fused `qkv` module (so a hook on it sees q, k and v)."""
    return isinstance(getattr(attn, "qkv", None), nn.Module) and getattr(attn, "q_bias", None) is None


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


def relation_kl(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor], heads: int) -> Tensor:
    """KL(teacher || student) between softmax(X Yᵀ/√(d/A)) relations, per relation head, mean over rows.

    Args:
        student: The student's (X, Y), each (B, N, C_s); X and Y may be the same tensor (Q-Q, K-K, V-V).
        teacher: The teacher's (X, Y), each (B, N, C_t); C_t may differ from C_s.
        heads: Relation heads A: C_s and C_t are each split into A parts of C/A dims.

    Returns:
        The mean over B·A·N relation rows of Σ_j p_t log(p_t / p_s), a scalar.

    The teacher's relation is computed once without autograd, the student's by `_StudentRelationKL`, whose
    backward is written out (see there). A teacher that requires grad (trained too) takes the plain autograd form.
    """
    (xs, ys), (xt, yt) = student, teacher
    if xt.requires_grad or yt.requires_grad:
        log_s, log_t = (_logits(*(_split_heads(v, heads) for v in pair)).log_softmax(-1) for pair in (student, teacher))
        return (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    with torch.no_grad():
        t_logits = _logits(_split_heads(xt, heads), _split_heads(yt, heads))
        p_t = t_logits.softmax(-1)
        lse_t = _logsumexp(t_logits, p_t)
    xa = _split_heads(xs, heads).contiguous()  # one copy, reused by forward and backward
    ya = None if ys is xs else _split_heads(ys, heads).contiguous()
    return _StudentRelationKL.apply(xa, ya, t_logits, p_t, lse_t)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, C) -> (B, A, N, C/A), a view."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _logits(x: Tensor, y: Tensor | None) -> Tensor:
    """X Yᵀ/√d (Y = X when None), (…, N, N). The scale multiplies the (N, d) factor, not the (N, N) product: for
    d = 4^k it is a power of two, so the logits are bit-identical to dividing the product."""
    x = x.contiguous()  # hooked views of a fused qkv output: (…, N, d) batches matmul would copy otherwise
    return (x * (1.0 / math.sqrt(x.shape[-1]))) @ (x if y is None else y.contiguous()).transpose(-2, -1)


def _logsumexp(logits: Tensor, probs: Tensor) -> Tensor:
    """Row log-sum-exp from the softmax already computed: at the row maximum p = 1/Σ exp(l − max), so
    lse = max − log(max p). Two cheap reductions instead of `logsumexp`, which exponentiates the rows again."""
    return logits.amax(-1) - probs.amax(-1).log()


class _StudentRelationKL(torch.autograd.Function):
    """Mean over rows of KL(p_t || softmax(x yᵀ/√d)) for a fixed teacher relation, with a written-out backward.

    With l_t, l_s the logits, Σ_j p_t = 1 gives KL_row = Σ_j p_t (l_t − l_s)_j − (lse_t − lse_s): one softmax per
    side and no log-softmax, exp of it, or N×N products kept for autograd. d KL_row / d l_s = p_s − p_t, so backward
    keeps that one N×N tensor and runs two matmuls (one when y is x: the logits are x xᵀ, so x gets (G + Gᵀ) x).
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor | None, t_logits: Tensor, p_t: Tensor, lse_t: Tensor) -> Tensor:
        s_logits = _logits(x, y)
        p_s = s_logits.softmax(-1)
        lse_s = _logsumexp(s_logits, p_s)
        rows = lse_s.numel()
        diff = torch.sub(t_logits, s_logits, out=s_logits)  # the student's logits are not needed any more
        # Under autocast the logits may be bf16/fp16: the sums are taken in fp32.
        kl = (torch.dot(p_t.reshape(-1).float(), diff.reshape(-1).float()) - (lse_t - lse_s).float().sum()) / rows
        ctx.scale, ctx.rows, ctx.same = 1.0 / math.sqrt(x.shape[-1]), rows, y is None
        ctx.save_for_backward(p_s.sub_(p_t), x, x if y is None else y)
        return kl

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        grad_logits, x, y = ctx.saved_tensors
        grad_logits = grad_logits.to(x.dtype)
        g = grad * (ctx.scale / ctx.rows)
        if ctx.same:
            # One N×N add and one matmul instead of two matmuls (an N×N pass costs less than a matmul).
            gx = ((grad_logits + grad_logits.transpose(-2, -1)) @ x).mul_(g)
            return gx, None, None, None, None
        gx = (grad_logits @ y).mul_(g) if ctx.needs_input_grad[0] else None
        gy = (grad_logits.transpose(-2, -1) @ x).mul_(g) if ctx.needs_input_grad[1] else None
        return gx, gy, None, None, None


def hidden_relation_mse(student: Tensor, teacher: Tensor, chunk: int) -> Tensor:
    """MSE between token×token cosine-similarity matrices, computed `chunk` query rows at a time.

    Peak memory is O(chunk·N), not O(N²): exact, unlike sampling tokens. Swin block outputs, (B, H, W, C) maps,
    come in flattened to (B, H·W, C): at stage 1 of a 224² input (N = 3136) the default chunk of 1024 holds
    1024×3136 rows at a time where MiniViT's official loss builds the whole 3136×3136 matrix per image.

    Args:
        student: (B, N, C_s) tokens.
        teacher: (B, N, C_t) tokens; C_t may differ from C_s.
        chunk: Rows of the N×N matrices held at once.

    Returns:
        mean_ij (ŝ_i·ŝ_j − t̂_i·t̂_j)² over the batch, with ŝ, t̂ the L2-normalised tokens.
    """
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    n = s.shape[1]
    return _GramSSE.apply(s, t, chunk) / (s.shape[0] * n * n)


def _gram_diff(s: Tensor, t: Tensor, rows: slice) -> Tensor:
    """Rows `rows` of D = S Sᵀ − T Tᵀ, (B, rows, N)."""
    return torch.baddbmm(t[:, rows] @ t.transpose(1, 2), s[:, rows], s.transpose(1, 2), beta=-1.0)


class _GramSSE(torch.autograd.Function):
    """Σ_ij (S Sᵀ − T Tᵀ)²_ij, row chunk by row chunk, with a hand-written backward.

    D is symmetric, so dΣ/dS = 4 D S and dΣ/dT = −4 D T: one matmul per side and chunk, where autograd through
    `s_rows @ s_allᵀ` ran two. A single chunk keeps its D for backward; several are recomputed one at a time,
    so memory stays O(chunk·N) as with activation checkpointing.
    """

    @staticmethod
    def forward(ctx, s: Tensor, t: Tensor, chunk: int) -> Tensor:
        n = s.shape[1]
        total = s.new_zeros(())
        kept = None
        for start in range(0, n, chunk):
            d = _gram_diff(s, t, slice(start, start + chunk))
            d32 = d.reshape(-1).float()  # under autocast the matmuls give bf16/fp16; sum the squares in fp32
            total += torch.dot(d32, d32)
            kept = d if n <= chunk else None
        ctx.chunk = chunk
        ctx.save_for_backward(s, t, *([] if kept is None else [kept]))
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        s, t, *kept = ctx.saved_tensors
        need_s, need_t = ctx.needs_input_grad[:2]
        n, chunk = s.shape[1], ctx.chunk
        gs, gt = [], []
        for start in range(0, n, chunk):
            d = (kept[0] if kept else _gram_diff(s, t, slice(start, start + chunk))).to(s.dtype)
            if need_s:
                gs.append(d @ s)
            if need_t:
                gt.append(d @ t)
        return (torch.cat(gs, 1).mul_(4 * grad) if need_s else None,
                torch.cat(gt, 1).mul_(-4 * grad) if need_t else None, None)


def logits_kd(student: Tensor, teacher: Tensor, temperature: float, kind: str) -> Tensor:
    log_s = F.log_softmax(student / temperature, dim=-1)
    p_t = F.softmax(teacher / temperature, dim=-1)
    if kind == "soft_ce":
        return -(p_t * log_s).sum(-1).mean()
    return F.kl_div(log_s, p_t, reduction="batchmean") * temperature**2
