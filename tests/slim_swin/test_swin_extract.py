"""Swin extraction: extract == binarize exactly, ragged and removed heads, analytic cost == measured, save/load."""

from __future__ import annotations

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.layers import transformer_layers
from vitcompress.slim.cost import structure_of
from vitcompress.slim.swin_pruned import PrunedWindowAttention

from .conftest import build_swin, randomize_masks, size_of, swin_images

SELECTIONS = {
    "attn": dict(dims={"attn": 0.45}),
    "mlp": dict(dims={"mlp": 0.4}),
    "joint": dict(macs=0.5, mode="joint"),
    "share": dict(macs=0.6),
    "params": dict(params=0.5),
    "equal_heads": dict(macs=0.5, mode="joint", equal_heads=True),
}


@pytest.mark.parametrize("kind", list(SELECTIONS))
def test_extract_reproduces_binarize_and_its_analytic_cost(swin_config, kind):
    model = build_swin(swin_config)
    masked = randomize_masks(vc.attach_masks(model)).eval()
    sel = vc.select(masked, **SELECTIONS[kind])
    small = vc.extract(masked, sel).eval()
    assert isinstance(small, SwinTransformer) and not any("mask" in k for k in small.state_dict())
    images = swin_images(model)
    with torch.no_grad():
        expected = vc.binarize(masked, sel)(images)
        assert_close(small(images), expected)
        assert not torch.allclose(expected, model(images), atol=1e-3), "the selection should change the model"
    assert (sel.info["macs"], sel.info["params"]) == (vc.count_macs(small, size_of(small)), vc.count_params(small))
    assert sel.info["macs"] < vc.count_macs(model, size_of(model))
    # Embedding widths are never pruned: patch merging (and the head) come through untouched.
    for stage, orig in zip(small.layers[1:], model.layers[1:], strict=True):
        assert torch.equal(stage.downsample.reduction.weight, orig.downsample.reduction.weight)
    assert set(sel.info["stage_shares"]) == set(("attn", "mlp")) and len(sel.info["stage_shares"]["attn"]) == 2


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
    assert all(isinstance(a, PrunedWindowAttention) for a in attns)
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


def test_extracted_model_trains_and_leaves_the_masked_one_alone():
    masked = randomize_masks(vc.attach_masks(build_swin("w4_40_pad")))
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    small = vc.extract(masked, vc.select(masked, macs=0.5)).train()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(1.0)
    for k, v in masked.state_dict().items():
        assert torch.equal(v, before[k]), k
    small(swin_images(small)).sum().backward()
    assert all(p.grad is not None for p in small.parameters() if p.numel())


def test_save_load_masked_and_extracted(tmp_path):
    model = build_swin("w4_64")
    masked = randomize_masks(vc.attach_masks(model)).eval()
    vc.save(masked, tmp_path / "masked")
    again = vc.load(tmp_path / "masked")
    sel = vc.select(again, macs=0.5)
    small = vc.extract(again, sel).eval()
    vc.save(small, tmp_path / "small")
    loaded = vc.load(tmp_path / "small")
    assert [s["kind"] for s in loaded.vitcompress_spec["steps"]] == ["slim"]
    images = swin_images(model)
    with torch.no_grad():
        assert_close(again(images), masked(images), rtol=0, atol=0)
        assert_close(loaded(images), small(images), rtol=0, atol=0)
        assert_close(small(images), vc.binarize(masked, sel)(images))
    assert vc.count_params(loaded) == sel.info["params"]
    with pytest.raises(vc.VitCompressError, match="already slimmed"):
        vc.extract(loaded, vc.Selection())
