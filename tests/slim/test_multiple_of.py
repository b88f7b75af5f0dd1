"""select(..., multiple_of=k): hardware-aligned widths, budgets still met, monotone, exact, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.cli import main
from vitcompress.slim.align import nearest_aligned
from vitcompress.slim.cost import structure_of

# Tiny models whose widths make multiples of 8 meaningful: heads of 32 dims (0/8/16/24/32), MLPs of 512 units,
# and enough layers that one rounding step (8 dims or units in one layer) is well under 1% of the MACs.
VIT = dict(embed_dim=128, num_heads=4, depth=6, img_size=64)
SWIN = dict(img_size=64, patch_size=4, window_size=4, embed_dim=64, depths=(2, 4), num_heads=(2, 4), num_classes=10)
KINDS = ["vit", "swin", "multiplexed"]


def build(kind: str, make_vit, randomize) -> torch.nn.Module:
    """A masked model of `kind` with seeded random mask values (token masks where the kind has them)."""
    if kind == "swin":
        torch.manual_seed(0)
        return randomize(vc.attach_masks(timm.create_model("swin_tiny_patch4_window7_224", **SWIN).eval()))
    model = make_vit("vit", **VIT)
    if kind == "multiplexed":  # 6 groups of 2 layers: a group's step is twice a layer's, so twice the layers
        model = vc.multiplex(make_vit("vit", **{**VIT, "depth": 12}),
                             vc.MultiplexConfig(share=2, mlp_transform=False)).eval()
    return randomize(vc.attach_masks(model, vc.SlimConfig(tokens=True)))


@pytest.fixture(params=KINDS)
def masked(request, make_vit, randomize):
    return build(request.param, make_vit, randomize)


def head_widths(sel: vc.Selection) -> list[int]:
    return [len(h) for layer in sel.attn for h in layer]


def assert_aligned(sel: vc.Selection, k: int = 8) -> None:
    assert sel.attn is not None and sel.mlp is not None
    assert all(w % k == 0 for w in head_widths(sel)), head_widths(sel)
    assert all(len(units) % k == 0 for units in sel.mlp)


@pytest.mark.parametrize("target", [0.4, 0.6, 0.8])
def test_widths_are_multiples_and_the_macs_target_is_met_within_1_percent(masked, target):
    sel = vc.select(masked, macs=target, multiple_of=8)
    assert_aligned(sel)
    assert 0.99 * target <= sel.info["macs_ratio"] <= target
    assert sel.cost(structure_of(masked)) == (sel.info["macs"], sel.info["params"])
    assert sel.info["multiple_of"] == 8


@pytest.mark.parametrize("mode", ["share", "joint"])
def test_params_targets_and_joint_mode_are_met_too(make_vit, randomize, mode):
    masked = build("vit", make_vit, randomize)
    for target in (0.5, 0.7):
        sel = vc.select(masked, params=target, mode=mode, multiple_of=8)
        assert_aligned(sel)
        assert 0.99 * target <= sel.info["params_ratio"] <= target


def test_the_solver_stays_monotone_in_the_budget(masked):
    sels = [vc.select(masked, macs=float(t), multiple_of=8) for t in np.linspace(0.3, 0.95, 14)]
    macs = [sel.info["macs"] for sel in sels]
    assert macs == sorted(macs) and len(set(macs)) > 10
    for smaller, larger in zip(sels, sels[1:], strict=False):  # every width, not only the total, never shrinks
        assert all(a <= b for a, b in zip(head_widths(smaller), head_widths(larger), strict=True))
        assert all(len(a) <= len(b) for a, b in zip(smaller.mlp, larger.mlp, strict=True))


def test_extraction_equals_binarize(masked):
    tokens = 8 if structure_of(masked).has_tokens else 1
    sel = vc.select(masked, macs=0.5, multiple_of=8, multiple_of_tokens=tokens)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    small = vc.extract(masked, sel).eval()
    with torch.no_grad():
        assert_close(small(x), vc.binarize(masked, sel).eval()(x))
    assert vc.count_macs(small, (3, 64, 64)) == sel.info["macs"]


def test_composes_with_equal_heads(masked):
    for target in (0.5, 0.8):
        sel = vc.select(masked, macs=target, multiple_of=8, equal_heads=True)
        assert_aligned(sel)
        assert all(len({len(h) for h in layer}) == 1 for layer in sel.attn)
        # An equal-heads step moves every head of a layer by 8 dims at once: up to ~2.5% of these tiny models'
        # MACs (0.05-0.3% at DeiT-Ti/S and Swin-T size), so the bound here is looser than the ragged 1%.
        assert 0.97 * target <= sel.info["macs_ratio"] <= target
        assert sel.info["equal_heads"] and sel.info["multiple_of"] == 8


def test_each_width_keeps_its_best_units(make_vit):
    masked = vc.attach_masks(make_vit("vit", **{**VIT, "depth": 2}), vc.SlimConfig())
    with torch.no_grad():  # distinct scores, spread unevenly over heads and units
        for i, blk in enumerate(masked.blocks):
            gen = torch.Generator().manual_seed(i)
            blk.attn.dim_mask.copy_(torch.randperm(128, generator=gen).float().reshape(4, 32) ** 2)
            blk.mlp.hidden_mask.copy_(torch.randperm(512, generator=gen).float())
    ragged = vc.select(masked, dims={"attn": 0.4, "mlp": 0.4})
    sel = vc.select(masked, dims={"attn": 0.4, "mlp": 0.4}, multiple_of=8)
    assert head_widths(ragged) != head_widths(sel)
    for i, blk in enumerate(masked.blocks):
        for h, dims in enumerate(sel.attn[i]):
            width = int(nearest_aligned(np.array(len(ragged.attn[i][h])), np.array(32), 8))
            best = blk.attn.dim_mask[h].argsort(descending=True)[:width]
            assert dims == sorted(best.tolist())
        width = int(nearest_aligned(np.array(len(ragged.mlp[i])), np.array(512), 8))
        assert sel.mlp[i] == sorted(blk.mlp.hidden_mask.argsort(descending=True)[:width].tolist())


def test_rounding_rule_is_the_nearest_multiple_or_the_full_width():
    counts = np.arange(33)
    expected = [0] * 4 + [8] * 8 + [16] * 8 + [24] * 8 + [32] * 5  # halves (4, 12, ...) round up
    assert nearest_aligned(counts, np.full(33, 32), 8).tolist() == expected
    # A full width k does not divide: the full width is the one unaligned value left (the original layer).
    assert nearest_aligned(np.arange(13), np.full(13, 12), 8).tolist() == [0] * 4 + [8] * 6 + [12] * 3


def test_tokens_round_the_sequence_length_only_when_asked(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("vit", **{**VIT, "img_size": 128}), vc.SlimConfig(tokens=True)))
    prefix = structure_of(masked).num_prefix
    ragged_tokens = vc.select(masked, macs=0.6, multiple_of=8)
    assert any((prefix + len(t)) % 8 for t in ragged_tokens.tokens), "tokens are left alone by default"
    for target in (0.4, 0.6, 0.8):
        sel = vc.select(masked, macs=target, multiple_of=8, multiple_of_tokens=8)
        assert all((prefix + len(t)) % 8 == 0 and t for t in sel.tokens)
        assert all(set(b) <= set(a) for a, b in zip(sel.tokens, sel.tokens[1:], strict=False))
        assert 0.99 * target <= sel.info["macs_ratio"] <= target
        assert sel.info["multiple_of_tokens"] == 8


def test_fewest_tokens_is_one_aligned_sequence(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("vit", **VIT), vc.SlimConfig(tokens=True)))
    sel = vc.select(masked, dims={"tokens": 0.01}, multiple_of_tokens=8)
    assert [len(t) for t in sel.tokens] == [7] * 6  # class token + 7 patches: the shortest with a patch in it


def test_whole_head_models_round_only_their_mlps(make_vit, randomize):
    # q/k-norm heads are kept whole; head_dim 12 is no multiple of 8, so kept heads stay 12 wide (the full width).
    masked = randomize(vc.attach_masks(make_vit("qk_norm", embed_dim=48), vc.SlimConfig()))
    sel = vc.select(masked, macs=0.6, multiple_of=8)
    assert set(head_widths(sel)) == {0, 12}
    assert all(len(units) % 8 == 0 for units in sel.mlp)


def test_eva_keeps_whole_heads_and_rounds_its_gated_mlps(randomize):
    torch.manual_seed(0)  # heads of 16; a packed SwiGLU of 170 units, which 8 does not divide
    eva = timm.create_model("eva02_tiny_patch14_224.mim_in22k", img_size=56, embed_dim=64, num_heads=4, depth=4,
                            num_classes=10).eval()
    masked = randomize(vc.attach_masks(eva))
    sel = vc.select(masked, macs=0.6, multiple_of=8)
    assert set(head_widths(sel)) == {0, 16}
    assert all(len(units) % 8 == 0 or len(units) == 170 for units in sel.mlp)
    assert any(0 < len(units) < 170 for units in sel.mlp)
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_close(vc.extract(masked, sel)(x), vc.binarize(masked, sel)(x))


def test_a_head_width_k_does_not_divide_keeps_the_full_width_as_its_one_unaligned_choice(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("vit", embed_dim=48, num_heads=4, depth=4), vc.SlimConfig()))
    widths = set()
    for target in (0.5, 0.7, 0.9):
        sel = vc.select(masked, macs=target, multiple_of=8)
        widths |= set(head_widths(sel))
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert_close(vc.extract(masked, sel)(x), vc.binarize(masked, sel)(x))
    assert widths <= {0, 8, 12} and 12 in widths


def test_multiple_of_one_changes_nothing_and_is_not_recorded(make_vit, randomize):
    masked = build("vit", make_vit, randomize)
    sel = vc.select(masked, macs=0.6, multiple_of=1)
    assert sel.to_dict() == vc.select(masked, macs=0.6).to_dict() and "multiple_of" not in sel.info


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(multiple_of=0), "multiple_of=0 must be a positive int"),
        (dict(multiple_of=-8), "must be a positive int"),
        (dict(multiple_of=2.5), "must be a positive int"),
        (dict(multiple_of=True), "must be a positive int"),
        (dict(multiple_of="8"), "must be a positive int"),
        (dict(multiple_of=64), "larger than the 32 dims of the narrowest attention head"),
        (dict(multiple_of_tokens=0), "multiple_of_tokens=0 must be a positive int"),
        (dict(multiple_of_tokens=128), "larger than the 65 tokens of the full sequence"),
    ],
    ids=["zero", "negative", "float", "bool", "str", "above-head-dim", "tokens-zero", "tokens-above-sequence"],
)
def test_bad_multiples_are_one_line(make_vit, randomize, kwargs, message):
    masked = build("vit", make_vit, randomize)
    with pytest.raises(vc.VitCompressError, match=message) as err:
        vc.select(masked, macs=0.6, **kwargs)
    assert "\n" not in str(err.value)


def test_token_multiple_needs_token_masks(make_vit):
    masked = vc.attach_masks(make_vit("vit", **VIT), vc.SlimConfig())
    with pytest.raises(vc.VitCompressError, match="no token masks"):
        vc.select(masked, macs=0.6, multiple_of_tokens=8)


def test_mlp_narrower_than_k_is_refused(make_vit):
    masked = vc.attach_masks(make_vit("vit", **VIT), vc.SlimConfig(attn=False))
    with pytest.raises(vc.VitCompressError, match="larger than the 512 units of the narrowest MLP"):
        vc.select(masked, macs=0.6, multiple_of=1024)


def test_cli_extract_with_multiple_of(make_vit, randomize, tmp_path, capsys):
    search, out = tmp_path / "search", tmp_path / "aligned"
    vc.save(build("vit", make_vit, randomize), search)
    assert main(["slim", "extract", "--search", str(search), "--macs", "0.6", "--multiple-of", "8",
                 "--multiple-of-tokens", "8", "--equal-heads", "-o", str(out)]) == 0
    sel = vc.Selection.from_dict(json.loads((out / "selection.json").read_text()))
    assert_aligned(sel)
    assert all((1 + len(t)) % 8 == 0 for t in sel.tokens)
    assert sel.info["multiple_of"] == 8 and sel.info["multiple_of_tokens"] == 8
    assert json.loads((out / "report.json").read_text())["selection"]["multiple_of"] == 8
    small = vc.load(out)
    assert all(len(blk.attn.groups) == 1 for blk in small.blocks)  # equal heads: one attention call per layer
    assert vc.count_macs(small, (3, 64, 64)) == sel.info["macs"]
    capsys.readouterr()
    assert main(["slim", "extract", "--search", str(search), "--macs", "0.6", "--multiple-of", "0",
                 "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "multiple_of=0 must be a positive int" in err, err
    assert not (tmp_path / "bad").exists()
