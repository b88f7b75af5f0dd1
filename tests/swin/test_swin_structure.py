"""Mini-Swin structure: groups stay in a stage, one copy of shared weights, paper-sized models, exact MACs."""

from __future__ import annotations

import pytest
import timm
import torch
from families.table import expected_multiplexed_params, transform_macs

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.models.layers import transformer_layers


def groups_of(student) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


@pytest.mark.parametrize(
    ("arch", "share", "lo", "hi"),
    [
        ("swin_tiny_patch4_window7_224", "stage", 11.5e6, 12.5e6),  # paper Mini-Swin-T: 12M
        ("swin_small_patch4_window7_224", 2, 25.5e6, 26.5e6),  # paper Mini-Swin-S: 26M
        ("swin_base_patch4_window7_224", 2, 45.5e6, 46.5e6),  # paper Mini-Swin-B: 46M
    ],
    ids=["mini_swin_t_12M", "mini_swin_s_26M", "mini_swin_b_46M"],
)
def test_paper_param_counts(arch, share, lo, hi):
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        teacher = timm.create_model(arch, pretrained=False)
        cfg = vc.MultiplexConfig(share=share)
        student = vc.multiplex(teacher, cfg)
    params = vc.count_params(student)
    assert lo <= params <= hi
    assert params == expected_multiplexed_params(teacher, groups_of(student), cfg)
    unique = len(groups_of(student))
    assert unique == (4 if share == "stage" else 12)  # 2-2-6-2 → 4 blocks; 2-2-18-2 in pairs → 12 blocks


def test_swin_tiny_macs_are_teacher_plus_transforms():
    with torch.device("meta"):
        teacher = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
        student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage"))
    teacher_macs = vc.count_macs(teacher)
    assert round(teacher_macs / 1e9, 2) == 4.49
    assert vc.count_macs(student) == teacher_macs + transform_macs(teacher, 7)


@pytest.mark.parametrize(
    ("share", "groups"),
    [(1, [[0], [1], [2], [3], [4], [5]]), (3, [[0, 1], [2, 3, 4], [5]]), ("stage", [[0, 1], [2, 3, 4, 5]])],
)
def test_groups_stay_inside_stages(make_swin, share, groups):
    student = vc.multiplex(make_swin("w4_64"), vc.MultiplexConfig(share=share))
    assert groups_of(student) == groups
    blocks = transformer_layers(student)
    for gi, group in enumerate(groups):
        stage = student.layers[0 if group[0] < 2 else 1]
        assert all(blocks[i].group == gi and blocks[i]._shared is blocks[group[0]]._shared for i in group)
        assert any(blocks[group[0]]._shared is shared for shared in stage.blocks_shared)


def test_explicit_groups(make_swin):
    student = vc.multiplex(make_swin("w4_64"), vc.MultiplexConfig(groups=[[0, 1], [2, 5], [3, 4]]))
    blocks = transformer_layers(student)
    assert blocks[2]._shared is blocks[5]._shared is student.layers[1].blocks_shared[0]
    assert blocks[3]._shared is blocks[4]._shared is student.layers[1].blocks_shared[1]


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (dict(share=5), r"share=5 is larger than the deepest stage \(4\)"),
        (dict(groups=[[0, 1, 2], [3], [4], [5]]), "spans several stages"),
        (dict(groups=[[0, 1], [2, 3, 4]]), r"layers \[5\] are in no group"),
    ],
    ids=["share_too_large", "group_across_stages", "missing_layer"],
)
def test_bad_grouping_is_refused(make_swin, cfg, match):
    with pytest.raises(VitCompressError, match=match):
        vc.multiplex(make_swin("w4_64"), vc.MultiplexConfig(**cfg))


def test_shared_bias_tables_stay_out_of_weight_decay(make_swin):
    # One table per group (the one copy of each shared tensor is checked on every family: tests/families).
    student = vc.multiplex(make_swin("w4_64"), vc.MultiplexConfig(share=2))
    tables = sorted(k for k in student.state_dict() if k.endswith("relative_position_bias_table"))
    assert tables == ["layers.0.blocks_shared.0.relative_position_bias_table",
                      "layers.1.blocks_shared.0.relative_position_bias_table",
                      "layers.1.blocks_shared.1.relative_position_bias_table"]
    assert set(student.no_weight_decay()) >= set(tables), "bias tables stay out of weight decay, as in timm"
