"""Structure of a multiplexed model: what is shared, how it starts from the teacher, what it costs."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

import vitcompress as vc

LINEARS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def groups_of(student: nn.Module) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


def linear_params(block: nn.Module) -> int:
    return sum(p.numel() for name in LINEARS.values() for p in block.get_submodule(name).parameters())


def expected_params(teacher: nn.Module, groups: list[list[int]], cfg: vc.MultiplexConfig) -> int:
    """Teacher params − (k−1)·linears per group of k layers + each layer's transformations."""
    dim, heads = teacher.embed_dim, teacher.blocks[0].attn.num_heads
    per_layer = (2 * heads * heads if cfg.attn_transform else 0) + (
        2 * dim + cfg.kernel_size**2 * dim + dim if cfg.mlp_transform else 0
    )  # head mixes (pre, post); DW-conv LayerNorm (w, b) + depth-wise kernel + bias
    shared_saving = sum((len(g) - 1) * linear_params(teacher.blocks[g[0]]) for g in groups)
    return vc.count_params(teacher) - shared_saving + len(teacher.blocks) * per_layer


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
    assert params == expected_params(teacher, groups_of(student), cfg)
    assert params == sum(p.numel() for p in student.parameters())


@pytest.mark.parametrize("share", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "cfg", [dict(), dict(kernel_size=3), dict(attn_transform=False), dict(mlp_transform=False)],
    ids=["default", "k3", "no_attn_tf", "no_mlp_tf"],
)
def test_param_count_is_exact(make_vit, share, cfg):
    teacher = make_vit("reg_tokens")  # depth 4
    config = vc.MultiplexConfig(share=share, **cfg)
    student = vc.multiplex(teacher, config)
    assert len(student.blocks_shared) == len(groups_of(student)) == -(-4 // share)
    assert vc.count_params(student) == expected_params(teacher, groups_of(student), config)


def test_state_dict_holds_one_copy_of_each_shared_tensor(make_vit):
    student = vc.multiplex(make_vit("reg_tokens"), vc.MultiplexConfig(share=2))
    state = student.state_dict()
    ptrs = [t.data_ptr() for t in state.values() if t.numel()]
    assert len(ptrs) == len(set(ptrs)), "two state-dict entries alias the same memory"
    assert len(state) == len(dict(student.named_parameters())) + len(dict(student.named_buffers()))
    for short in LINEARS:
        keys = sorted(k for k in state if k.startswith("blocks") and k.endswith(f".{short}.weight"))
        assert keys == [f"blocks_shared.{g}.{short}.weight" for g in range(2)]
    assert not any("._shared." in k for k in state), "the per-layer binding must stay out of the state dict"


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


@pytest.mark.parametrize("convert", ["deepcopy", "double", "load_state_dict"])
def test_sharing_survives_copies_and_conversions(make_vit, perturb, images, convert):
    teacher = make_vit()
    student = perturb(vc.multiplex(teacher, vc.MultiplexConfig(share=3))).eval()
    with torch.no_grad():
        expected = student(images)
    dtype = torch.float64 if convert == "double" else torch.float32
    if convert == "load_state_dict":
        other = vc.multiplex(teacher, vc.MultiplexConfig(share=3)).eval()
        other.load_state_dict(student.state_dict())
    else:
        other = copy.deepcopy(student).to(dtype)
    assert all(blk._shared is other.blocks_shared[0] for blk in other.blocks)
    assert other.blocks_shared[0].qkv.weight.dtype == dtype
    with torch.no_grad():
        assert_close(other(images.to(dtype)).float(), expected)


def test_last_group_may_be_smaller(make_vit, images):
    teacher = make_vit(depth=5)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    assert groups_of(student) == [[0, 1], [2, 3], [4]]
    assert [blk.group for blk in student.blocks] == [0, 0, 1, 1, 2]
    assert student.blocks[4]._shared is student.blocks_shared[2]
    with torch.no_grad():
        assert torch.isfinite(student.eval()(images)).all()


@pytest.mark.parametrize(
    ("init", "init_index", "picks"),
    [
        ("first", 0, [0, 0, 2, 2, 4]),
        ("index", 1, [1, 1, 3, 3, 4]),  # clamped to the last layer of the one-layer group
        ("index", 7, [1, 1, 3, 3, 4]),
        ("average", 0, None),
    ],
    ids=["first", "index1", "index_clamped", "average"],
)
def test_shared_weights_start_from_the_teacher(make_vit, init, init_index, picks):
    teacher = make_vit(depth=5)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2, init=init, init_index=init_index))
    for layer, blk in enumerate(student.blocks):
        group = groups_of(student)[blk.group]
        for short, path in LINEARS.items():
            for p in ("weight", "bias"):
                actual = getattr(getattr(blk._shared, short), p)
                sources = [getattr(teacher.blocks[i].get_submodule(path), p) for i in group]
                expected = torch.stack(sources).mean(0) if picks is None else getattr(
                    teacher.blocks[picks[layer]].get_submodule(path), p
                )
                assert_close(actual, expected, msg=f"layer {layer} {short}.{p}")
                assert actual is not expected, "the student must not alias the teacher's parameters"


