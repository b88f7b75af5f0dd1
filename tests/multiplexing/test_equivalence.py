"""Equivalence: a multiplexed model starts exactly where the teacher (share=1) or plain weight sharing is."""

from __future__ import annotations

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


def test_transforms_off_takes_the_fused_attention_path(make_vit):
    teacher = make_vit()
    assert teacher.blocks[0].attn.fused_attn, "timm should pick SDPA by default; the test below needs it"
    student = vc.multiplex(teacher, vc.MultiplexConfig(share=1, attn_transform=False))
    assert all(blk.attn.fused_attn and blk.attn.transform is None for blk in student.blocks)


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
