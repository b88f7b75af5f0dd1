"""MiniViT on every row of the table: exact at share=1, plain sharing at init, one copy of each shared tensor,
exact parameter and MAC counts. What only one family has (Swin's windows, ViT's attention masks) stays in its suite.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models import family_of
from vitcompress.models.layers import transformer_layers

from .table import (
    FAMILIES,
    ROWS,
    VIT_VARIANTS,
    build,
    deepest_stage,
    expected_multiplexed_params,
    family_name,
    images,
    perturb_,
    shared_param_names,
    size_of,
    transform_macs,
)

TRANSFORMS = {
    "off": dict(attn_transform=False, mlp_transform=False),
    "attn": dict(attn_transform=True, mlp_transform=False),
    "mlp": dict(attn_transform=False, mlp_transform=True),
    "both": dict(attn_transform=True, mlp_transform=True),
}


def groups_of(student: nn.Module) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


def expected_groups(teacher: nn.Module, share: int | str) -> list[list[int]]:
    """Consecutive layers in groups of `share` (a last smaller one allowed), never across a stage."""
    groups, start = [], 0
    for depth in family_of(teacher).stage_depths(teacher):
        size = depth if share == "stage" else share
        groups += [list(range(i, min(i + size, start + depth))) for i in range(start, start + depth, size)]
        start += depth
    return groups


def plain_sharing(teacher: nn.Module, groups: list[list[int]]) -> nn.Module:
    """Reference: the teacher with each layer's shared weights replaced by the first layer's of its group."""
    model = copy.deepcopy(teacher)
    blocks = transformer_layers(model)
    for group in groups:
        first = blocks[group[0]]
        for i in group[1:]:
            for name in shared_param_names(first):
                owner, leaf = name.rsplit(".", 1)
                setattr(blocks[i].get_submodule(owner), leaf, first.get_parameter(name))
    return model


@pytest.mark.parametrize("transforms", list(TRANSFORMS))
@pytest.mark.parametrize("name", list(ROWS))
def test_share1_reproduces_the_model(name, transforms):
    model = build(name)
    student = vc.multiplex(model, vc.MultiplexConfig(share=1, **TRANSFORMS[transforms])).eval()
    x = images(model)
    with torch.no_grad():
        assert_close(student(x), model(x))


@pytest.mark.parametrize("share", [2, "stage"])
@pytest.mark.parametrize("name", [*FAMILIES, *VIT_VARIANTS, "swin_w4_64"])
def test_identity_transforms_equal_plain_sharing(name, share):
    teacher = build(name, **deepest_stage(name))
    on = vc.multiplex(teacher, vc.MultiplexConfig(share=share)).eval()
    off = vc.multiplex(teacher, vc.MultiplexConfig(share=share, **TRANSFORMS["off"])).eval()
    reference = plain_sharing(teacher, groups_of(on))
    x = images(teacher)
    with torch.no_grad():
        expected = reference(x)
        assert_close(on(x), expected)
        assert_close(off(x), expected)
        assert not torch.allclose(expected, teacher(x)), "sharing should change a random model's output"


@pytest.mark.parametrize("name", [*FAMILIES, "vit", "deit_distilled", "qk_norm", "swin_w4_40_pad"])
def test_fused_and_manual_attention_agree(name):
    student = vc.multiplex(build(name), vc.MultiplexConfig(share=2, attn_transform=False)).eval()
    x = images(student)
    with torch.no_grad():
        before = student(x)
        for blk in transformer_layers(student):
            blk.attn.fused_attn = not blk.attn.fused_attn
        assert_close(student(x), before)


CONFIGS = {"default": dict(), "k3": dict(kernel_size=3), "no_attn_tf": dict(attn_transform=False),
           "no_mlp_tf": dict(mlp_transform=False)}
SHARES = (1, 2, 3, 4, "stage")
# Every share with every config on a ViT and a Swin; on the other rows each share once, the configs in turn.
GRID = [(s, c) for s in SHARES for c in CONFIGS]
DIAGONAL = [(s, list(CONFIGS)[i % len(CONFIGS)]) for i, s in enumerate(SHARES)]


@pytest.mark.parametrize(("name", "grid"), [(n, DIAGONAL) for n in FAMILIES] + [("reg_tokens", GRID),
                                                                               ("swin_w4_64", GRID)])
def test_param_count_is_exact(name, grid):
    teacher = build(name, **deepest_stage(name))  # a stage of 4 layers: share 3 leaves a smaller last group
    for share, cfg_name in grid:
        config = vc.MultiplexConfig(share=share, **CONFIGS[cfg_name])
        student = vc.multiplex(teacher, config)
        groups = groups_of(student)
        assert groups == expected_groups(teacher, share), (share, cfg_name)
        registered = sum(len(m) for n, m in student.named_modules() if n.split(".")[-1] == "blocks_shared")
        assert registered == len(groups), (share, cfg_name)
        assert vc.count_params(student) == expected_multiplexed_params(teacher, groups, config), (share, cfg_name)
        assert vc.count_params(student) == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize("name", [*FAMILIES, "reg_tokens", "swin_w4_64"])
def test_state_dict_holds_one_copy_of_each_shared_tensor(name):
    teacher = build(name, **deepest_stage(name))
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    state, params = student.state_dict(), dict(student.named_parameters())
    ptrs = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(ptrs) == len(set(ptrs)), "two state-dict entries alias the same memory"
    # Every key is one parameter or buffer: a shared tensor is not listed again under a layer's name.
    assert not set(state) - set(params) - set(dict(student.named_buffers()))
    owners = [f"{path}.{i}" for path, module in student.named_modules() if path.split(".")[-1] == "blocks_shared"
              for i in range(len(module))]
    assert len(owners) == len(groups_of(student))
    for short in (n.split(".", 1)[1] for n in shared_param_names(transformer_layers(teacher)[0])):
        in_blocks = sorted(k for k in state if k.endswith(f".{short}") and (k.startswith("blocks") or ".blocks" in k))
        assert in_blocks == sorted(f"{owner}.{short}" for owner in owners), short
    assert not any("._shared." in k or "attn_mask" in k for k in state), "per-layer bindings stay out of the state"


@pytest.mark.parametrize(
    ("init", "init_index"), [("first", 0), ("index", 1), ("index", 7), ("average", 0)],
    ids=["first", "index1", "index_clamped", "average"],
)
@pytest.mark.parametrize("name", [*FAMILIES, "swin_w4_64"])
def test_shared_weights_start_from_the_teacher(name, init, init_index):
    teacher = build(name, **deepest_stage(name, 5))  # groups of 2 in a stage of 5: a last group of one layer
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2, init=init, init_index=init_index))
    t_blocks = transformer_layers(teacher)
    assert [len(g) for g in groups_of(student)][-1] == 1
    for layer, blk in enumerate(transformer_layers(student)):
        group = groups_of(student)[blk.group]
        pick = group[0] if init == "first" else group[min(init_index, len(group) - 1)]
        for name_ in shared_param_names(t_blocks[layer]):
            actual = blk._shared.get_parameter(name_.split(".", 1)[1])
            sources = [t_blocks[i].get_parameter(name_) for i in group]
            expected = torch.stack(sources).mean(0) if init == "average" else t_blocks[pick].get_parameter(name_)
            assert_close(actual, expected, msg=f"layer {layer} {name_}")
            assert actual is not expected, "the student must not alias the teacher's parameters"


@pytest.mark.parametrize("name", [*FAMILIES, "deit3_layerscale", "qk_norm", "reg_tokens", "swin_w4_64"])
def test_each_layer_keeps_its_own_norms_layerscale_and_drop_path(name):
    teacher = build(name, drop_path_rate=0.2, **deepest_stage(name))
    student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage", init="average"))
    for t_blk, s_blk in zip(transformer_layers(teacher), transformer_layers(student), strict=True):
        shared = set(shared_param_names(t_blk))
        own = {n: p for n, p in t_blk.named_parameters() if n not in shared}
        assert any("norm1" in n for n in own) and any("norm2" in n for n in own)
        for n, p in own.items():  # norms, LayerScale, q/k norms: per layer, the teacher's values, not aliased
            assert_close(s_blk.get_parameter(n), p, msg=n)
            assert s_blk.get_parameter(n) is not p
        for dp in ("drop_path1", "drop_path2"):
            t_dp, s_dp = getattr(t_blk, dp), getattr(s_blk, dp)
            assert type(s_dp) is type(t_dp) and getattr(s_dp, "drop_prob", 0.0) == getattr(t_dp, "drop_prob", 0.0)
    rates = [float(getattr(b.drop_path1, "drop_prob", 0.0)) for b in transformer_layers(student)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and len(set(rates)) == len(rates)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    outside = [k for k in teacher_state if not (k.startswith("blocks.") or ".blocks." in k)]
    assert outside
    for key in outside:  # embeddings, patch merging, final norm, pooling, head
        assert_close(student_state[key], teacher_state[key], msg=key)


@pytest.mark.parametrize("name", [*FAMILIES, "vit", "deit_distilled", "reg4_gap_fc_norm", "avg_pool_no_cls",
                                  "swin_w4_64", "swin_w4_40_pad"])
def test_macs_are_teacher_macs_plus_transforms(name):
    teacher = build(name)
    size = size_of(teacher)
    teacher_macs = vc.count_macs(teacher, size)
    for share, kernel_size in ((1, 7), (2, 3), ("stage", 5)):
        student = vc.multiplex(teacher, vc.MultiplexConfig(share=share, kernel_size=kernel_size))
        assert vc.count_macs(student, size) == teacher_macs + transform_macs(teacher, kernel_size), share
        plain = vc.multiplex(teacher, vc.MultiplexConfig(share=share, **TRANSFORMS["off"]))
        assert vc.count_macs(plain, size) == teacher_macs, share


@pytest.mark.parametrize("name", [*FAMILIES, "deit3_layerscale", "swin_w4_64"])
def test_share1_backward_matches_the_model(name):
    # Same loss, same weights: each shared weight of a share=1 student gets exactly its teacher layer's gradient,
    # and so does every per-layer weight (norms, LayerScale) and every weight outside the blocks.
    teacher = build(name, drop_path_rate=0.0).train()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train()
    x = images(teacher)
    teacher(x).logsumexp(-1).sum().backward()
    student(x).logsumexp(-1).sum().backward()
    for i, (t_blk, s_blk) in enumerate(zip(transformer_layers(teacher), transformer_layers(student), strict=True)):
        shared = set(shared_param_names(t_blk))
        for n, p in t_blk.named_parameters():
            ours = s_blk._shared.get_parameter(n.split(".", 1)[1]) if n in shared else s_blk.get_parameter(n)
            assert_close(ours.grad, p.grad, msg=f"layer {i} {n}")
    student_params = dict(student.named_parameters())
    outside = [(n, p) for n, p in teacher.named_parameters() if not (n.startswith("blocks.") or ".blocks." in n)]
    assert outside
    for n, p in outside:  # embeddings, patch merging, norm, head
        assert_close(student_params[n].grad, p.grad, msg=n)


@pytest.mark.parametrize("convert", ["deepcopy", "double", "load_state_dict", "save_load"])
@pytest.mark.parametrize("name", [*FAMILIES, "vit", "swin_w4_40_pad"])
def test_sharing_survives_copies_conversions_and_reloads(name, convert, tmp_path):
    teacher = build(name)
    student = perturb_(vc.multiplex(teacher, vc.MultiplexConfig(share="stage"))).eval()
    assert vc.count_params(student) < vc.count_params(teacher)
    x = images(teacher, batch=3)
    with torch.no_grad():
        expected = student(x)
    dtype = torch.float64 if convert == "double" else torch.float32
    if convert == "load_state_dict":
        other = vc.multiplex(teacher, vc.MultiplexConfig(share="stage")).eval()
        other.load_state_dict(student.state_dict())
    elif convert == "save_load":
        vc.save(student, tmp_path / "mini")
        other = vc.load(tmp_path / "mini")
        assert other.vitcompress_spec == student.vitcompress_spec
        assert other.vitcompress_spec["base"]["family"] == family_name(name)
    else:
        other = copy.deepcopy(student).to(dtype)
    owners = [shared for path, module in other.named_modules() if path.split(".")[-1] == "blocks_shared"
              for shared in module]
    assert all(blk._shared is owners[blk.group] for blk in transformer_layers(other))
    assert all(p.dtype == dtype for shared in owners for p in shared.parameters())
    with torch.no_grad():
        assert_close(other(x.to(dtype)).float(), expected)
