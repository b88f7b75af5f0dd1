"""Slimming a multiplexed model: one mask per shared weight, sliced once; head mixing stays exact."""

from __future__ import annotations

import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.slim.cost import structure_of

TRANSFORMS = {
    "none": dict(attn_transform=False, mlp_transform=False),
    "attn": dict(attn_transform=True, mlp_transform=False),
    "mlp": dict(attn_transform=False, mlp_transform=True),
    "both": dict(attn_transform=True, mlp_transform=True),
}


def multiplexed(make_vit, perturb, variant: str, transforms: str):
    model = make_vit(variant, depth=4)
    return perturb(vc.multiplex(model, vc.MultiplexConfig(share=2, **TRANSFORMS[transforms]))).eval()


def test_one_mask_per_shared_weight_and_sliced_once(make_vit, perturb, randomize):
    mx = multiplexed(make_vit, perturb, "vit", "attn")
    masked = randomize(vc.attach_masks(mx, vc.SlimConfig(tokens=True)))
    masks = sorted(k for k in masked.state_dict() if "mask" in k)
    assert masks == sorted([f"blocks_shared.{g}.{m}" for g in range(2) for m in ("dim_mask", "hidden_mask")]
                           + [f"blocks.{i}.token_mask" for i in range(4)])
    small = vc.extract(masked, vc.select(masked, macs=0.5))
    shared = small.blocks_shared
    for g, layers in enumerate([[0, 1], [2, 3]]):
        for i in layers:
            assert small.blocks[i]._shared is shared[g]
    assert [s["kind"] for s in small.vitcompress_spec["steps"]] == ["multiplex", "slim"]
    assert vc.count_params(small) < vc.count_params(mx)


def test_removed_heads_keep_their_slot_in_the_head_mixing(make_vit, perturb, images):
    mx = multiplexed(make_vit, perturb, "deit3_layerscale", "attn")  # 4 heads of 16, head mixing on
    masked = vc.attach_masks(mx, vc.SlimConfig(mlp=False))
    # Group 0: head 1 loses every dim (zero logits still mix into other heads); group 1: only dims.
    sel = vc.Selection(attn=[[list(range(16)), [], [2, 5], list(range(8))]] * 2 + [[[0], [1], [2], [3]]] * 2)
    small = vc.extract(masked, sel).eval()
    assert small.blocks[0].attn.transform.pre.weight.shape == (4, 4)
    with torch.no_grad():
        expected = vc.binarize(masked, sel)(images)
        assert_close(small(images), expected)
        # Dropping head 1 from the mixing instead would not be the same function.
        assert not torch.allclose(expected, mx(images))
    assert sel.cost(structure_of(masked))[0] == vc.count_macs(small, (3, *small.patch_embed.img_size))
