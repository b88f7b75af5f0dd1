"""Masks on Swin: one mask per block or shared group, no token masks (exact at init: tests/families)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.models.attention import AttentionCore
from vitcompress.models.layers import transformer_layers
from vitcompress.slim.sparsity import element_weights, sparsity_loss

from .conftest import build_swin, randomize_masks, swin_images


def test_each_block_gets_a_dim_mask_per_head_and_a_hidden_mask(swin_config):
    # That all-ones masks reproduce the model, shifted windows included, is checked on every family: tests/families.
    model = build_swin(swin_config)
    masked = vc.attach_masks(model)
    extra = set(masked.state_dict()) - set(model.state_dict())
    prefixes = [f"layers.{s}.blocks.{b}" for s, st in enumerate(model.layers) for b in range(len(st.blocks))]
    assert extra == {f"{p}.{m}" for p in prefixes for m in ("attn.dim_mask", "mlp.hidden_mask")}
    for blk, orig in zip(transformer_layers(masked), transformer_layers(model), strict=True):
        assert isinstance(blk.attn, AttentionCore) and blk.attn.dim_mask is not None
        heads = orig.attn.num_heads
        assert blk.attn.dim_mask.shape == (heads, orig.attn.qkv.out_features // (3 * heads))
        assert blk.mlp.hidden_mask.shape == (orig.mlp.fc1.out_features,)


def test_masks_change_the_function_and_train():
    model = build_swin("w4_64")
    masked = randomize_masks(vc.attach_masks(model)).train()
    images = swin_images(model)
    with torch.no_grad():
        assert not torch.allclose(masked.eval()(images), model(images), atol=1e-3)
    masked.train()
    masked(images).logsumexp(-1).sum().backward()
    names = [n for n, _ in masked.named_parameters() if "mask" in n]
    assert len(names) == 8 and all(masked.get_parameter(n).grad is not None for n in names)
    assert model.layers[0].blocks[0].attn.qkv.weight.grad is None  # the source model is left alone


def test_sparsity_loss_and_macs_weighting():
    masked = randomize_masks(vc.attach_masks(build_swin("w4_64")))
    cfg = vc.SparsityConfig(l1_attn=2e-4, l1_mlp=5e-5)
    loss, parts = sparsity_loss(masked, element_weights(masked, cfg))
    blocks = transformer_layers(masked)
    attn = sum(b.attn.dim_mask.abs().sum() for b in blocks)
    mlp = sum(b.mlp.hidden_mask.abs().sum() for b in blocks)
    assert_close(loss, 2e-4 * attn + 5e-5 * mlp)
    assert set(parts) == {"mask_attn", "mask_mlp"}
    weighted = element_weights(masked, vc.SparsityConfig(macs_weighted=True))
    # Stage 1 (16x16 map) costs more per attention dim than stage 2 (8x8): it is pushed harder.
    assert weighted["attn"][0] > weighted["attn"][2]
    sizes = [b.attn.dim_mask.numel() for b in blocks]
    mean = sum(w * n for w, n in zip(weighted["attn"], sizes, strict=True)) / sum(sizes)
    assert mean == pytest.approx(cfg.l1_attn)


def test_token_masks_are_refused_clearly():
    model = build_swin("w4_64")
    with pytest.raises(vc.VitCompressError, match="paper searched Swin without token masks; use attn/mlp masks"):
        vc.attach_masks(model, vc.SlimConfig(tokens=True))
    masked = vc.attach_masks(model, vc.SlimConfig())
    with pytest.raises(vc.VitCompressError, match="no tokens masks"):
        vc.select(masked, dims={"tokens": 0.5})
    with pytest.raises(vc.VitCompressError, match="without token masks"):
        vc.extract(masked, vc.Selection(tokens=[[0]] * 4))
