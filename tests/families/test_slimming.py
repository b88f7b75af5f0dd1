"""ViT-Slim on every row of the table, plain and multiplexed: extract == binarize exactly, the analytic cost is
the measured one, save → load is exact, and what cannot be done is refused in one line. Token masks wherever the
family has them (ViT); the others are checked to refuse them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models import family_of
from vitcompress.models.layers import head_dim, transformer_layers

from .table import FAMILIES, ROWS, build, family_name, images, perturb_, randomize_masks, size_of

SELECTIONS = {
    "attn": dict(dims={"attn": 0.45}),
    "mlp": dict(dims={"mlp": 0.4}),
    "tokens": dict(dims={"tokens": 0.5}),
    "joint": dict(macs=0.5, mode="joint"),
    "share": dict(macs=0.6),
    "params": dict(params=0.5),
    "equal_heads": dict(macs=0.5, mode="joint", equal_heads=True),
}
TRANSFORMS = {
    "none": dict(attn_transform=False, mlp_transform=False),
    "attn": dict(attn_transform=True, mlp_transform=False),
    "mlp": dict(attn_transform=False, mlp_transform=True),
    "both": dict(attn_transform=True, mlp_transform=True, kernel_size=3),
}


def has_token_masks(name: str) -> bool:
    return family_name(name) == "vit"


def outside_blocks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not (k.startswith("blocks") or ".blocks" in k)}


# Every selection kind on every row; the MLP-only one leaves the attention unsliced, so EVA-02's and Swin V2's
# zero k-bias buffer must come back without a source to copy it from (slim/extraction.py ZERO_BUFFERS).
EXTRACT_CASES = [(n, k) for n in ROWS for k in SELECTIONS if k != "tokens" or has_token_masks(n)]
_MASKED: dict[str, torch.nn.Module] = {}


def searched(name: str) -> torch.nn.Module:
    """Row `name` with masks (token masks too where the family has them) at seeded random values; built once."""
    if name not in _MASKED:
        _MASKED[name] = randomize_masks(vc.attach_masks(build(name), vc.SlimConfig(tokens=has_token_masks(name))))
    return copy.deepcopy(_MASKED[name]).eval()


def budget(kind: str, name: str) -> dict:
    """SELECTIONS[kind]; the tiny family rows are mostly embeddings and head, so half their params is out of reach."""
    return dict(params=0.75) if kind == "params" and name in FAMILIES else SELECTIONS[kind]


@pytest.mark.parametrize(("name", "tokens"), [(n, t) for n in ROWS for t in (False, True)
                                               if has_token_masks(n) or not t])  # others refuse token masks
def test_all_ones_masks_reproduce_the_model(name, tokens):
    model = build(name)
    masked = vc.attach_masks(model, vc.SlimConfig(tokens=tokens)).eval()
    x = images(model)
    with torch.no_grad():
        assert_close(masked(x), model(x))


@pytest.mark.parametrize(("name", "kind"), EXTRACT_CASES)
def test_extract_reproduces_binarize_and_its_analytic_cost(name, kind):
    model, masked = build(name), searched(name)
    sel = vc.select(masked, **budget(kind, name))
    small = vc.extract(masked, sel).eval()
    assert type(small) is type(model) and not any("mask" in k for k in small.state_dict())
    x = images(model)
    with torch.no_grad():
        expected = vc.binarize(masked, sel)(x)
        assert_close(small(x), expected)
        # (DINOv3's LayerScale starts near 0: its outputs move by ~1e-4)
        atol = 1e-3 if family_name(name) == "swin" else 1e-8
        assert not torch.allclose(expected, model(x), atol=atol), "the selection should change the model"
    assert (sel.info["macs"], sel.info["params"]) == (vc.count_macs(small, size_of(small)), vc.count_params(small))
    assert sel.info["macs"] < vc.count_macs(model, size_of(model))
    if family_name(name) in ("eva", "swin_v2"):  # heads stay whole: every kept head keeps all its dims
        blocks = transformer_layers(model)
        assert all(len(dims) in (0, head_dim(blocks[i].attn)) for i, layer in enumerate(sel.attn or [])
                   for dims in layer)
    # Embedding widths are never pruned: embeddings, patch merging, final norm, pooling and head come through.
    for key, value in outside_blocks(model).items():
        assert torch.equal(small.state_dict()[key], value), key
    stages = len(family_of(model).stage_depths(model))
    if stages > 1:  # how the kept dims spread over the stages
        assert set(sel.info["stage_shares"]) == {"attn", "mlp"} and len(sel.info["stage_shares"]["attn"]) == stages


@pytest.mark.parametrize("name", [*FAMILIES, "reg_tokens", "swin_w4_40_pad"])
def test_extract_leaves_the_masked_model_alone_and_trains(name):
    masked = searched(name)
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    sel = vc.select(masked, macs=0.5)
    small = vc.extract(masked, sel).train()
    with torch.no_grad():
        for p in small.parameters():
            p.add_(1.0)
    for k, v in masked.state_dict().items():
        assert torch.equal(v, before[k]), k
    small(images(small)).sum().backward()
    # A layer left without any attention head (random masks do that) skips its attention: its attention norm and
    # what is left of the attention (Swin V2's position-bias MLP input layer) get no gradient.
    idle = {id(p) for blk, heads in zip(transformer_layers(small), sel.attn, strict=True) if not any(heads)
            for p in (*blk.norm1.parameters(), *blk.attn.parameters())}
    assert all(p.grad is not None for p in small.parameters() if p.numel() and id(p) not in idle)


MULTIPLEXED = [*((n, t) for n in FAMILIES for t in ("none", "both")),
               *((n, t) for n in ("vit", "qk_norm", "deit_distilled", "swiglu", "glu_packed", "res_post")
                 for t in TRANSFORMS),
               *(("swin_w4_64", t) for t in ("none", "attn", "both"))]


@pytest.mark.parametrize(("name", "transforms"), MULTIPLEXED)
def test_masks_are_exact_at_init_and_extract_matches_binarize_on_a_multiplexed_model(name, transforms):
    model = build(name, **({"depth": 4} if family_name(name) == "vit" and name not in FAMILIES else {}))
    mx = perturb_(vc.multiplex(model, vc.MultiplexConfig(share=2, **TRANSFORMS[transforms]))).eval()
    # Token masks wherever the family has them, unless a depth-wise conv needs every token's neighbours.
    tokens = has_token_masks(name) and not TRANSFORMS[transforms]["mlp_transform"]
    masked = vc.attach_masks(mx, vc.SlimConfig(tokens=tokens)).eval()
    x = images(mx)
    with torch.no_grad():
        assert_close(masked(x), mx(x))
    randomize_masks(masked)
    params = 0.75 if name in FAMILIES else 0.4  # the tiny family rows are mostly embeddings and head
    for budget in (dict(macs=0.5), dict(dims={"attn": 0.3}), dict(params=params, mode="joint"),
                   dict(macs=0.5, equal_heads=True)):
        sel = vc.select(masked, **budget)
        small = vc.extract(masked, sel).eval()
        with torch.no_grad():
            assert_close(small(x), vc.binarize(masked, sel)(x), msg=str(budget))
        assert (sel.info["macs"], sel.info["params"]) == (vc.count_macs(small, size_of(small)),
                                                          vc.count_params(small)), budget
    assert [s["kind"] for s in small.vitcompress_spec["steps"]] == ["multiplex", "slim"]


@pytest.mark.parametrize("name", [*FAMILIES, "deit_distilled", "swin_w4_64"])
def test_save_load_masked_and_extracted(name, tmp_path):
    masked = searched(name)
    vc.save(masked, tmp_path / "masked")
    again = vc.load(tmp_path / "masked")
    sel = vc.select(again, macs=0.5)
    small = vc.extract(again, sel).eval()
    vc.save(small, tmp_path / "small")
    loaded = vc.load(tmp_path / "small")
    assert [s["kind"] for s in loaded.vitcompress_spec["steps"]] == ["slim"]
    assert vc.count_params(loaded) == sel.info["params"]
    x = images(masked)
    with torch.no_grad():
        assert_close(again(x), masked(x), rtol=0, atol=0)
        assert_close(loaded(x), small(x), rtol=0, atol=0)
        assert_close(small(x), vc.binarize(masked, sel)(x))
    with pytest.raises(vc.VitCompressError, match="already slimmed"):
        vc.extract(loaded, vc.Selection())


@pytest.mark.parametrize("name", [*FAMILIES, "reg_tokens", "swin_w4_40_pad"])
def test_save_load_masked_and_extracted_multiplexed(name, tmp_path):
    tokens = has_token_masks(name) and name not in FAMILIES  # token masks beside head mixing; else both transforms
    transforms = TRANSFORMS["attn" if tokens else "both"]
    mx = perturb_(vc.multiplex(build(name), vc.MultiplexConfig(share=2, **transforms))).eval()
    masked = randomize_masks(vc.attach_masks(mx, vc.SlimConfig(tokens=tokens))).eval()
    vc.save(masked, tmp_path / "masked")
    again = vc.load(tmp_path / "masked")
    sel = vc.select(again, macs=0.5)
    small = vc.extract(again, sel).eval()
    assert vc.count_params(small) < vc.count_params(mx)
    vc.save(small, tmp_path / "small")
    loaded = vc.load(tmp_path / "small")
    assert [s["kind"] for s in loaded.vitcompress_spec["steps"]] == ["multiplex", "slim"]
    x = images(mx)
    with torch.no_grad():
        assert_close(again(x), masked(x), rtol=0, atol=0)
        assert_close(loaded(x), small(x), rtol=0, atol=0)
        assert_close(small(x), vc.binarize(masked, sel)(x))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_what_slimming_refuses_is_one_line(name):
    model = build(name)
    if not has_token_masks(name):
        with pytest.raises(vc.VitCompressError, match="token masks") as info:
            vc.attach_masks(model, vc.SlimConfig(tokens=True))
        assert "\n" not in str(info.value)
    masked = vc.attach_masks(model, vc.SlimConfig(mlp=False))
    assert not any("hidden_mask" in k for k in masked.state_dict())
    with pytest.raises(vc.VitCompressError, match="already masked"):
        vc.attach_masks(masked)
    with pytest.raises(vc.VitCompressError, match="SlimConfig"):
        vc.attach_masks(model, vc.MultiplexConfig())
    depth = len(transformer_layers(model))
    with pytest.raises(vc.VitCompressError, match="no mlp masks"):
        vc.binarize(masked, vc.Selection(mlp=[[0]] * depth))
    with pytest.raises(vc.VitCompressError, match="select needs a masked model"):
        vc.select(model, macs=0.5)
    blocks = transformer_layers(model)
    heads = [blk.attn.num_heads for blk in blocks]
    whole = [list(range(head_dim(blk.attn))) for blk in blocks]  # whole heads: some families keep no less
    attn = [[whole[i]] * h for i, h in enumerate(heads[:-1])] + [[whole[-1]] * (heads[-1] - 1)]  # one head short
    with pytest.raises(vc.VitCompressError, match=f"lists {heads[-1] - 1} heads; the model has {heads[-1]}"):
        vc.extract(model, vc.Selection(attn=attn))
