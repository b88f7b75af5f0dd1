"""Slimming a Mini-Swin: one mask per shared group (weights and bias table), sliced once; head mixing stays exact."""

from __future__ import annotations

import pytest
import torch
from families.table import perturb_
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.layers import transformer_layers
from vitcompress.slim.cost import structure_of

from .conftest import build_swin, randomize_masks, size_of, swin_images

TRANSFORMS = {
    "none": dict(attn_transform=False, mlp_transform=False),
    "attn": dict(attn_transform=True, mlp_transform=False),
    "both": dict(attn_transform=True, mlp_transform=True, kernel_size=3),
}


def multiplexed(config: str, transforms: str, share: int | str = 2):
    mx = vc.multiplex(build_swin(config), vc.MultiplexConfig(share=share, **TRANSFORMS[transforms]))
    return perturb_(mx).eval()  # non-identity head mixings and convs


def test_one_mask_per_shared_group_and_sliced_once():
    mx = multiplexed("w7_56", "none", share="stage")
    masked = randomize_masks(vc.attach_masks(mx))
    masks = sorted(k for k in masked.state_dict() if "mask" in k)
    assert masks == [f"layers.{s}.blocks_shared.0.{m}" for s in range(2) for m in ("dim_mask", "hidden_mask")]
    assert masked.layers[1].blocks_shared[0].dim_mask.shape == (4, 16)
    sel = vc.select(masked, macs=0.5)
    assert sel.attn[0] == sel.attn[1] and sel.mlp[2] == sel.mlp[3]  # layers of a group keep the same dims
    small = vc.extract(masked, sel)
    for s, stage in enumerate(small.layers):
        shared = stage.blocks_shared[0]
        assert all(blk._shared is shared for blk in stage.blocks)
        kept_heads = sum(1 for h in sel.attn[2 * s] if h)  # no head mixing: removed heads lose their column
        assert shared.relative_position_bias_table.shape[1] == kept_heads
    assert vc.count_params(small) < vc.count_params(mx)


@pytest.mark.parametrize(("transforms", "columns"), [("none", [1, 3]), ("attn", [2, 4])])
def test_removed_heads_and_their_bias_columns(transforms, columns):
    mx = multiplexed("w4_64", transforms)  # 2 + 4 heads of 12
    masked = vc.attach_masks(mx, vc.SlimConfig(mlp=False))
    full = list(range(12))
    # Group 0: head 1 loses every dim; group 1: ragged, head 1 removed. Without head mixing a removed head goes
    # with its bias column; with it, the head's logits are its bias, which still mixes into the other heads, so
    # every slot and column stays.
    sel = vc.Selection(attn=[[full, []]] * 2 + [[[0], [], [2, 5], full]] * 2)
    small = vc.extract(masked, sel).eval()
    assert [st.blocks_shared[0].relative_position_bias_table.shape[1] for st in small.layers] == columns
    if transforms == "attn":
        assert transformer_layers(small)[0].attn.transform.pre.weight.shape == (2, 2)
    images = swin_images(mx)
    with torch.no_grad():
        expected = vc.binarize(masked, sel)(images)
        assert_close(small(images), expected)
        assert not torch.allclose(expected, mx(images), atol=1e-3)
    assert sel.cost(structure_of(masked)) == (vc.count_macs(small, size_of(small)), vc.count_params(small))
