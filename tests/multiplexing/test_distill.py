"""Weight distillation: gradients reach every student parameter, and a copy of the teacher scores zero KD."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.multiplexing.distill import hidden_relation_mse, layer_pairs, relation_kl

ALL_RELATIONS = ["qq", "kk", "vv", "qk", "kq", "qv", "vq", "kv", "vk"]
KD_TERMS = ("kd_logits", "kd_attn", "kd_hidden")


def full_config(**overrides) -> vc.DistillConfig:
    """Every term on, every layer paired, all nine Q/K/V relations."""
    return vc.DistillConfig(
        **{
            "alpha": 0.5,
            "attn_layers": "all",
            "hidden_layers": "all",
            "relations": ALL_RELATIONS,
            **overrides,
        }
    )


def targets(batch: int = 2) -> torch.Tensor:
    return torch.arange(batch) % 10


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_soft_ce_of_a_copy_is_the_teacher_entropy(make_vit, images):
    teacher = make_vit()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train()
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(logits_loss="soft_ce", temperature=2.0))
    _, parts = objective(student, images, targets())
    with torch.no_grad():
        p = (teacher(images) / 2.0).softmax(-1)
    assert parts["kd_logits"] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), abs=1e-6)


def test_distilled_student_learns_the_teacher_heads_in_train_mode(make_vit, images):
    # CE on the class head, KD between the dist heads: perturbing only the student's class head leaves KD at 0.
    teacher = make_vit("deit_distilled")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train()
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(alpha=1.0))
    with torch.no_grad():
        student.head.weight.mul_(3.0)
    _, parts = objective(student, images, targets())
    assert abs(parts["kd_logits"]) <= 1e-6
    with torch.no_grad():
        student.head_dist.weight.mul_(3.0)
    _, parts = objective(student, images, targets())
    assert parts["kd_logits"] > 1e-3


@pytest.mark.parametrize(
    ("student_variant", "teacher_variant"),
    [("vit", "vit"), ("vit", "reg_tokens"), ("vit", "deit_distilled"), ("deit_distilled", "vit")],
    ids=["vit_from_vit", "vit_from_reg_tokens", "vit_from_distilled", "distilled_from_vit"],
)
def test_teacher_of_another_width_and_token_layout(make_vit, student_variant, teacher_variant, images):
    teacher = make_vit(teacher_variant, embed_dim=64, num_heads=4, depth=4)
    student = vc.multiplex(make_vit(student_variant, seed=5, depth=2), vc.MultiplexConfig(share=2)).train()
    objective = vc.DistillationObjective(student, teacher, full_config(relation_heads=2))
    loss, parts = objective(student, images, targets())
    loss.backward()
    assert torch.isfinite(loss) and all(parts[term] > 0 for term in KD_TERMS)
    assert all(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize(
    ("student_kw", "relation_heads", "who"),
    [
        (dict(), 3, "student's attention width 32"),
        (dict(embed_dim=48, num_heads=3), None, "teacher's attention width 64"),
    ],
    ids=["explicit_heads", "default_heads"],
)
def test_relation_heads_must_divide_both_widths(make_vit, student_kw, relation_heads, who):
    teacher = make_vit(embed_dim=64, num_heads=4)
    student = vc.multiplex(make_vit(**student_kw), vc.MultiplexConfig(share=1))
    with pytest.raises(VitCompressError, match=f"relation_heads=3 does not divide the {who}"):
        vc.DistillationObjective(student, teacher, vc.DistillConfig(relation_heads=relation_heads))


@pytest.mark.parametrize("field", ["attn_layers", "hidden_layers"])
@pytest.mark.parametrize("pair", [[3, 0], [0, 3], [-1, 0]], ids=["student", "teacher", "negative"])
def test_explicit_layer_pairs_out_of_range(make_vit, field, pair):
    teacher = make_vit()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1))
    with pytest.raises(VitCompressError, match=r"layer pair \[.*\] is out of range.*layers 0\.\.2"):
        vc.DistillationObjective(student, teacher, vc.DistillConfig(**{field: [[0, 0], pair]}))


def test_distillation_off_never_runs_the_teacher(make_vit, images):
    teacher = make_vit("deit_distilled")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2)).train()
    calls = count_calls(teacher.patch_embed)  # after multiplex, whose copies of the teacher's modules keep hooks
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig.off())
    loss, parts = objective(student, images, targets())
    assert set(parts) == {"ce", "loss"}
    assert calls[0] == 0
    assert parts["loss"] == pytest.approx(parts["ce"])
    # The same with no teacher at all; distillation without one is refused.
    assert set(vc.DistillationObjective(student, None, vc.DistillConfig.off())(student, images, targets())[1]) == {
        "ce", "loss"
    }
    with pytest.raises(VitCompressError, match="distillation needs a teacher"):
        vc.DistillationObjective(student, None, vc.DistillConfig())


def test_teacher_runs_once_per_step_without_grad(make_vit, images):
    teacher = make_vit()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2)).train()
    calls = count_calls(teacher.patch_embed)
    teacher.train()  # the objective freezes it and puts it in eval mode
    objective = vc.DistillationObjective(student, teacher, full_config())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    objective(student, images, targets())[0].backward()
    assert calls[0] == 1
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(
    ("student_depth", "teacher_depth", "expected"),
    [
        (3, 3, [0, 1, 2]),
        (6, 12, [1, 3, 5, 7, 9, 11]),
        (12, 6, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
        (4, 2, [0, 0, 1, 1]),
        (3, 1, [0, 0, 0]),
    ],
    ids=["same", "deeper_teacher", "shallower_teacher", "half", "one_layer_teacher"],
)
def test_all_pairs_each_student_layer_with_the_teacher_layer_at_its_depth(student_depth, teacher_depth, expected):
    pairs = layer_pairs("all", student_depth, teacher_depth)
    assert pairs == list(enumerate(expected))
    assert layer_pairs("last", student_depth, teacher_depth) == [(student_depth - 1, teacher_depth - 1)]


def test_hidden_relation_chunking_is_exact():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(2, 17, 8, generator=gen, requires_grad=True)
    t = torch.randn(2, 17, 12, generator=gen)
    whole = hidden_relation_mse(s, t, chunk=1024)
    (grad_whole,) = torch.autograd.grad(whole, s)
    chunked = hidden_relation_mse(s, t, chunk=5)
    (grad_chunked,) = torch.autograd.grad(chunked, s)
    assert_close(chunked, whole)
    assert_close(grad_chunked, grad_whole)
    assert float(hidden_relation_mse(t, t, chunk=4)) == pytest.approx(0.0, abs=1e-12)


def test_relation_kl_compares_widths_through_relation_heads():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    assert float(relation_kl((x, y), (x, y), heads=2)) == pytest.approx(0.0, abs=1e-6)
    wide = torch.randn(2, 5, 16, generator=gen)
    assert float(relation_kl((x, y), (wide, wide), heads=4)) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(alpha=1.5), r"alpha=1.5 must be in \[0, 1\]"),
        (dict(temperature=0), "temperature=0 must be > 0"),
        (dict(logits_loss="mse"), "logits_loss='mse' must be"),
        (dict(attn_weight=-1), "must be >= 0"),
        (dict(relations=["qx"]), r"relations \['qx'\] invalid"),
        (dict(relations=[]), "relations .* invalid"),
        (dict(relation_heads=0), "relation_heads=0 must be >= 1"),
        (dict(attn_layers="first"), "attn_layers='first' must be"),
        (dict(hidden_layers=[[0, 1, 2]]), r"hidden_layers pairs must each be \[student_layer, teacher_layer\]"),
        (dict(hidden_chunk=0), "hidden_chunk=0 must be >= 1"),
    ],
    ids=["alpha", "temperature", "logits_loss", "weight", "relation", "no_relations", "heads", "layers", "pair",
         "chunk"],
)
def test_distill_config_validation(kwargs, message):
    with pytest.raises(VitCompressError, match=message):
        vc.DistillConfig(**kwargs)


def test_distill_config_round_trips_and_rejects_unknown_fields():
    cfg = full_config(relation_heads=2, attn_layers=[[0, 1], [2, 3]])
    assert vc.DistillConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(VitCompressError, match=r"unknown DistillConfig field\(s\) \['beta'\]"):
        vc.DistillConfig.from_dict({"beta": 1})
