"""Mini-Swin equivalence: share=1 reproduces timm's Swin, shifted windows and masks included."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.layers import transformer_layers

from .conftest import swin_images

TRANSFORMS = {
    "off": dict(attn_transform=False, mlp_transform=False),
    "both": dict(attn_transform=True, mlp_transform=True),
}


def plain_sharing(teacher, groups):
    """Reference: the teacher with each block's linears and bias table replaced by the first block's of its group."""
    model = copy.deepcopy(teacher)
    blocks = transformer_layers(model)
    for group in groups:
        first = blocks[group[0]]
        for i in group[1:]:
            blk = blocks[i]
            blk.attn.qkv, blk.attn.proj = first.attn.qkv, first.attn.proj
            blk.mlp.fc1, blk.mlp.fc2 = first.mlp.fc1, first.mlp.fc2
            blk.attn.relative_position_bias_table = first.attn.relative_position_bias_table
    return model


def randomise_head_mixes(student, seed: int = 5) -> None:
    """Non-identity pre- and post-softmax mixings, with negative weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in transformer_layers(student):
            for mix in (blk.attn.transform.pre, blk.attn.transform.post):
                mix.weight.copy_(torch.randn(mix.weight.shape, generator=gen))


@pytest.mark.parametrize("transforms", list(TRANSFORMS))
def test_share1_reproduces_timm(make_swin, swin_config, transforms):
    teacher = make_swin(swin_config)
    assert any(any(b.shift_size) for b in transformer_layers(teacher)), "the config should use shifted windows"
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1, **TRANSFORMS[transforms])).eval()
    images = swin_images(teacher)
    with torch.no_grad():
        assert_close(student(images), teacher(images))


def test_share1_reproduces_swin_tiny_at_224():
    # The real Swin-T: 224², window 7, 56→28→14→7 maps with 64/16/4/1 windows (the last one never shifted).
    torch.manual_seed(0)
    teacher = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10).eval()
    assert [b.shift_size for b in transformer_layers(teacher)][1::2] == [(3, 3)] * 5 + [(0, 0)]
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).eval()
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(student(images), teacher(images))


def test_share1_reproduces_timm_at_another_input_size(make_swin):
    # strict_img_size=False: windows are padded and masks built for the size of each forward.
    teacher = make_swin("w4_64", strict_img_size=False)
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).eval()
    assert all(blk.attn_mask is None and blk.dynamic_mask for blk in transformer_layers(student))
    images = torch.randn(2, 3, 72, 56, generator=torch.Generator().manual_seed(1))  # 18x14 and 9x7 maps
    with torch.no_grad():
        assert_close(student(images), teacher(images))


@pytest.mark.parametrize("share", [2, "stage"])
def test_sharing_with_identity_transforms_equals_plain_sharing(make_swin, share):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=share)).eval()
    groups = student.vitcompress_spec["steps"][-1]["groups"]
    reference = plain_sharing(teacher, groups)
    images = swin_images(teacher)
    with torch.no_grad():
        expected = reference(images)
        assert_close(student(images), expected)
        assert not torch.allclose(expected, teacher(images)), "sharing should change a random model's output"


def test_each_layer_gets_its_own_window_mask(make_swin):
    # Layers 0 and 1 share weights, yet layer 0 is not shifted (no mask) and layer 1 is (timm's mask).
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage"))
    for t_blk, s_blk in zip(transformer_layers(teacher), transformer_layers(student), strict=True):
        assert s_blk.shift_size == t_blk.shift_size
        if any(t_blk.shift_size):
            assert torch.equal(s_blk.attn_mask, t_blk.attn_mask == 0)
        else:
            assert s_blk.attn_mask is None and t_blk.attn_mask is None
    assert student.layers[0].blocks[0]._shared is student.layers[0].blocks[1]._shared


def test_non_shifted_layer_uses_no_mask_and_matches_timm(make_swin):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).eval()
    t_blk, s_blk = teacher.layers[0].blocks[0], student.layers[0].blocks[0]
    assert s_blk.shift_size == (0, 0) and s_blk.attn_mask is None
    x = torch.randn(2, 16, 16, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = t_blk(x)
        assert_close(s_blk(x), expected)
        # The official code's bug: a non-shifted layer given the shifted layer's mask computes something else.
        s_blk.attn_mask = student.layers[0].blocks[1].attn_mask
        assert not torch.allclose(s_blk(x), expected, atol=1e-3)


def test_masked_positions_get_exactly_zero_attention(make_swin):
    teacher = make_swin("w4_64")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share="stage")).eval()
    randomise_head_mixes(student)
    probs = {}
    layers = transformer_layers(student)
    for i, blk in enumerate(layers):
        blk.attn.transform.post.register_forward_hook(lambda _m, _i, out, i=i: probs.__setitem__(i, out))
    with torch.no_grad():
        student(swin_images(teacher))
    shifted = [i for i, blk in enumerate(layers) if blk.attn_mask is not None]
    assert shifted == [1, 3, 5]
    for i in shifted:
        mask = layers[i].attn_mask  # (nW, N, N), True = may attend
        p = probs[i].unflatten(0, (-1, mask.shape[0]))  # (B, nW, H, N, N)
        blocked = (~mask).unsqueeze(1).expand_as(p[0])
        assert blocked.any()
        assert (p[:, blocked] == 0).all(), f"layer {i}: attention mass on masked keys"
        assert (p[:, ~blocked] != 0).float().mean() > 0.99, "the mixing is not trivially zero"


def test_fused_and_manual_attention_agree(make_swin):
    teacher = make_swin("w4_40_pad")
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=2, attn_transform=False)).eval()
    images = swin_images(teacher)
    with torch.no_grad():
        manual = student(images)
        for blk in transformer_layers(student):
            blk.attn.fused_attn = True
        assert_close(student(images), manual)


def test_share1_backward_matches_timm(make_swin):
    teacher = make_swin("w4_64", drop_path_rate=0.0).train()
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1)).train()
    images = swin_images(teacher)
    teacher(images).logsumexp(-1).sum().backward()
    student(images).logsumexp(-1).sum().backward()
    for i, (t_blk, s_blk) in enumerate(zip(transformer_layers(teacher), transformer_layers(student), strict=True)):
        shared = s_blk._shared
        for name, theirs in (("qkv", t_blk.attn.qkv), ("proj", t_blk.attn.proj), ("fc1", t_blk.mlp.fc1),
                             ("fc2", t_blk.mlp.fc2)):
            assert_close(getattr(shared, name).weight.grad, theirs.weight.grad, msg=f"layer {i} {name}")
        assert_close(shared.relative_position_bias_table.grad, t_blk.attn.relative_position_bias_table.grad)
        assert_close(s_blk.norm1.weight.grad, t_blk.norm1.weight.grad)
    assert_close(student.layers[1].downsample.reduction.weight.grad, teacher.layers[1].downsample.reduction.weight.grad)
