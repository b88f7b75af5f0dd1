"""Mini-Swin equivalence: share=1 reproduces timm's Swin, shifted windows and masks included."""

from __future__ import annotations

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


def randomise_head_mixes(student, seed: int = 5) -> None:
    """Non-identity pre- and post-softmax mixings, with negative weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in transformer_layers(student):
            for mix in (blk.attn.transform.pre, blk.attn.transform.post):
                mix.weight.copy_(torch.randn(mix.weight.shape, generator=gen))


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
