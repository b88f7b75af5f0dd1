"""extract == binarize exactly, on every variant and selection kind; analytic cost == measured; save/load."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.attention import AttentionCore
from vitcompress.slim.cost import structure_of


def size_of(model) -> tuple[int, int, int]:
    return (3, *model.patch_embed.img_size)


def test_equal_heads_run_one_attention_call_per_layer(make_vit, randomize, images):
    masked = randomize(vc.attach_masks(make_vit("deit3_layerscale"), vc.SlimConfig(tokens=True)))
    ragged = vc.extract(masked, vc.select(masked, macs=0.5, mode="joint"))
    sel = vc.select(masked, macs=0.5, mode="joint", equal_heads=True)
    small = vc.extract(masked, sel)
    assert max(len(blk.attn.groups) for blk in ragged.blocks) > 1
    assert all(len(blk.attn.groups) == 1 for blk in small.blocks)
    with torch.no_grad():
        assert_close(small(images), vc.binarize(masked, sel)(images))


def test_binarize_sets_masks_to_exactly_zero_or_one(make_vit, randomize):
    masked = randomize(vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=True)))
    ref = vc.binarize(masked, vc.select(masked, macs=0.5))
    for name, p in ref.named_parameters():
        if name.endswith(("dim_mask", "hidden_mask")):
            assert set(p.unique().tolist()) <= {0.0, 1.0}, name
    for k in ref.blocks.keeps():
        assert set(k.unique().tolist()) <= {0.0, 1.0}
    assert any((k == 0).any() for k in ref.blocks.keeps())


def test_ragged_heads_and_removed_heads(make_vit, perturb, images):
    masked = vc.attach_masks(perturb(make_vit("deit3_layerscale")), vc.SlimConfig())  # 4 heads of 16
    kept = [[list(range(16)), [0, 3, 5], [], [1, 2, 4]], [[], [], [], []]]  # layer 1: no attention left
    sel = vc.Selection(attn=kept)
    small = vc.extract(masked, sel)
    attn0, attn1 = small.blocks[0].attn, small.blocks[1].attn
    assert isinstance(attn0, AttentionCore) and attn0.head_dims == [16, 3, 0, 3]
    assert [(w, hs) for w, hs in attn0.groups] == [(3, [1, 3]), (16, [0])]  # one attention per width
    assert attn0.qkv.out_features == 3 * 22 and attn0.proj.in_features == 22
    assert attn0.scale == 16**-0.5  # the original head's scale, not the new width's
    assert attn1.qkv.out_features == 0
    with torch.no_grad():
        assert_close(small(images), vc.binarize(masked, sel)(images))
    assert sel.cost(structure_of(masked))[0] == vc.count_macs(small, size_of(small))


def test_qkv_rows_are_laid_out_group_by_group(make_vit):
    # Each width group's rows are [q | k | v] of its heads, so one reshape per group splits them (timm's layout
    # for a layer whose heads all kept the same width).
    model = make_vit("deit3_layerscale")  # 4 heads of 16, embedding 64
    kept = [[list(range(16)), [0, 3, 5], [], [1, 2, 4]]] + [[list(range(16))] * 4] * (len(model.blocks) - 1)
    small = vc.extract(model, vc.Selection(attn=kept))
    dims = {h: [h * 16 + e for e in kept[0][h]] for h in range(4)}  # flat head-dim index of each kept dim
    rows = [part * 64 + i for heads in ([1, 3], [0]) for part in range(3) for h in heads for i in dims[h]]
    assert torch.equal(small.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight[rows])
    cols = [i for h in (1, 3, 0) for i in dims[h]]
    assert torch.equal(small.blocks[0].attn.proj.weight, model.blocks[0].attn.proj.weight[:, cols])
    assert torch.equal(small.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)  # all kept: unchanged


def test_a_model_saved_with_the_old_qkv_layout_is_refused(make_vit):
    from vitcompress.models.spec import build_from_spec

    small = vc.extract(make_vit("vit"), vc.Selection(attn=[[[0, 1]] * 2] * 3))
    spec = small.vitcompress_spec
    del spec["steps"][-1]["qkv_layout"]  # as written before the grouped layout
    with pytest.raises(vc.VitCompressError, match="extract it again from its search"):
        build_from_spec(spec)


def test_extract_a_plain_model_by_a_hand_made_selection(make_vit, images):
    model = make_vit("vit")  # no masks: slice by indices (e.g. a uniform or magnitude baseline)
    sel = vc.Selection(mlp=[list(range(0, 128, 2))] * 3)
    small = vc.extract(model, sel)
    assert small.blocks[0].mlp.fc1.out_features == 64
    ref = vc.binarize(vc.attach_masks(model, vc.SlimConfig(attn=False)), sel)
    with torch.no_grad():
        assert_close(small(images), ref(images))


def test_selection_round_trips_through_json(make_vit, randomize):
    import json

    masked = randomize(vc.attach_masks(make_vit("reg_tokens"), vc.SlimConfig(tokens=True)))
    sel = vc.select(masked, macs=0.5)
    again = vc.Selection.from_dict(json.loads(json.dumps(sel.to_dict())))
    assert again == sel


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (dict(mlp=[[0]] * 2), "2 layers"),
        (dict(mlp=[[0, 999]] * 3), "0..127"),
        (dict(attn=[[[0]] * 3] * 3), "3 heads"),
        (dict(tokens=[[0, 1], [0, 2], [0]]), "subset"),
        (dict(tokens=[[0], [], []]), "no patch token"),
        (dict(mlp=[[1, 1]] * 3), "twice"),
    ],
    ids=["depth", "range", "heads", "not-nested", "no-token", "duplicate"],
)
def test_bad_selections_are_refused(make_vit, selection, message):
    with pytest.raises(vc.VitCompressError, match=message):
        vc.extract(make_vit("vit"), vc.Selection(**selection))


def test_binarize_needs_matching_masks(make_vit):
    masked = vc.attach_masks(make_vit("vit"), vc.SlimConfig(tokens=False))
    with pytest.raises(vc.VitCompressError, match="no tokens masks"):
        vc.binarize(masked, vc.Selection(tokens=[[0]] * 3))
    with pytest.raises(vc.VitCompressError, match="Selection vc.select returns"):
        vc.extract(masked, {"mlp": None})
    small = vc.extract(masked, vc.Selection(mlp=[[0]] * 3))
    with pytest.raises(vc.VitCompressError, match="already slimmed"):
        vc.extract(small, vc.Selection())


@pytest.mark.parametrize("arch", ["vit_so400m_patch14_siglip_224", "vit_base_patch16_siglip_gap_224"])
def test_siglip_heads_slim_exactly_with_their_pooling_as_a_fixed_cost(arch, randomize):
    # SigLIP's attention-pooling (MAP) head reads every token at the full width: a fixed cost, counted on the module.
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              num_classes=10, mlp_ratio=4).eval()
    masked = randomize(vc.attach_masks(model)).eval()
    selection = vc.select(masked, macs=0.6)
    small, reference = vc.extract(masked, selection).eval(), vc.binarize(masked, selection).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(small(x), reference(x))
    assert vc.count_macs(small, (3, 32, 32)) == selection.info["macs"]
    assert vc.count_params(small) == selection.info["params"]
