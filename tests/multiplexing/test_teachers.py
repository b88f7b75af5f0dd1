"""Any timm classifier as the logit teacher, a second teacher for the relations, DeiT hard distillation, Mixup."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.multiplexing.distill import logits_kd

LOGITS_ONLY = dict(attn_weight=0.0, hidden_weight=0.0)



def cnn(name: str = "resnet18", num_classes: int = 10, seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


def batch(size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(size, 3, 32, 32, generator=gen), torch.arange(size) % 10


def hook_count(*models: nn.Module) -> int:
    return sum(len(m._forward_hooks) for model in models for m in model.modules())


def kd_after_steps(objective, model: nn.Module, steps: int = 6) -> list[float]:
    """The KD term over a few AdamW steps on one batch, checking that gradients reach the student."""
    images, labels = batch()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(steps):
        loss, parts = objective(model, images, labels)
        optimizer.zero_grad()
        loss.backward()
        assert any(p.grad is not None and p.grad.any() for p in model.parameters())
        optimizer.step()
        history.append(parts["kd_logits"])
    return history


@pytest.mark.parametrize("student_kind", ["multiplexed", "slimmed"])
def test_cnn_teacher_distils_logits_into_a_compressed_vit(make_vit, student_kind):
    teacher = cnn()
    hooks = hook_count(teacher)
    config = vc.DistillConfig(alpha=1.0, **LOGITS_ONLY)
    if student_kind == "multiplexed":
        student = vc.multiplex(make_vit(depth=4), vc.MultiplexConfig(share=2)).train()
        objective = vc.DistillationObjective(student, teacher, config)
    else:
        student = vc.attach_masks(make_vit(depth=4), vc.SlimConfig(attn=True, mlp=True, tokens=True)).train()
        objective = vc.SlimObjective(student, base=vc.DistillationObjective(student, teacher, config))
    history = kd_after_steps(objective, student)
    assert history[-1] < 0.8 * history[0], history
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert hook_count(teacher) == hooks  # a logit teacher is never hooked


def test_a_cnn_student_learns_logits_from_a_cnn_teacher():
    student = cnn("resnet18", seed=5).train()
    objective = vc.DistillationObjective(student, cnn(), vc.DistillConfig(alpha=1.0, **LOGITS_ONLY))
    history = kd_after_steps(objective, student)
    assert history[-1] < history[0], history


@pytest.mark.parametrize("term", [dict(attn_weight=1.0, hidden_weight=0.0), dict(attn_weight=0.0)],
                         ids=["attn", "hidden"])
@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])  # no blocks; `blocks` of conv stages
def test_relation_terms_with_a_cnn_teacher_are_a_one_line_error(make_vit, term, arch):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    teacher = cnn(arch)
    name = type(teacher).__name__
    message = rf"the relation teacher {name} has no transformer blocks.*relation_teacher.*attn_weight=0 and hidden"
    for logit_teacher, relation_teacher in ((teacher, None), (make_vit(), teacher)):
        with pytest.raises(VitCompressError, match=message) as info:
            vc.DistillationObjective(student, logit_teacher, vc.DistillConfig(**term), relation_teacher)
        assert "\n" not in str(info.value)
    with pytest.raises(VitCompressError, match=r"the student ResNet has no transformer blocks"):
        vc.DistillationObjective(cnn(), make_vit(), vc.DistillConfig(**term))


def test_a_beit_teacher_gives_relations_by_projecting_qkv_again(make_vit, images):
    # BEiT adds its q/v biases in F.linear on qkv's weight, so its qkv module never runs: Q, K, V are projected again.
    torch.manual_seed(0)
    beit = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=2, num_heads=2, num_classes=10).eval()
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    objective = vc.DistillationObjective(student, beit, vc.DistillConfig(hidden_weight=0.0))
    loss, parts = objective(student, images, torch.arange(2))
    objective.close()
    assert torch.isfinite(loss) and parts["kd_attn"] > 0


def test_a_teacher_whose_attention_bypasses_the_hooks_is_a_one_line_error(make_vit, images):
    teacher = make_vit()
    last = len(teacher.blocks) - 1  # the layer the default relation terms read
    attn = teacher.blocks[last].attn

    def bypass(x, attn_mask=None, is_causal=False):  # attention without calling qkv, q_norm or k_norm
        B, N, C = x.shape
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(*qkv.unbind(0))
        return attn.proj(out.transpose(1, 2).reshape(B, N, C))

    attn.forward = bypass
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(hidden_weight=0.0))
    with pytest.raises(VitCompressError, match=rf"relation teacher VisionTransformer exposed no Q/K/V .* \[{last}\]"):
        objective(student, images, torch.arange(2))
    objective.close()


def test_a_teacher_with_other_classes_is_a_one_line_error(make_vit, images):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    with pytest.raises(VitCompressError, match="the teacher ResNet predicts 7 classes, the student 10"):
        vc.DistillationObjective(student, cnn(num_classes=7), vc.DistillConfig(**LOGITS_ONLY))
    # A module without `num_classes` is checked on its first logits.
    bare = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 7))
    objective = vc.DistillationObjective(student, bare, vc.DistillConfig(**LOGITS_ONLY))
    with pytest.raises(VitCompressError, match="the teacher Sequential predicts 7 classes, the student 10"):
        objective(student, images, torch.arange(2))


def test_hard_distillation_is_deits_loss_on_a_distilled_student(make_vit):
    student = vc.multiplex(make_vit("deit_distilled"), vc.MultiplexConfig(share=1)).train()
    teacher = cnn()
    images, labels = batch()
    config = vc.DistillConfig(alpha=0.3, distillation_type="hard", temperature=4.0, **LOGITS_ONLY)
    with vc.DistillationObjective(student, teacher, config, label_smoothing=0.1) as objective:
        loss, parts = objective(student, images, labels)
    with torch.no_grad():
        cls, dist = student(images)  # distilled training: both heads apart
        hard = teacher(images).argmax(-1)
    assert_close(parts["kd_logits"], float(F.cross_entropy(dist, hard)))
    expected = 0.7 * F.cross_entropy(cls, labels, label_smoothing=0.1) + 0.3 * F.cross_entropy(dist, hard)
    assert_close(loss, expected)


def test_hard_distillation_with_alpha_one_trains_only_the_dist_head(make_vit):
    student = vc.multiplex(make_vit("deit_distilled"), vc.MultiplexConfig(share=2)).train()
    teacher = cnn()
    images, labels = batch()
    config = vc.DistillConfig(alpha=1.0, distillation_type="hard", **LOGITS_ONLY)
    with vc.DistillationObjective(student, teacher, config) as objective:
        loss, _ = objective(student, images, labels)
        loss.backward()
        assert not student.head.weight.grad.any() and student.head_dist.weight.grad.abs().sum() > 0
        # ... and the dist head learns the teacher's argmax.
        student.zero_grad()
        history = kd_after_steps(objective, student, steps=8)
    assert history[-1] < 0.5 * history[0], history
    with torch.no_grad():
        assert torch.equal(student(images)[1].argmax(-1), teacher(images).argmax(-1))


def test_second_teacher_gives_the_relations_first_the_logits(make_vit, images):
    student = vc.multiplex(make_vit(seed=5), vc.MultiplexConfig(share=1)).train()
    logit_teacher, relation_teacher = cnn(), make_vit(embed_dim=64, num_heads=4, depth=4)
    full = vc.DistillConfig(alpha=0.5, attn_layers="all", hidden_layers="all", relation_heads=2)
    labels = torch.arange(2)
    calls = {"cnn": [0], "vit": [0], "vit_head": [0]}
    for module, count in ((logit_teacher, calls["cnn"]), (relation_teacher.patch_embed, calls["vit"]),
                          (relation_teacher.head, calls["vit_head"])):
        module.register_forward_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
    with vc.DistillationObjective(student, logit_teacher, full, relation_teacher=relation_teacher) as objective:
        loss, both = objective(student, images, labels)
    assert calls == {"cnn": [1], "vit": [1], "vit_head": [0]}  # once each; the relation teacher's head is not run
    with vc.DistillationObjective(student, logit_teacher, vc.DistillConfig(alpha=0.5, **LOGITS_ONLY)) as objective:
        _, logits_only = objective(student, images, labels)
    with vc.DistillationObjective(student, relation_teacher, full) as objective:
        _, relations_only = objective(student, images, labels)
    assert_close(both["kd_logits"], logits_only["kd_logits"])
    assert_close(both["kd_attn"], relations_only["kd_attn"])
    assert_close(both["kd_hidden"], relations_only["kd_hidden"])
    expected = 0.5 * both["ce"] + 0.5 * both["kd_logits"] + both["kd_attn"] + 0.1 * both["kd_hidden"]
    assert_close(loss.item(), expected)


@pytest.mark.parametrize("distillation_type", ["soft", "hard"])
def test_mixup_soft_targets(make_vit, distillation_type):
    np.random.seed(0)  # timm's Mixup draws lambda and the mode from numpy
    images, labels = batch()
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
    mixed, soft = mixup(images, labels)
    assert soft.shape == (4, 10)
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=2)).train()
    teacher = cnn()
    config = vc.DistillConfig(alpha=0.5, distillation_type=distillation_type, temperature=2.0, **LOGITS_ONLY)
    with vc.DistillationObjective(student, teacher, config, label_smoothing=0.1) as objective:
        loss, parts = objective(student, mixed, soft)
        loss.backward()
    with torch.no_grad():
        logits, t_logits = student(mixed), teacher(mixed)  # the teacher sees the same mixed images
    # The smoothing is in the soft targets already: not applied a second time.
    assert_close(parts["ce"], float(-(soft * logits.log_softmax(-1)).sum(-1).mean()))
    kd = F.cross_entropy(logits, t_logits.argmax(-1)) if distillation_type == "hard" else \
        logits_kd(logits, t_logits, 2.0, "kl")
    assert_close(parts["kd_logits"], float(kd))
    assert all(p.grad is not None for p in student.parameters())


def test_losses_are_fp32_under_bf16_autocast(make_vit):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=2)).train()
    images, labels = batch()
    with vc.DistillationObjective(student, cnn(), vc.DistillConfig(**LOGITS_ONLY)) as objective:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, parts = objective(student, images, labels)
    assert loss.dtype == torch.float32 and np.isfinite(list(parts.values())).all()


def test_close_removes_every_hook(make_vit, images):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=2)).train()
    teacher = make_vit(embed_dim=64, num_heads=4)
    before = hook_count(student, teacher)
    objective = vc.DistillationObjective(student, teacher, vc.DistillConfig(attn_layers="all", hidden_layers="all"))
    assert hook_count(student, teacher) > before
    objective(student, images, torch.arange(2))
    objective.close()
    objective.close()  # idempotent
    assert hook_count(student, teacher) == before
    with pytest.raises(VitCompressError, match="was closed"):
        objective(student, images, torch.arange(2))


def test_label_smoothing_is_validated(make_vit):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    with pytest.raises(VitCompressError, match=r"label_smoothing=1.0 must be in \[0, 1\)"):
        vc.DistillationObjective(student, None, vc.DistillConfig.off(), label_smoothing=1.0)
