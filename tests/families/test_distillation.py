"""Weight distillation on every row of the table: gradients reach every student parameter, and a copy of the
teacher scores zero on every KD term (logits, Q/K/V relations, hidden relations) while a perturbed copy does not.
"""

from __future__ import annotations

import pytest
import torch

import vitcompress as vc

from .table import FAMILIES, build, images, perturb_

ALL_RELATIONS = ["qq", "kk", "vv", "qk", "kq", "qv", "vq", "kv", "vk"]
KD_TERMS = ("kd_logits", "kd_attn", "kd_hidden")


def full_config(**overrides) -> vc.DistillConfig:
    """Every term on, every layer paired, all nine Q/K/V relations."""
    return vc.DistillConfig(alpha=0.5, attn_layers="all", hidden_layers="all", relations=ALL_RELATIONS, **overrides)


def targets(batch: int = 2) -> torch.Tensor:
    return torch.arange(batch) % 5


@pytest.mark.parametrize("name", [*FAMILIES, "vit", "deit_distilled", "deit3_layerscale", "qk_norm",
                                  "swin_w4_40_pad"])
def test_every_student_parameter_gets_a_gradient(name):
    teacher = build(name)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2)).train()
    # hidden_chunk below the token count exercises the checkpointed (recomputed) similarity rows.
    objective = vc.DistillationObjective(student, teacher, full_config(hidden_chunk=8))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    named = dict(student.named_parameters())
    x = images(teacher)

    loss, parts = objective(student, x, targets())
    assert set(parts) == {"ce", *KD_TERMS, "loss"}
    assert torch.isfinite(loss) and all(map(torch.isfinite, map(torch.tensor, parts.values())))
    assert parts["kd_attn"] > 0 and parts["kd_hidden"] > 0, parts  # kd_logits: ~0 where LayerScale starts tiny
    loss.backward()
    missing = [n for n, p in named.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    # Expected at init: the DW-conv starts at zero, so nothing flows back into its LayerNorm yet.
    zero = sorted(n for n, p in named.items() if not p.grad.any())
    assert zero and all(".mlp_transform.norm." in n for n in zero), zero
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(m.training for m in teacher.modules())

    optimizer.step()
    optimizer.zero_grad()
    loss, _ = objective(student, x, targets())
    loss.backward()
    zero = [n for n, p in named.items() if p.grad is None or not p.grad.any()]
    assert not zero, f"zero gradient on the second step for {zero}"
    assert all(p.grad is None for p in teacher.parameters())
    objective.close()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", [*FAMILIES, "vit", "deit_distilled", "reg4_gap_fc_norm", "avg_pool_no_cls",
                                  "swin_w4_64"])
def test_kd_terms_vanish_for_a_copy_of_the_teacher(name, mode):
    # Q/K/V read by hooks on the student and by hooks or projection on the teacher must be the same numbers.
    teacher = build(name, drop_path_rate=0.0)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train(mode == "train")
    objective = vc.DistillationObjective(student, teacher, full_config(logits_loss="kl"))
    x = images(teacher)
    _, parts = objective(student, x, targets())
    for term in KD_TERMS:
        assert abs(parts[term]) <= 1e-6, (term, parts[term])
    # ... and they do measure something: a perturbed copy is not a copy.
    perturb_(student)
    _, parts = objective(student, x, targets())
    assert all(parts[term] > 1e-4 for term in KD_TERMS), parts
    objective.close()