@pytest.mark.parametrize("variant", ["deit3_layerscale", "qk_norm", "reg_tokens"], indirect=True)
def test_each_layer_keeps_its_own_norms_and_layerscale(make_vit, variant, perturb):
    teacher = perturb(make_vit(variant))  # norms start at 1/0 in every layer; make them differ
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2, init="average"))
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    per_layer = [k for k in teacher_state if k.startswith("blocks.") and not any(n in k for n in LINEARS)]
    assert any("norm1" in k for k in per_layer) and any("norm2" in k for k in per_layer)
    if variant == "deit3_layerscale":
        assert any(".ls1." in k for k in per_layer)
    if variant == "qk_norm":
        assert any(".q_norm." in k for k in per_layer)
    for key in per_layer:
        assert_close(student_state[key], teacher_state[key], msg=key)
    for key in (k for k in teacher_state if not k.startswith("blocks.")):
        assert_close(student_state[key], teacher_state[key], msg=key)


def test_drop_path_rate_is_kept_per_layer(make_vit):
    teacher = make_vit(depth=4, drop_path_rate=0.1)
    rates = [float(getattr(blk.drop_path1, "drop_prob", 0.0)) for blk in teacher.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and len(set(rates)) == 4
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
    for t_blk, s_blk in zip(teacher.blocks, student.blocks, strict=True):
        for name in ("drop_path1", "drop_path2"):
            t_dp, s_dp = getattr(t_blk, name), getattr(s_blk, name)
            assert type(s_dp) is type(t_dp)
            assert getattr(s_dp, "drop_prob", 0.0) == getattr(t_dp, "drop_prob", 0.0)


@pytest.mark.parametrize("variant", ["vit", "deit_distilled", "reg4_gap_fc_norm", "avg_pool_no_cls"], indirect=True)
@pytest.mark.parametrize(("share", "kernel_size"), [(1, 7), (2, 3), (3, 5)], ids=["s1k7", "s2k3", "s3k5"])
def test_macs_are_teacher_macs_plus_transforms(make_vit, variant, share, kernel_size):
    teacher = make_vit(variant)
    size = (3, 32, 32)
    heads, dim, depth = teacher.blocks[0].attn.num_heads, teacher.embed_dim, len(teacher.blocks)
    grid = 4 * 4
    n = teacher.num_prefix_tokens + grid
    # Per layer: two H×H head mixes of the (N×N) attention maps, each output element summing over H heads;
    # one depth-wise k×k conv over the C-channel patch grid (zero padding counted, as every counter does).
    transforms = depth * (2 * heads * heads * n * n + kernel_size**2 * dim * grid)
    teacher_macs = vc.count_macs(teacher, size)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=share, kernel_size=kernel_size))
    assert vc.count_macs(student, size) == teacher_macs + transforms
    plain = vc.multiplex(teacher, vc.MultiplexConfig(share=share, attn_transform=False, mlp_transform=False))
    assert vc.count_macs(plain, size) == teacher_macs
