"""The family registry: every surgery asks the model's adapter, unknown models and families get one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import vitcompress as vc
from vitcompress.models import families, family_of
from vitcompress.models.layers import is_mask_param, transformer_layers
from vitcompress.models.spec import build_from_spec, describe_base

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
TINY_SWIN = dict(img_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4,
                 num_classes=5)


def test_builtin_families_are_registered_by_name():
    assert {f.name for f in families()} >= {"vit", "swin"}
    vit = timm.create_model("vit_tiny_patch16_224", **TINY_VIT)
    swin = timm.create_model("swin_tiny_patch4_window7_224", **TINY_SWIN)
    assert family_of(vit).name == "vit" and family_of(swin).name == "swin"
    assert transformer_layers(swin) == [b for s in swin.layers for b in s.blocks]
    assert family_of(vit).stage_depths(vit) == [2] and family_of(swin).stage_depths(swin) == [1, 1]


def test_a_model_of_no_family_is_one_line_naming_what_is_supported():
    cnn = timm.create_model("resnet18", num_classes=5)
    refusal = r"ResNet is not a supported model; vitcompress works on .*Swin.*VisionTransformer"
    for verb in (lambda m: vc.multiplex(m), lambda m: vc.attach_masks(m), describe_base):
        with pytest.raises(vc.VitCompressError, match=refusal) as e:
            verb(cnn)
        assert "\n" not in str(e.value)


def test_a_spec_of_an_unknown_family_is_refused():
    with pytest.raises(vc.VitCompressError, match="unknown model family 'convnext'; known: .*swin.*vit"):
        build_from_spec({"base": {"family": "convnext"}, "steps": []})


def test_loading_in_a_fresh_process_replays_every_registered_step(tmp_path):
    # Steps register when their module is imported; a fresh `import vitcompress; vc.load` must know all of them.
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **TINY_VIT).eval()
    masked = vc.attach_masks(vc.multiplex(model, vc.MultiplexConfig(share=2)))
    vc.save(masked, tmp_path / "masked")
    small = vc.extract(masked, vc.select(masked, macs=0.7)).eval()
    vc.save(small, tmp_path / "small")
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "masked": masked.eval()(x), "small": small(x)}, tmp_path / "ref.pt")
    code = (
        "import sys, torch, vitcompress as vc\n"
        "ref = torch.load(sys.argv[1] + '/ref.pt', weights_only=True)\n"
        "for name in ('masked', 'small'):\n"
        "    out = vc.load(sys.argv[1] + '/' + name).eval()(ref['x'])\n"
        "    torch.testing.assert_close(out, ref[name], rtol=0, atol=0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)


@pytest.mark.parametrize("name,is_mask", [
    ("blocks.0.attn.dim_mask", True), ("blocks_shared.1.hidden_mask", True), ("blocks.3.token_mask", True),
    ("dim_mask", True), ("mask_token", False), ("blocks.0.attn_mask", False), ("layers.0.blocks.1.attn_mask", False),
])
def test_one_rule_says_what_a_mask_parameter_is(name, is_mask):
    assert is_mask_param(name) is is_mask


def test_an_mlp_of_unknown_kind_is_refused_in_one_line():
    from timm.layers import GatedMlp

    model = timm.create_model("vit_tiny_patch16_224", **TINY_VIT)
    model.blocks[1].mlp = GatedMlp(32, 64)
    for verb in (lambda m: vc.multiplex(m), lambda m: vc.attach_masks(m)):
        with pytest.raises(vc.VitCompressError, match="block 1 has a GatedMlp MLP; .* supports timm Mlp, GluMlp"):
            verb(model)
