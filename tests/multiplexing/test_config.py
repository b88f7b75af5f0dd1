"""Bad input to `multiplex` and `MultiplexConfig`: one clear VitCompressError each, naming the problem."""

from __future__ import annotations

import pytest
import timm
from torch import nn

import vitcompress as vc
from vitcompress.errors import VitCompressError


def groups_of(student: nn.Module) -> list[list[int]]:
    return student.vitcompress_spec["steps"][-1]["groups"]


@pytest.mark.parametrize(
    "build",
    [lambda: nn.Linear(4, 4), lambda: timm.create_model("resnet10t", pretrained=False, num_classes=10)],
    ids=["linear", "timm_resnet"],
)
def test_unknown_model_family(build):
    with pytest.raises(VitCompressError, match="is not a supported model"):
        vc.multiplex(build(), vc.MultiplexConfig())


@pytest.mark.parametrize("share", [0, -1, True, 2.0], ids=["zero", "negative", "bool", "float"])
def test_share_must_be_a_positive_int(share):
    with pytest.raises(VitCompressError, match=r"share=.* must be an integer >= 1"):
        vc.MultiplexConfig(share=share)


def test_share_unknown_string():
    with pytest.raises(VitCompressError, match="share='block' is not valid"):
        vc.MultiplexConfig(share="block")


def test_share_larger_than_depth(make_vit):
    with pytest.raises(VitCompressError, match=r"share=4 is larger than the model's depth \(3\)"):
        vc.multiplex(make_vit(), vc.MultiplexConfig(share=4))


@pytest.mark.parametrize("share", [3, "stage"])
def test_share_depth_and_stage_give_one_shared_block(make_vit, share):
    # A ViT is a single stage, so "stage" shares one block across the whole depth, like share=depth.
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=share))
    assert groups_of(student) == [[0, 1, 2]]
    assert len(student.blocks_shared) == 1


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([[0, 1], [3, 4]], r"layers \[2\] are in no group"),
        ([[0, 1], [1, 2], [3, 4]], "layer 1 appears in group 0 and group 1"),
        ([[0, 1, 2], [3, 4, 5]], r"layer 5 is out of range; the model has layers 0\.\.4"),
        ([[0, 1, 2], [3, 4, -1]], "layer -1 is out of range"),
    ],
    ids=["skips_a_layer", "repeats_a_layer", "past_the_end", "negative"],
)
def test_explicit_groups_must_partition_the_layers(make_vit, groups, message):
    with pytest.raises(VitCompressError, match=message):
        vc.multiplex(make_vit(depth=5), vc.MultiplexConfig(groups=groups))


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([], "non-empty list of non-empty lists"),
        ([[0, 1], []], "non-empty list of non-empty lists"),
        (3, "non-empty list of non-empty lists"),
        ([[0, 1.5]], "1.5 is not a layer index"),
        ([["0"]], "'0' is not a layer index"),
        ([[True]], "True is not a layer index"),
    ],
    ids=["empty", "empty_group", "not_a_list", "float_index", "str_index", "bool_index"],
)
def test_malformed_groups(groups, message):
    with pytest.raises(VitCompressError, match=message):
        vc.MultiplexConfig(groups=groups)


def test_explicit_groups_need_not_be_consecutive(make_vit):
    student = vc.multiplex(make_vit(depth=5), vc.MultiplexConfig(groups=[[4, 0, 2], [1, 3]]))
    assert groups_of(student) == [[0, 2, 4], [1, 3]]
    assert [blk.group for blk in student.blocks] == [0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(init="last"), "init='last' is not valid"),
        (dict(init_index=-1), "init_index=-1 must be >= 0"),
        (dict(kernel_size=4), "kernel_size=4 must be a positive odd integer"),
        (dict(kernel_size=0), "kernel_size=0 must be a positive odd integer"),
    ],
    ids=["init", "init_index", "even_kernel", "zero_kernel"],
)
def test_other_invalid_fields(kwargs, message):
    with pytest.raises(VitCompressError, match=message):
        vc.MultiplexConfig(**kwargs)


def test_from_dict_rejects_unknown_fields_and_newer_versions():
    with pytest.raises(VitCompressError, match=r"unknown MultiplexConfig field\(s\) \['shares'\]"):
        vc.MultiplexConfig.from_dict({"shares": 2})
    with pytest.raises(VitCompressError, match="version 99 is newer"):
        vc.MultiplexConfig.from_dict({"share": 2, "version": 99})


def test_config_round_trips_through_a_dict():
    cfg = vc.MultiplexConfig(groups=[[0, 1], [2]], init="average", kernel_size=3, mlp_transform=False)
    assert vc.MultiplexConfig.from_dict(cfg.to_dict()) == cfg


def test_already_multiplexed_model_is_refused(make_vit):
    student = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1))
    with pytest.raises(VitCompressError, match="already multiplexed"):
        vc.multiplex(student, vc.MultiplexConfig(share=1))


def test_config_of_the_wrong_type(make_vit):
    with pytest.raises(VitCompressError, match="pass a MultiplexConfig"):
        vc.multiplex(make_vit(), {"share": 2})


def test_default_config_is_share_2(make_vit):
    assert groups_of(vc.multiplex(make_vit(depth=4))) == [[0, 1], [2, 3]]
