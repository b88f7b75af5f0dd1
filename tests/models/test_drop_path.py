"""`set_drop_path` gives any model timm's stochastic-depth rates, and saving and loading keeps them."""

from __future__ import annotations

import timm
import torch
from timm.layers import DropPath

import vitcompress as vc
from vitcompress.models.drop_path import drop_path_rates, set_drop_path

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)
SWIN = dict(img_size=32, window_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], num_classes=10)


def _same_modules(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for la, lb in zip(vc.models.layers.transformer_layers(a), vc.models.layers.transformer_layers(b), strict=True):
        for branch in ("drop_path1", "drop_path2"):
            ma, mb = getattr(la, branch), getattr(lb, branch)
            assert type(ma) is type(mb) and getattr(ma, "drop_prob", 0) == getattr(mb, "drop_prob", 0)


def test_a_plain_model_gets_what_create_model_builds():
    for arch, kwargs in (("vit_tiny_patch16_224", TINY), ("swin_tiny_patch4_window7_224", SWIN)):
        model = set_drop_path(timm.create_model(arch, **kwargs), 0.1)
        _same_modules(model, timm.create_model(arch, **kwargs, drop_path_rate=0.1))
        assert isinstance(vc.models.layers.transformer_layers(model)[-1].drop_path2, DropPath)


def test_rate_zero_restores_identities_and_out_of_range_is_refused():
    model = set_drop_path(set_drop_path(timm.create_model("vit_tiny_patch16_224", **TINY), 0.2), 0.0)
    assert drop_path_rates(model) == [0.0] * 4
    try:
        set_drop_path(model, 1.0)
    except vc.VitCompressError as e:
        assert "[0, 1)" in str(e)
    else:
        raise AssertionError("rate 1.0 accepted")


def test_multiplexed_masked_and_extracted_models_save_and_load_with_their_rate(tmp_path):
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    x = torch.randn(2, 3, 16, 16)
    student = set_drop_path(vc.multiplex(teacher, vc.MultiplexConfig(share=2)), 0.1)
    masked = set_drop_path(vc.attach_masks(teacher, vc.SlimConfig()), 0.1)
    small = set_drop_path(vc.extract(vc.attach_masks(teacher, vc.SlimConfig()), vc.select(
        vc.attach_masks(teacher, vc.SlimConfig()), dims={"attn": 0.5, "mlp": 0.5})), 0.1)
    for name, model in (("student", student), ("masked", masked), ("small", small)):
        assert drop_path_rates(model)[-1] > 0.099, name
        vc.save(model, tmp_path / name)
        loaded = vc.load(tmp_path / name)
        _same_modules(model, loaded)
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert drop_path_rates(teacher) == [0.0] * 4  # the source is untouched
