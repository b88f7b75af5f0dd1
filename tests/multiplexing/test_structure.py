"""Structure of a multiplexed model: what is shared, how it starts from the teacher, what it costs."""

from __future__ import annotations

import pytest
import timm
import torch
from families.table import expected_multiplexed_params
from torch import nn

import vitcompress as vc


def groups_of(student: nn.Module) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


@pytest.mark.parametrize(
    ("share", "lo", "hi"), [(2, 43.5e6, 45.5e6), (12, 8.5e6, 9.6e6)], ids=["share2_44M", "share12_9M"]
)
def test_deit_base_param_counts_match_the_paper(share, lo, hi):
    # Shapes only: the meta device builds DeiT-B without allocating (or initialising) 86M weights.
    with torch.device("meta"):
        teacher = timm.create_model("deit_base_patch16_224", pretrained=False)
        cfg = vc.MultiplexConfig(share=share)
        student = vc.multiplex(teacher, cfg)
    params = vc.count_params(student)
    assert lo <= params <= hi
    assert params == expected_multiplexed_params(teacher, groups_of(student), cfg)
    assert params == sum(p.numel() for p in student.parameters())


def test_layers_of_a_group_use_one_module(make_vit, images):
    student = vc.multiplex(make_vit("reg_tokens"), vc.MultiplexConfig(share=2))
    blocks, shared = student.blocks, student.blocks_shared
    assert blocks[0]._shared is blocks[1]._shared is shared[0]
    assert blocks[2]._shared is blocks[3]._shared is shared[1]
    assert blocks[1]._shared is not blocks[2]._shared
    # Per layer, not shared: norms and transformations.
    assert blocks[0].norm1 is not blocks[1].norm1
    assert blocks[0].attn.transform.pre.weight is not blocks[1].attn.transform.pre.weight
    # One tensor means a gradient step through either layer moves both.
    with torch.no_grad():
        shared[0].fc1.weight.add_(1.0)
        assert blocks[1]._shared.fc1.weight is shared[0].fc1.weight


def test_last_group_may_be_smaller(make_vit, images):
    teacher = make_vit(depth=5)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    assert groups_of(student) == [[0, 1], [2, 3], [4]]
    assert [blk.group for blk in student.blocks] == [0, 0, 1, 1, 2]
    assert student.blocks[4]._shared is student.blocks_shared[2]
    with torch.no_grad():
        assert torch.isfinite(student.eval()(images)).all()
