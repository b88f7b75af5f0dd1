"""Equivalence: a multiplexed model starts exactly where the teacher (share=1) or plain weight sharing is."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc

TRANSFORMS = {
    "off": dict(attn_transform=False, mlp_transform=False),
    "attn": dict(attn_transform=True, mlp_transform=False),
    "mlp": dict(attn_transform=False, mlp_transform=True),
    "both": dict(attn_transform=True, mlp_transform=True),
}


def plain_sharing(teacher, groups):
    """Reference: the teacher with each block's linears replaced by the first block's of its group."""
    model = copy.deepcopy(teacher)
    for group in groups:
        first = model.blocks[group[0]]
        for i in group[1:]:
            blk = model.blocks[i]
            blk.attn.qkv, blk.attn.proj = first.attn.qkv, first.attn.proj
            blk.mlp.fc1, blk.mlp.fc2 = first.mlp.fc1, first.mlp.fc2
    return model


@pytest.mark.parametrize("transforms", list(TRANSFORMS))
def test_share1_reproduces_teacher_logits(make_vit, variant, transforms, images):
    teacher = make_vit(variant)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1, **TRANSFORMS[transforms])).eval()
    with torch.no_grad():
        assert_close(student(images), teacher(images))


def test_transforms_off_takes_the_fused_attention_path(make_vit):
    teacher = make_vit()
    assert teacher.blocks[0].attn.fused_attn, "timm should pick SDPA by default; the test below needs it"
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1, attn_transform=False))
    assert all(blk.attn.fused_attn and blk.attn.transform is None for blk in student.blocks)


@pytest.mark.parametrize("variant", ["vit", "deit_distilled", "qk_norm"], indirect=True)
def test_fused_and_manual_attention_agree(make_vit, variant, images):
    student = vc.multiplex(make_vit(variant), vc.MultiplexConfig(share=2, attn_transform=False)).eval()
    with torch.no_grad():
        fused = student(images)
        for blk in student.blocks:
            blk.attn.fused_attn = False
        assert_close(student(images), fused)


def test_share2_transforms_on_equals_transforms_off_and_plain_sharing(make_vit, variant, images):
    teacher = make_vit(variant, depth=4)
    on = vc.multiplex(teacher, vc.MultiplexConfig(share=2)).eval()
    off = vc.multiplex(teacher, vc.MultiplexConfig(share=2, attn_transform=False, mlp_transform=False)).eval()
    reference = plain_sharing(teacher, [[0, 1], [2, 3]])
    with torch.no_grad():
        expected = reference(images)
        assert_close(on(images), expected)
        assert_close(off(images), expected)
        assert not torch.allclose(expected, teacher(images)), "sharing should change a random model's output"


@pytest.mark.parametrize("transforms", ["off", "both"])
@pytest.mark.parametrize("mask_kind", ["bool", "float", "causal"])
def test_share1_honours_attention_masks(make_vit, transforms, mask_kind, images):
    teacher = make_vit("reg_tokens")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1, **TRANSFORMS[transforms])).eval()
    n = teacher.num_prefix_tokens + 16
    gen = torch.Generator().manual_seed(3)
    kwargs = {
        "bool": dict(attn_mask=(torch.rand(n, n, generator=gen) > 0.3) | torch.eye(n, dtype=torch.bool)),
        "float": dict(attn_mask=torch.randn(n, n, generator=gen)),
        "causal": dict(is_causal=True),
    }[mask_kind]
    with torch.no_grad():
        expected = teacher.forward_features(images, **kwargs)
        assert not torch.allclose(expected, teacher.forward_features(images)), "the mask should matter"
        assert_close(student.forward_features(images, **kwargs), expected)


def test_share1_backward_matches_teacher(make_vit, images):
    # Same loss, same weights: the shared linears of a share=1 student get exactly the teacher block's grads.
    teacher = make_vit("deit3_layerscale").train()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train()
    teacher(images).logsumexp(-1).sum().backward()
    student(images).logsumexp(-1).sum().backward()
    for i, blk in enumerate(teacher.blocks):
        shared = student.blocks_shared[i]
        for name, path in (("qkv", "attn.qkv"), ("proj", "attn.proj"), ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            theirs = blk.get_submodule(path)
            assert_close(getattr(shared, name).weight.grad, theirs.weight.grad, msg=f"layer {i} {name}")
        assert_close(student.blocks[i].norm1.weight.grad, blk.norm1.weight.grad)
        assert_close(student.blocks[i].ls2.gamma.grad, blk.ls2.gamma.grad)
    assert_close(student.patch_embed.proj.weight.grad, teacher.patch_embed.proj.weight.grad)
