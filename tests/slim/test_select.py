"""select: budgets in MACs, params or dim shares; nested tokens; uniform ties; clear errors."""

from __future__ import annotations

import pytest

import vitcompress as vc
from vitcompress.slim.cost import structure_of


@pytest.fixture
def masked(make_vit, randomize):
    return randomize(vc.attach_masks(make_vit("reg_tokens", depth=6, embed_dim=64, num_heads=4),
                                     vc.SlimConfig(tokens=True)))


@pytest.mark.parametrize("mode", ["share", "joint"])
@pytest.mark.parametrize("key", ["macs", "params"])
@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_budget_is_met_from_below_within_tolerance(masked, key, target, mode):
    sel = vc.select(masked, **{key: target}, mode=mode)
    achieved = sel.info[f"{key}_ratio"]
    assert achieved <= target
    assert achieved > target - 0.02  # tiny model: one element is ~1% here; DeiT-S is checked to ±1%
    assert sel.cost(structure_of(masked)) == (sel.info["macs"], sel.info["params"])


def test_target_one_keeps_everything(masked):
    sel = vc.select(masked, macs=1.0)
    assert sel.is_empty and sel.info["macs_ratio"] == 1.0


def test_dims_shares_are_exact_per_type(masked):
    sel = vc.select(masked, dims={"attn": 0.5, "mlp": 0.25})
    s = structure_of(masked)
    kept_attn = sum(len(h) for layer in sel.attn for h in layer)
    assert kept_attn == round(0.5 * sum(s.full()[0]))  # one owner per layer
    assert sum(len(u) for u in sel.mlp) == round(0.25 * sum(s.full()[1]))
    assert sel.tokens is None


def test_tokens_are_nested_and_never_empty(masked):
    for share in (0.01, 0.3, 0.7):
        sel = vc.select(masked, dims={"tokens": share})
        for prev, cur in zip(sel.tokens, sel.tokens[1:], strict=False):
            assert set(cur) <= set(prev)
        assert all(len(t) >= 1 for t in sel.tokens)


def test_ties_give_a_uniform_structure(make_vit):
    # Freshly attached masks are all 1: the selection is uniform over layers and heads.
    masked = vc.attach_masks(make_vit("deit3_layerscale"), vc.SlimConfig(tokens=True))  # 2 layers, 4 heads of 16
    sel = vc.select(masked, dims={"attn": 0.5, "mlp": 0.5, "tokens": 0.5})
    assert all(len(h) == 8 for layer in sel.attn for h in layer)
    assert all(len(u) == len(sel.mlp[0]) for u in sel.mlp)
    assert sel.tokens[0] == sel.tokens[1] == list(range(8))


def test_qk_norm_keeps_heads_whole(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("qk_norm"), vc.SlimConfig()))
    sel = vc.select(masked, macs=0.6)
    assert all(len(h) in (0, 16) for layer in sel.attn for h in layer)
    assert any(len(h) == 0 for layer in sel.attn for h in layer)


def test_multiplexed_layers_of_a_group_keep_the_same_dims(make_vit, randomize):
    mx = vc.multiplex(make_vit("reg_tokens"), vc.MultiplexConfig(share=2, mlp_transform=False))
    masked = randomize(vc.attach_masks(mx, vc.SlimConfig(tokens=True)))
    sel = vc.select(masked, macs=0.5)
    assert sel.attn[0] == sel.attn[1] and sel.attn[2] == sel.attn[3]
    assert sel.mlp[0] == sel.mlp[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(), "exactly one target"),
        (dict(macs=0.5, params=0.5), "exactly one target"),
        (dict(macs=0.0), r"\(0, 1\]"),
        (dict(macs=-0.2), r"\(0, 1\]"),
        (dict(params=1.5), r"\(0, 1\]"),
        (dict(macs=True), r"\(0, 1\]"),
        (dict(macs=0.001), "out of reach"),
        (dict(params=0.01), "out of reach"),
        (dict(dims={"heads": 0.5}), "unknown"),
        (dict(dims={"attn": 0}), r"\(0, 1\]"),
        (dict(dims={}), "non-empty"),
        (dict(macs=0.5, mode="greedy"), "mode"),
    ],
    ids=["none", "several", "zero", "negative", "above-one", "bool", "unreachable-macs", "below-fixed-params",
         "unknown-key", "zero-share", "empty-dims", "bad-mode"],
)
def test_bad_budgets(masked, kwargs, message):
    with pytest.raises(vc.VitCompressError, match=message):
        vc.select(masked, **kwargs)


def test_dims_for_an_unmasked_type_and_unmasked_model(make_vit):
    model = make_vit("vit")
    with pytest.raises(vc.VitCompressError, match="no tokens masks"):
        vc.select(vc.attach_masks(model, vc.SlimConfig()), dims={"tokens": 0.5})
    with pytest.raises(vc.VitCompressError, match="needs a masked model"):
        vc.select(model, macs=0.5)


def test_budget_curve_is_monotone(masked):
    from vitcompress.slim.solver import budget_curve

    curve = budget_curve(masked, points=11)
    assert curve[0]["macs_ratio"] == 1.0 and curve[0]["params_ratio"] == 1.0
    macs = [row["macs_ratio"] for row in curve]
    assert macs == sorted(macs, reverse=True) and macs[-1] > 0


@pytest.mark.parametrize("mode", ["share", "joint"])
def test_equal_heads_meet_the_budget_with_one_width_per_layer(masked, mode):
    ragged = vc.select(masked, macs=0.5, mode=mode)
    sel = vc.select(masked, macs=0.5, mode=mode, equal_heads=True)
    assert any(len({len(h) for h in layer}) > 1 for layer in ragged.attn), "random masks should give ragged heads"
    assert all(len({len(h) for h in layer}) == 1 for layer in sel.attn)
    assert 0.48 < sel.info["macs_ratio"] <= 0.5 and sel.info["equal_heads"]
    assert sel.cost(structure_of(masked)) == (sel.info["macs"], sel.info["params"])


def test_equal_heads_keep_each_heads_best_dims(make_vit):
    import torch

    masked = vc.attach_masks(make_vit("deit3_layerscale"), vc.SlimConfig(mlp=False))  # 2 layers, 4 heads of 16
    with torch.no_grad():
        for blk in masked.blocks:
            blk.attn.dim_mask.copy_(torch.linspace(1, 0, 64).roll(7).reshape(4, 16))  # heads differ in scores
    ragged = vc.select(masked, dims={"attn": 0.25})  # threshold: 16 dims of a layer, unevenly over heads
    sel = vc.select(masked, dims={"attn": 0.25}, equal_heads=True)
    assert [len(h) for h in ragged.attn[0]] != [4] * 4
    for layer, blk in zip(sel.attn, masked.blocks, strict=True):
        assert [len(h) for h in layer] == [4] * 4  # 16 dims over 4 heads
        for h, dims in enumerate(layer):
            assert dims == sorted(blk.attn.dim_mask[h].argsort(descending=True, stable=True)[:4].tolist())


def test_equal_heads_on_whole_head_masks_change_nothing(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("qk_norm"), vc.SlimConfig()))
    assert vc.select(masked, macs=0.6, equal_heads=True).attn == vc.select(masked, macs=0.6).attn


def test_equal_heads_must_be_a_bool(masked):
    with pytest.raises(vc.VitCompressError, match="equal_heads"):
        vc.select(masked, macs=0.5, equal_heads="yes")
