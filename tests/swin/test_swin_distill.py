"""Weight distillation on Swin: Q/K/V relations per window, hidden relations over whole maps in bounded memory."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.models.layers import transformer_layers
from vitcompress.multiplexing.distill import ActivationRecorder, hidden_relation_mse

from .conftest import swin_images

ALL_RELATIONS = ["qq", "kk", "vv", "qk", "kq", "qv", "vq", "kv", "vk"]
KD_TERMS = ("kd_logits", "kd_attn", "kd_hidden")


def full_config(**overrides) -> vc.DistillConfig:
    return vc.DistillConfig(**{"alpha": 0.5, "attn_layers": "all", "hidden_layers": "all",
                               "relations": ALL_RELATIONS, "logits_loss": "kl", **overrides})


def targets(batch: int = 2) -> torch.Tensor:
    return torch.arange(batch) % 10


def test_recorders_see_the_same_windows_in_student_and_teacher(make_swin):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).eval()
    layers = list(range(6))
    recorders = [ActivationRecorder(m, layers, layers) for m in (student, teacher)]
    images = swin_images(teacher)
    for rec in recorders:
        rec.active = True
    with torch.no_grad():
        student(images), teacher(images)
    s_rec, t_rec = recorders
    for i, blk in enumerate(transformer_layers(teacher)):
        (h, w), (wh, ww) = blk.input_resolution, blk.window_size
        windows, heads = (h // wh) * (w // ww), blk.attn.num_heads
        for name in "qkv":
            # (B·nW, heads, window area, head_dim), read from timm's qkv output and from our taps alike
            assert t_rec.qkv[i][name].shape == (2 * windows, heads, wh * ww, blk.dim // heads)
            assert_close(s_rec.qkv[i][name], t_rec.qkv[i][name], msg=f"layer {i} {name}")
        assert t_rec.hidden[i].shape == (2, h, w, blk.dim)  # block outputs stay (B, H, W, C) maps


def test_hidden_relation_is_exact_in_chunks_on_swin_maps(make_swin):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage")).train()
    images = swin_images(teacher)
    rec_s, rec_t = ActivationRecorder(student, [], [1]), ActivationRecorder(teacher, [], [1])
    rec_s.active = rec_t.active = True
    student(images)
    with torch.no_grad():
        teacher(images)
    s_map, t_map = rec_s.hidden[1], rec_t.hidden[1]  # (B, 16, 16, C): 256 tokens
    s_tok, t_tok = s_map.flatten(1, 2), t_map.flatten(1, 2)

    def naive(s, t):  # the official O(N²) form
        s, t = torch.nn.functional.normalize(s, dim=-1), torch.nn.functional.normalize(t, dim=-1)
        return ((s @ s.transpose(1, 2) - t @ t.transpose(1, 2)) ** 2).mean()

    expected = naive(s_tok, t_tok)
    (grad_expected,) = torch.autograd.grad(expected, s_map, retain_graph=True)
    chunked = hidden_relation_mse(s_tok, t_tok, chunk=48)  # 6 checkpointed chunks, the last one smaller
    (grad_chunked,) = torch.autograd.grad(chunked, s_map)
    assert_close(chunked, expected)
    assert_close(grad_chunked, grad_expected)


def test_relations_need_the_same_windows_on_both_sides(make_swin):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    with pytest.raises(VitCompressError, match=r"pair \[1, 0\].*different windows"):
        vc.DistillationObjective(student, teacher, full_config(attn_layers=[[1, 0]]))
    # Shifted with shifted, in the same stage: fine, from a deeper teacher too.
    deeper = make_swin("w4_64", depths=(2, 6))
    config = full_config(attn_layers=[[1, 1], [5, 7]], hidden_layers="last")
    objective = vc.DistillationObjective(student, deeper, config)
    _, parts = objective(student.train(), swin_images(teacher), targets())
    assert parts["kd_attn"] > 0
