"""The hand-differentiated relation losses equal the autograd implementation they replaced, values and gradients.

`reference_*` below is a frozen copy of `relation_kl`, `hidden_relation_mse` and the attention/hidden blocks of
`DistillationObjective._losses` as they were before the fast paths (commit 5ca3587). Keep it as is: it is the
definition the fast code must match up to float rounding.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.checkpoint import checkpoint

import vitcompress as vc
from vitcompress.multiplexing.distill import hidden_relation_mse, relation_kl

ALL_RELATIONS = ["qq", "kk", "vv", "qk", "kq", "qv", "vq", "kv", "vk"]


# --- frozen reference (do not edit) -----------------------------------------------------------------------------

def reference_relation_kl(student, teacher, heads):
    def log_rel(x, y):
        xa, ya = x.unflatten(-1, (heads, -1)).transpose(1, 2), y.unflatten(-1, (heads, -1)).transpose(1, 2)
        return (xa @ ya.transpose(-2, -1) / math.sqrt(xa.shape[-1])).log_softmax(-1)

    log_s, log_t = log_rel(*student), log_rel(*teacher)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def reference_hidden_relation_mse(student, teacher, chunk):
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    n = s.shape[1]

    def block_sse(s_rows, t_rows, s_all, t_all):
        return ((s_rows @ s_all.transpose(1, 2) - t_rows @ t_all.transpose(1, 2)) ** 2).sum()

    total = s.new_zeros(())
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        if n <= chunk:
            total = total + block_sse(s[:, rows], t[:, rows], s, t)
        else:
            total = total + checkpoint(block_sse, s[:, rows], t[:, rows], s, t, use_reentrant=False)
    return total / (s.shape[0] * n * n)


def reference_tokens(x):
    return x.transpose(1, 2).flatten(2)


def reference_attn(obj):
    s_rec, t_rec = obj.recorders
    terms = []
    for s, t in obj.attn_pairs:
        sq = {n: reference_tokens(v) for n, v in s_rec.qkv[s].items()}
        tq = {n: reference_tokens(v) for n, v in t_rec.qkv[t].items()}
        for rel in obj.config.relations:
            (sx, tx), (sy, ty) = obj._align(sq[rel[0]], tq[rel[0]]), obj._align(sq[rel[1]], tq[rel[1]])
            terms.append(reference_relation_kl((sx, sy), (tx, ty), obj.heads))
    return torch.stack(terms).mean()


def reference_hidden(obj):
    s_rec, t_rec = obj.recorders
    terms = [reference_hidden_relation_mse(*obj._align(s_rec.hidden[s], t_rec.hidden[t]), obj.config.hidden_chunk)
             for s, t in obj.hidden_pairs]
    return torch.stack(terms).mean()


# --- helpers ----------------------------------------------------------------------------------------------------

def tiny_vit(seed=0, **overrides):
    torch.manual_seed(seed)
    kw = {**dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=10), **overrides}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).eval()


def tiny_swin(seed=0, **overrides):
    torch.manual_seed(seed)
    # 16×16 then 8×8 maps in windows of 4: 16-token windows, shifted every other layer; 256 tokens in stage 1.
    kw = {**dict(patch_size=4, num_classes=10, img_size=64, window_size=4, embed_dim=24, depths=(2, 4),
                 num_heads=(2, 4)), **overrides}
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **kw).eval()


def perturbed(model, scale=0.05, seed=2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def assert_close_scaled(actual, expected, msg=""):
    """assert_close relative to the largest reference entry: gradients of these means are tiny (~1/(B·N²)), so
    the default absolute tolerance alone would accept any of them."""
    scale = expected.abs().max().clamp_min(1e-30)
    assert_close(actual / scale, expected / scale, msg=msg)


def check_objective_matches_reference(student, teacher, config, images):
    """The objective's kd_attn / kd_hidden, and the gradients of its relation terms w.r.t. the images and every
    student parameter, equal the reference blocks evaluated on the same recorded activations."""
    objective = vc.DistillationObjective(student, teacher, config)
    fast_losses, captured = objective._losses, {}

    def spy(out, t_logits, targets):
        loss, parts = fast_losses(out, t_logits, targets)
        ce = F.cross_entropy(out, targets)  # alpha = 0: the prediction term is the plain CE
        ref = 0.0
        if objective.attn_pairs:
            captured["kd_attn"] = reference_attn(objective)
            ref = ref + config.attn_weight * captured["kd_attn"]
        if objective.hidden_pairs:
            captured["kd_hidden"] = reference_hidden(objective)
            ref = ref + config.hidden_weight * captured["kd_hidden"]
        # The relation terms alone, so their gradients are not drowned in the cross-entropy's.
        captured["loss"], captured["reference_loss"] = loss - ce, ref
        return loss, parts

    objective._losses = spy
    images = images.clone().requires_grad_(True)
    _, parts = objective(student, images, torch.arange(images.shape[0]) % 10)
    terms = [t for t in ("kd_attn", "kd_hidden") if t in captured]
    assert terms, "no relation term was on"
    for term in terms:
        assert captured[term] > 1e-4, f"{term} is ~0: the comparison would be vacuous"
        assert_close(torch.tensor(parts[term]), captured[term].detach().float(), msg=term)
    inputs = [images, *(p for p in student.parameters() if p.requires_grad)]
    fast = torch.autograd.grad(captured["loss"], inputs, retain_graph=True, allow_unused=True)
    ref = torch.autograd.grad(captured["reference_loss"], inputs, allow_unused=True)
    names = ["images", *(n for n, p in student.named_parameters() if p.requires_grad)]
    for name, f, r in zip(names, fast, ref, strict=True):
        if r is None:
            assert f is None or not f.any(), name
            continue
        assert_close_scaled(f, r, msg=name)
    objective.close()


def config(**overrides):
    return vc.DistillConfig(**{"alpha": 0.0, "attn_layers": "all", "hidden_layers": "all", **overrides})


# --- the objective, end to end ------------------------------------------------------------------------------------

VIT_CASES = {
    # name: (teacher overrides, student overrides, share, DistillConfig overrides)
    "same_width": ({}, {}, 2, {}),
    "nine_relations_chunked": ({}, {}, 2, dict(relations=ALL_RELATIONS, hidden_chunk=5)),  # 17 tokens, 4 chunks
    "wider_deeper_teacher": (dict(embed_dim=64, num_heads=4, depth=4), dict(depth=2), 2,
                             dict(relation_heads=2, relations=ALL_RELATIONS, hidden_chunk=8)),
    "one_relation_head": ({}, {}, 1, dict(relation_heads=1, relations=["qq", "kv"])),  # d = 32: 1/√d not a power of 2
    "register_tokens_teacher": (dict(reg_tokens=4, depth=4), {}, 1, dict(relations=["qq", "vk"], hidden_chunk=7)),
    "attn_only": ({}, {}, 2, dict(hidden_weight=0.0)),
    "hidden_only": ({}, {}, 2, dict(attn_weight=0.0, hidden_chunk=3)),
}


@pytest.mark.parametrize("case", list(VIT_CASES))
def test_vit_objective_matches_the_reference(case):
    t_kw, s_kw, share, c_kw = VIT_CASES[case]
    teacher = tiny_vit(**t_kw)
    student = perturbed(vc.multiplex(tiny_vit(seed=5, **s_kw), vc.MultiplexConfig(share=share))).train()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    check_objective_matches_reference(student, teacher, config(**c_kw), images)


SWIN_CASES = {
    "same_width_chunked": ({}, dict(relations=ALL_RELATIONS, hidden_chunk=48)),  # 256 tokens: 6 chunks, last smaller
    "wider_teacher_relation_heads": (dict(embed_dim=32), dict(relation_heads=2, hidden_chunk=100)),
    "whole_map_one_chunk": ({}, dict(relations=["qk", "vv"])),
}


@pytest.mark.parametrize("case", list(SWIN_CASES))
def test_swin_objective_matches_the_reference(case):
    t_kw, c_kw = SWIN_CASES[case]
    teacher = tiny_swin(**t_kw)
    student = perturbed(vc.multiplex(tiny_swin(seed=5), vc.MultiplexConfig(share=2))).train()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    check_objective_matches_reference(student, teacher, config(**c_kw), images)


# --- the functions ------------------------------------------------------------------------------------------------

def qkv_views(batch, tokens, heads, dim, seed, requires_grad):
    """Q, K, V as (B, N, C) views of one fused (B, N, 3C) output, the layout the recorders hand over."""
    gen = torch.Generator().manual_seed(seed)
    fused = torch.randn(batch, tokens, 3 * heads * dim, generator=gen, requires_grad=requires_grad)
    parts = fused.unflatten(-1, (3, heads, dim)).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
    return fused, [reference_tokens(p) for p in parts.unbind(0)]


@pytest.mark.parametrize(("s_heads", "s_dim", "t_heads", "t_dim", "relation_heads"),
                         [(2, 16, 2, 16, 2), (3, 8, 4, 16, 2), (2, 16, 2, 16, 4), (6, 64, 6, 64, 6)],
                         ids=["same", "widths_differ", "more_relation_heads", "deit_s_head"])
@pytest.mark.parametrize("pair", ["qq", "kv", "vq"])
def test_relation_kl_matches_the_reference(s_heads, s_dim, t_heads, t_dim, relation_heads, pair):
    s_fused, s_qkv = qkv_views(2, 13, s_heads, s_dim, seed=0, requires_grad=True)
    _, t_qkv = qkv_views(2, 13, t_heads, t_dim, seed=1, requires_grad=False)
    i, j = ("qkv".index(c) for c in pair)
    fast = relation_kl((s_qkv[i], s_qkv[j]), (t_qkv[i], t_qkv[j]), relation_heads)
    ref = reference_relation_kl((s_qkv[i], s_qkv[j]), (t_qkv[i], t_qkv[j]), relation_heads)
    assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad(fast, s_fused)
    (g_ref,) = torch.autograd.grad(ref, s_fused)
    assert_close_scaled(g_fast, g_ref)


def test_relation_kl_of_equal_relations_is_zero_and_a_trained_teacher_gets_gradients():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    assert float(relation_kl((x, y), (x, y), heads=2)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_kl((x, x), (x, x), heads=2)) == pytest.approx(0.0, abs=1e-6)
    xs, xt = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    fast, ref = relation_kl((xs, xs), (xt, xt), 2), reference_relation_kl((xs, xs), (xt, xt), 2)
    assert_close(fast, ref)
    for a, b in zip(torch.autograd.grad(fast, (xs, xt)), torch.autograd.grad(ref, (xs, xt)), strict=True):
        assert_close_scaled(a, b)


@pytest.mark.parametrize("chunk", [1024, 17, 5, 1], ids=["one_chunk", "exactly_n", "chunks", "rows"])
@pytest.mark.parametrize("teacher_grad", [False, True], ids=["frozen_teacher", "trained_teacher"])
def test_hidden_relation_mse_matches_the_reference(chunk, teacher_grad):
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 17, 8, generator=gen, requires_grad=True)
    t = torch.randn(2, 17, 12, generator=gen, requires_grad=teacher_grad)
    inputs = (s, t) if teacher_grad else (s,)
    fast, ref = hidden_relation_mse(s, t, chunk), reference_hidden_relation_mse(s, t, chunk)
    assert_close(fast, ref)
    for a, b in zip(torch.autograd.grad(fast, inputs), torch.autograd.grad(ref, inputs), strict=True):
        assert_close_scaled(a, b)
    assert float(hidden_relation_mse(t.detach(), t.detach(), chunk)) == pytest.approx(0.0, abs=1e-12)


def test_relation_terms_under_cpu_autocast_match_the_reference_in_bf16():
    # Mixed precision: the fast paths follow autocast in forward (bf16 matmuls) and their backward takes the
    # saved bf16 factors; the result stays within bf16 rounding of the reference under the same autocast.
    gen = torch.Generator().manual_seed(0)
    s_fused, s_qkv = qkv_views(2, 13, 2, 16, seed=0, requires_grad=True)
    _, t_qkv = qkv_views(2, 13, 2, 16, seed=1, requires_grad=False)
    hs, ht = torch.randn(2, 17, 8, generator=gen, requires_grad=True), torch.randn(2, 17, 12, generator=gen)
    results = []
    for kl, mse in ((relation_kl, hidden_relation_mse), (reference_relation_kl, reference_hidden_relation_mse)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = kl((s_qkv[0], s_qkv[0]), (t_qkv[0], t_qkv[0]), 2) + mse(hs, ht, 5)
        results.append((loss.float(), *torch.autograd.grad(loss, (s_fused, hs))))
    for fast, ref in zip(*results, strict=True):
        assert torch.isfinite(fast).all()
        assert_close(fast.float(), ref.float(), rtol=0.05, atol=0.02)
