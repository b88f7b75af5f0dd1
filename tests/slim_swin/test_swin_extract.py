"""Swin extraction: extract == binarize exactly, ragged and removed heads, analytic cost == measured, save/load."""

from __future__ import annotations

import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.attention import AttentionCore
from vitcompress.models.layers import transformer_layers
from vitcompress.slim.cost import structure_of

from .conftest import build_swin, randomize_masks, size_of, swin_images


def ragged_selection() -> vc.Selection:
    """w4_64: stage 1 has 2 heads of 12 dims, stage 2 has 4 heads of 12 dims."""
    full = list(range(12))
    attn = [
        [full, []],                            # head 1 removed entirely
        [[1, 3], [0, 2, 5]],                   # ragged: widths 2 and 3
        [[0], [], [2, 3], full],               # widths 1, 2, 12; head 1 removed
        [[], [], [], []],                      # no attention left in this layer
    ]
    return vc.Selection(attn=attn, mlp=[list(range(0, 96, 3)), list(range(40)), [5], list(range(192))])


def test_ragged_and_removed_heads():
    model = build_swin("w4_64")
    masked = randomize_masks(vc.attach_masks(model), seed=3)
    sel = ragged_selection()
    small = vc.extract(masked, sel).eval()
    attns = [blk.attn for blk in transformer_layers(small)]
    assert all(isinstance(a, AttentionCore) for a in attns)
    assert [a.head_dims for a in attns] == [[12, 0], [2, 3], [1, 0, 2, 12], [0, 0, 0, 0]]
    assert attns[2].groups == [(1, [0]), (2, [2]), (12, [3])]  # one fused attention per width
    # A removed head takes its relative-position bias column with it; the table follows the qkv layout.
    tables = [a.relative_position_bias_table for a in attns]
    assert [t.shape[1] for t in tables] == [1, 2, 3, 0]
    orig = transformer_layers(model)[2].attn.relative_position_bias_table
    assert torch.equal(tables[2], orig[:, [0, 2, 3]])
    assert all(a.scale == 12**-0.5 for a in attns)  # the original head's scale, not the new width's
    assert attns[3].qkv.out_features == 0 and attns[2].qkv.out_features == 3 * 15
    images = swin_images(model)
    with torch.no_grad():
        assert_close(small(images), vc.binarize(masked, sel)(images))
    assert sel.cost(structure_of(masked)) == (vc.count_macs(small, size_of(small)), vc.count_params(small))


def test_extract_a_plain_swin_by_a_hand_made_selection():
    model = build_swin("w7_56")
    sel = vc.Selection(mlp=[list(range(0, 128, 2))] * 2 + [list(range(0, 256, 4))] * 2)
    small = vc.extract(model, sel)
    assert [blk.mlp.fc1.out_features for blk in transformer_layers(small)] == [64, 64, 64, 64]
    ref = vc.binarize(vc.attach_masks(model, vc.SlimConfig(attn=False)), sel)
    images = swin_images(model)
    with torch.no_grad():
        assert_close(small(images), ref(images))
    unchanged = vc.extract(model, vc.Selection()).eval()
    with torch.no_grad():
        assert_close(unchanged(images), model(images), rtol=1e-5, atol=1e-5)
