"""Compressed models keep timm's backbone API: forward_features, forward_head, reset_classifier,
forward_intermediates and prune_intermediate_layers, on every model kind (multiplexed, extracted with ragged or
equal heads or gathered tokens, multiplexed + slimmed) of ViT, Swin and Eva.

Token-gathered ViTs run fewer tokens after some layers: their intermediates are token lists (output_fmt='NLC'),
and a patch grid (NCHW) is refused in one line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.layers import transformer_layers

from .conftest import randomize_masks


class Case(NamedTuple):
    model: nn.Module
    images: torch.Tensor
    selection: vc.Selection | None = None


def _perturbed(model: nn.Module, seed: int = 2) -> nn.Module:
    """Seeded noise on every parameter, so identity-initialised transforms and zero biases are not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _images(model: nn.Module) -> torch.Tensor:
    return torch.randn(2, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(1))


def _vit() -> nn.Module:
    # 4 register tokens + a class token: the prefix handling of intermediates is not the trivial one.
    torch.manual_seed(0)
    return _perturbed(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=4,
                                        num_heads=4, reg_tokens=4, num_classes=10))


def _swin() -> nn.Module:
    torch.manual_seed(0)
    return _perturbed(timm.create_model("swin_tiny_patch4_window7_224", img_size=64, patch_size=4, window_size=4,
                                        embed_dim=32, depths=(2, 2), num_heads=(2, 4), num_classes=10))


def _eva() -> nn.Module:
    torch.manual_seed(0)
    return _perturbed(timm.create_model("eva02_tiny_patch14_224.mim_in22k", img_size=56, embed_dim=64, depth=4,
                                        num_heads=4, num_classes=10))


def _multiplexed(model: nn.Module, **options) -> nn.Module:
    return _perturbed(vc.multiplex(model, vc.MultiplexConfig(share=2, **options)))


def _slimmed(model: nn.Module, tokens: bool = False, **budget) -> Case:
    masked = randomize_masks(vc.attach_masks(model, vc.SlimConfig(tokens=tokens)))
    selection = vc.select(masked, macs=0.6, **budget)
    return Case(vc.extract(masked, selection).eval(), _images(model), selection)


KINDS: dict[str, Callable[[], Case]] = {
    "vit_multiplexed": lambda: Case(m := _multiplexed(_vit()), _images(m)),
    "vit_ragged": lambda: _slimmed(_vit()),
    "vit_equal_heads": lambda: _slimmed(_vit(), equal_heads=True),
    "vit_tokens": lambda: _slimmed(_vit(), tokens=True),
    "vit_multiplexed_slimmed": lambda: _slimmed(_multiplexed(_vit())),
    "vit_multiplexed_slimmed_tokens": lambda: _slimmed(_multiplexed(_vit(), mlp_transform=False), tokens=True),
    "swin_multiplexed": lambda: Case(m := _multiplexed(_swin()), _images(m)),
    "swin_slimmed": lambda: _slimmed(_swin()),
    "swin_multiplexed_slimmed": lambda: _slimmed(_multiplexed(_swin()), equal_heads=True),
    "eva_multiplexed": lambda: Case(m := _multiplexed(_eva()), _images(m)),
    "eva_slimmed": lambda: _slimmed(_eva()),
    "eva_multiplexed_slimmed": lambda: _slimmed(_multiplexed(_eva())),
}
GATHERED = ["vit_tokens", "vit_multiplexed_slimmed_tokens"]
DENSE = [kind for kind in KINDS if kind not in GATHERED]


_BUILT: dict[str, Case] = {}


@pytest.fixture(params=list(KINDS))
def case(request) -> Case:
    """A fresh copy of the kind's model (each kind is built once: building dominates these tests' time)."""
    if request.param not in _BUILT:
        _BUILT[request.param] = KINDS[request.param]()
    return copy.deepcopy(_BUILT[request.param])


def _is_swin(model: nn.Module) -> bool:
    return hasattr(model, "layers")


