"""Paper structure on DeiT-S (analytic and measured on the meta device) and the budget solver at full size."""

from __future__ import annotations

import pytest
import timm
import torch

import vitcompress as vc
from vitcompress.slim.cost import structure_of

from .conftest import randomize_masks


def uniform_selection(depth: int, heads: int, head_dim: int, hidden: int, share: float) -> vc.Selection:
    """`share` of the attention dims (spread over the heads) and of the MLP units kept in every layer."""
    dims = round(share * heads * head_dim)
    per_head = [dims // heads + (h < dims % heads) for h in range(heads)]
    attn = [[list(range(n)) for n in per_head]] * depth
    return vc.Selection(attn=attn, mlp=[list(range(round(share * hidden)))] * depth)


def test_deit_small_70_percent_matches_the_paper():
    """ViT-Slim PS 70% on DeiT-S: paper 15.6M params / 3.3 GMACs; ours counts 15.67M / 3.24 G."""
    with torch.device("meta"):  # shapes only: nothing allocated, MACs counted on meta tensors
        deit = timm.create_model("deit_small_patch16_224", pretrained=False)
        sel = uniform_selection(12, 6, 64, 1536, 0.7)
        small = vc.extract(deit, sel)
    macs, params = sel.cost(structure_of(deit))
    assert 15.6e6 <= params < 15.7e6
    assert round(macs / 1e9, 2) == 3.24
    assert params == vc.count_params(small)
    assert macs == vc.count_macs(small, (3, 224, 224))
    assert vc.count_macs(deit, (3, 224, 224)) == 4_598_882_304  # the base: 4.60 G


@pytest.fixture(scope="module")
def deit_small_masked():
    torch.manual_seed(0)
    deit = timm.create_model("deit_small_patch16_224", pretrained=False)
    return randomize_masks(vc.attach_masks(deit, vc.SlimConfig(tokens=True)), seed=3)


@pytest.mark.parametrize("mode", ["share", "joint"])
def test_deit_small_select_macs_60_percent_within_one_percent(deit_small_masked, mode):
    sel = vc.select(deit_small_masked, macs=0.6, mode=mode)
    assert 0.594 <= sel.info["macs_ratio"] <= 0.6
    small = vc.extract(deit_small_masked, sel).to("meta")
    assert vc.count_macs(small, (3, 224, 224)) == sel.info["macs"]
    assert vc.count_params(small) == sel.info["params"]


def test_deit_small_dims_70_percent_by_select(deit_small_masked):
    # Searched (here: random) masks: one global threshold per type, so layers may keep different widths.
    sel = vc.select(deit_small_masked, dims={"attn": 0.7, "mlp": 0.7})
    assert sum(len(h) for layer in sel.attn for h in layer) == round(0.7 * 12 * 384)
    assert sum(len(u) for u in sel.mlp) == round(0.7 * 12 * 1536)
    assert len({sum(len(h) for h in layer) for layer in sel.attn}) > 1


@pytest.mark.slow
def test_deit_small_new_budget_meets_its_macs_target(deit_small_masked):
    # How fast a new budget is cut out is a benchmark (BENCHMARKS.md, methods-slim: "A new budget from a saved search"),
    # not a timed test.
    small = vc.extract(deit_small_masked, vc.select(deit_small_masked, macs=0.45))
    assert vc.count_macs(small, (3, 224, 224)) == pytest.approx(0.45 * 4_598_882_304, rel=0.01)
