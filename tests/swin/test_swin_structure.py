"""Mini-Swin structure: groups stay in a stage, one copy of shared weights, paper-sized models, exact MACs."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.errors import VitCompressError
from vitcompress.models.layers import transformer_layers

from .conftest import swin_images

LINEARS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def groups_of(student) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


def shared_params(block) -> int:
    """What a group holds once: the four linears (weights, biases) and the relative-position bias table."""
    linears = sum(p.numel() for name in LINEARS.values() for p in block.get_submodule(name).parameters())
    return linears + block.attn.relative_position_bias_table.numel()


def expected_params(teacher, groups, cfg: vc.MultiplexConfig) -> int:
    """Teacher params − (k−1)·shared per group of k layers + each layer's transformations."""
    blocks = transformer_layers(teacher)
    extra = 0
    for blk in blocks:
        heads, dim = blk.attn.num_heads, blk.dim
        extra += 2 * heads * heads if cfg.attn_transform else 0  # pre- and post-softmax head mixes
        extra += (2 * dim + cfg.kernel_size**2 * dim + dim) if cfg.mlp_transform else 0  # LN, DW kernel, bias
    saving = sum((len(g) - 1) * shared_params(blocks[g[0]]) for g in groups)
    return vc.count_params(teacher) - saving + extra


def transform_macs(teacher, kernel_size: int) -> int:
    """Per layer: two H×H head mixes over every (padded) window's N×N map; a k×k depth-wise conv over the map."""
    total = 0
    for blk in transformer_layers(teacher):
        (h, w), (wh, ww), heads = blk.input_resolution, blk.window_size, blk.attn.num_heads
        windows = -(-h // wh) * -(-w // ww)
        total += 2 * heads * heads * windows * (wh * ww) ** 2 + kernel_size**2 * blk.dim * h * w
    return total


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
    assert params == expected_params(teacher, groups_of(student), cfg)
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
    ("config", "share", "kernel_size"), [("w4_64", 2, 3), ("w4_40_pad", "stage", 5)], ids=["s2k3", "padded_stage_k5"]
)
def test_macs_are_teacher_macs_plus_transforms(make_swin, config, share, kernel_size):
    teacher = make_swin(config)
    size = (3, *teacher.patch_embed.img_size)
    teacher_macs = vc.count_macs(teacher, size)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=share, kernel_size=kernel_size))
    assert vc.count_macs(student, size) == teacher_macs + transform_macs(teacher, kernel_size)
    plain = vc.multiplex(teacher, vc.MultiplexConfig(share=share, attn_transform=False, mlp_transform=False))
    assert vc.count_macs(plain, size) == teacher_macs


@pytest.mark.parametrize("share", [1, 2, 3, "stage"])
@pytest.mark.parametrize(
    "cfg", [dict(), dict(kernel_size=3), dict(attn_transform=False), dict(mlp_transform=False)],
    ids=["default", "k3", "no_attn_tf", "no_mlp_tf"],
)
def test_param_count_is_exact(make_swin, share, cfg):
    teacher = make_swin("w4_64")  # depths (2, 4)
    config = vc.MultiplexConfig(share=share, **cfg)
    student = vc.multiplex(teacher, config)
    assert vc.count_params(student) == expected_params(teacher, groups_of(student), config)
    assert sum(len(stage.blocks_shared) for stage in student.layers) == len(groups_of(student))


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


def test_state_dict_holds_one_copy_of_each_shared_tensor(make_swin):
    student = vc.multiplex(make_swin("w4_64"), vc.MultiplexConfig(share=2))
    state = student.state_dict()
    ptrs = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(ptrs) == len(set(ptrs)), "two state-dict entries alias the same memory"
    tables = sorted(k for k in state if k.endswith("relative_position_bias_table"))
    assert tables == ["layers.0.blocks_shared.0.relative_position_bias_table",
                      "layers.1.blocks_shared.0.relative_position_bias_table",
                      "layers.1.blocks_shared.1.relative_position_bias_table"]
    for short in LINEARS:
        assert sorted(k for k in state if ".blocks" in k and k.endswith(f".{short}.weight")) == [
            f"layers.{s}.blocks_shared.{g}.{short}.weight" for s, g in ((0, 0), (1, 0), (1, 1))
        ]
    assert not any("._shared." in k or "attn_mask" in k for k in state)
    assert set(student.no_weight_decay()) >= set(tables), "bias tables stay out of weight decay, as in timm"


@pytest.mark.parametrize(
    ("init", "init_index", "picks"),
    [("first", 0, [0, 0, 2, 2, 4, 4]), ("index", 1, [1, 1, 3, 3, 5, 5]), ("average", 0, None)],
    ids=["first", "index1", "average"],
)
def test_shared_weights_start_from_the_teacher(make_swin, init, init_index, picks):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2, init=init, init_index=init_index))
    t_blocks = transformer_layers(teacher)
    paths = {**{f"{k}.{p}": f"{v}.{p}" for k, v in LINEARS.items() for p in ("weight", "bias")},
             "relative_position_bias_table": "attn.relative_position_bias_table"}
    for layer, blk in enumerate(transformer_layers(student)):
        group = groups_of(student)[blk.group]
        for ours, theirs in paths.items():
            actual = blk._shared.get_parameter(ours)
            sources = [t_blocks[i].get_parameter(theirs) for i in group]
            expected = torch.stack(sources).mean(0) if picks is None else t_blocks[picks[layer]].get_parameter(theirs)
            assert_close(actual, expected, msg=f"layer {layer} {ours}")
            assert actual is not expected


def test_each_layer_keeps_its_own_norms_and_drop_path(make_swin, perturb):
    teacher = perturb(make_swin("w4_64", drop_path_rate=0.2))
    student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage", init="average"))
    for t_blk, s_blk in zip(transformer_layers(teacher), transformer_layers(student), strict=True):
        assert_close(s_blk.norm1.weight, t_blk.norm1.weight)
        assert_close(s_blk.norm2.bias, t_blk.norm2.bias)
        assert s_blk.norm1.weight is not t_blk.norm1.weight
        for name in ("drop_path1", "drop_path2"):
            assert getattr(getattr(s_blk, name), "drop_prob", 0.0) == getattr(getattr(t_blk, name), "drop_prob", 0.0)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for key in (k for k in teacher_state if ".blocks." not in k):  # embedding, patch merging, norm, head
        assert_close(student_state[key], teacher_state[key], msg=key)


@pytest.mark.parametrize("convert", ["deepcopy", "double", "save_load"])
def test_sharing_survives_copies_and_reloads(make_swin, perturb, tmp_path, convert):
    teacher = make_swin("w4_40_pad")
    student = perturb(vc.multiplex(teacher, vc.MultiplexConfig(share="stage"))).eval()
    images = swin_images(teacher)
    with torch.no_grad():
        expected = student(images)
    dtype = torch.float64 if convert == "double" else torch.float32
    if convert == "save_load":
        vc.save(student, tmp_path / "mini-swin")
        other = vc.load(tmp_path / "mini-swin")
        assert other.vitcompress_spec == student.vitcompress_spec
        assert other.vitcompress_spec["base"]["family"] == "swin"
    else:
        other = copy.deepcopy(student).to(dtype)
    for stage in other.layers:
        assert all(blk._shared is stage.blocks_shared[0] for blk in stage.blocks)
        assert stage.blocks_shared[0].relative_position_bias_table.dtype == dtype
    with torch.no_grad():
        assert_close(other(images.to(dtype)).float(), expected)
