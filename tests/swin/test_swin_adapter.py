"""The Swin adapter: a plain timm Swin is described, rebuilt without its code, and refused when it is unusual."""

from __future__ import annotations

import json

import pytest
import torch
from timm.layers import RmsNorm
from torch.testing import assert_close

from vitcompress.errors import VitCompressError
from vitcompress.jobs.common import input_size_of
from vitcompress.models.layers import head_dim, num_prefix_tokens, transformer_layers, window_layout
from vitcompress.models.spec import build_from_spec, describe_base, family_of, get_spec
from vitcompress.models.swin import shifted_window_mask

from .conftest import swin_images


def rebuilt_copy(model: torch.nn.Module) -> torch.nn.Module:
    spec = json.loads(json.dumps(get_spec(model)))  # what save() writes and load() reads
    rebuilt = build_from_spec(spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def test_rebuild_from_description_reproduces_the_model(make_swin, swin_config):
    model = make_swin(swin_config)
    desc = describe_base(model)
    assert desc["family"] == "swin" and desc["architecture"] == "swin_tiny_patch4_window7_224"
    rebuilt = rebuilt_copy(model)
    layouts = [window_layout(b) for b in transformer_layers(model)]
    assert [window_layout(b) for b in transformer_layers(rebuilt)] == layouts
    images = swin_images(model)
    with torch.no_grad():
        assert_close(rebuilt(images), model(images))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(arch="swin_s3_tiny_224", window_size=((4, 4), (2, 2)), mlp_ratio=(4.0, 2.0), head_dim=8),
        dict(img_size=32, window_size=7),  # stage 1: 8x8 map padded to 14x14; stage 2: window shrunk to the 4x4 map
        dict(strict_img_size=False, qkv_bias=False, drop_path_rate=0.2, global_pool="max"),
    ],
    ids=["s3_per_stage_windows_mlp_heads", "window_larger_than_map", "dynamic_no_qkv_bias"],
)
def test_unusual_configurations_are_read_back(make_swin, overrides):
    model = make_swin("w4_64", **overrides)
    kwargs = describe_base(model)["kwargs"]
    if "head_dim" in overrides:
        assert kwargs["window_size"] == [[4, 4], [2, 2]] and kwargs["mlp_ratio"] == [4.0, 2.0]
        assert kwargs["head_dim"] == [8, 8] and head_dim(transformer_layers(model)[0].attn) == 8
    if overrides.get("window_size") == 7:
        assert kwargs["window_size"] == [[7, 7], [4, 4]]
        assert [window_layout(b)[2] for b in transformer_layers(model)] == [(0, 0), (3, 3)] + [(0, 0)] * 4
    rebuilt = rebuilt_copy(model)
    images = swin_images(model)
    with torch.no_grad():
        assert_close(rebuilt(images), model(images))


def test_family_helpers(make_swin):
    model = make_swin("w4_64")
    assert family_of(model).name == "swin" and num_prefix_tokens(model) == 0
    layers = transformer_layers(model)
    assert len(layers) == 6 and head_dim(layers[2].attn) == 12  # 48 channels, 4 heads
    assert window_layout(layers[1]) == ((16, 16), (4, 4), (2, 2))
    assert input_size_of(model) == (3, 64, 64)
    with pytest.raises(VitCompressError, match="any input size"):
        input_size_of(make_swin("w4_64", strict_img_size=False))


def test_shifted_window_mask_matches_timm(make_swin, swin_config):
    model = make_swin(swin_config)
    shifted = [b for b in transformer_layers(model) if any(b.shift_size)]
    assert shifted
    for blk in shifted:
        h, w = ((r + s - 1) // s * s for r, s in zip(blk.input_resolution, blk.window_size, strict=True))
        ours = shifted_window_mask(h, w, blk.window_size, blk.shift_size)
        assert torch.equal(ours, blk.attn_mask == 0)
        assert not ours.all(), "a shifted layer's mask blocks some pairs"


def test_unsupported_swin_variants_are_refused(make_swin):
    model = make_swin("w4_64")
    model.layers[1].blocks[0].norm1 = RmsNorm(48)
    with pytest.raises(VitCompressError, match="LayerNorm"):
        describe_base(model)
    model = make_swin("w4_64")
    model.pretrained_cfg = {}
    with pytest.raises(VitCompressError, match="registered architecture"):
        describe_base(model)