def test_forward_is_forward_head_of_forward_features(case):
    model, x, _ = case
    with torch.no_grad():
        features = model.forward_features(x)
        assert_close(model.forward_head(features), model(x), rtol=0, atol=0)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)


def test_reset_classifier_keeps_the_features_and_survives_save_and_load(case, tmp_path):
    model, x, _ = case
    with torch.no_grad():
        features = model.forward_features(x)
        model.reset_classifier(0)  # a backbone: the pooled features
        assert_close(model(x), model.forward_head(features, pre_logits=True), rtol=0, atol=0)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        assert_close(model.forward_features(x), features, rtol=0, atol=0)
        vc.save(model, tmp_path / "m")
        assert_close(vc.load(tmp_path / "m").eval()(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("case", DENSE, indirect=True)
def test_forward_intermediates_give_the_patch_grid_of_every_layer(case):
    model, x, _ = case
    with torch.no_grad():
        final, grids = model.forward_intermediates(x)
        assert_close(final, model.forward_features(x), rtol=0, atol=0)
        last = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]
    if _is_swin(model):  # one map per stage, NHWC features
        assert len(grids) == len(model.layers)
        assert_close(last, final.permute(0, 3, 1, 2), rtol=0, atol=0)
    else:  # one map per block, the patch tokens on the grid
        grid = model.patch_embed.grid_size
        assert len(grids) == len(transformer_layers(model))
        assert all(g.shape == (2, model.embed_dim, *grid) for g in grids)
        tokens = final[:, model.num_prefix_tokens:]
        assert_close(last, tokens.transpose(1, 2).reshape(2, -1, *grid), rtol=0, atol=0)
    with torch.no_grad():
        early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
    for a, b in zip(early, grids[:2], strict=True):
        assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("case", DENSE, indirect=True)
def test_prune_intermediate_layers_keeps_the_taps_and_saving_it_is_refused(case, tmp_path):
    model, x, _ = case
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([0]) == [0]
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        assert_close(pruned.forward_intermediates(x, indices=[0], intermediates_only=True), expected, rtol=0, atol=0)
    # The recorded spec rebuilds every layer: such a file would not load, so nothing is written.
    with pytest.raises(vc.VitCompressError, match="prune_intermediate_layers") as err:
        vc.save(pruned, tmp_path / "pruned")
    assert "\n" not in str(err.value) and not (tmp_path / "pruned").exists()


@pytest.mark.parametrize("case", GATHERED, indirect=True)
def test_token_gathered_models_give_their_kept_tokens(case):
    model, x, selection = case
    with torch.no_grad():
        final, tokens = model.forward_intermediates(x, output_fmt="NLC", norm=True)
        assert_close(final, model.forward_features(x), rtol=0, atol=0)
    assert [t.shape[1] for t in tokens] == [len(kept) for kept in selection.tokens]
    assert len(selection.tokens[-1]) < model.patch_embed.num_patches
    assert_close(tokens[-1], final[:, model.num_prefix_tokens:], rtol=0, atol=0)


@pytest.mark.parametrize("case", GATHERED, indirect=True)
@pytest.mark.parametrize("kwargs", [{}, dict(indices=[0], intermediates_only=True)], ids=["all", "first"])
def test_token_gathered_models_refuse_a_patch_grid_in_one_line(case, kwargs):
    model, x, _ = case
    with pytest.raises(vc.VitCompressError, match="output_fmt='NLC'") as err, torch.no_grad():
        model.forward_intermediates(x, **kwargs)
    assert "\n" not in str(err.value) and "without token" in str(err.value)


@pytest.mark.parametrize("case", ["vit_tokens"], indirect=True)
def test_the_grid_refusal_holds_under_activation_checkpointing(case):
    # timm then calls each block through torch.utils.checkpoint: more frames between its loop and the block.
    model, x, _ = case
    model.set_grad_checkpointing(True)
    model.train()
    with pytest.raises(vc.VitCompressError, match="output_fmt='NLC'"):
        model.forward_intermediates(x)
    assert model.forward_intermediates(x, output_fmt="NLC")[0].shape == model.forward_features(x).shape
