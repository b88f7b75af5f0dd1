"""attach_masks: a new module, exact at init, with stable keys, mask-named parameters and clear refusals."""

from __future__ import annotations

import pytest
import timm
import torch

import vitcompress as vc
from vitcompress.slim.masked import MaskedBlocks
from vitcompress.train import TrainConfig, make_param_groups
from vitcompress.train.optim import build_optimizer

TOKENS_OK = {"vit", "deit_distilled", "deit3_layerscale", "reg4_gap_fc_norm", "reg_tokens", "avg_pool_no_cls",
             "qk_norm"}


def test_masked_model_keeps_timm_forward_and_keys(make_vit):
    model = make_vit("deit_distilled")
    masked = vc.attach_masks(model, vc.SlimConfig(tokens=True))
    assert type(masked) is type(model)  # no class swap: timm's own top-level forward runs
    assert isinstance(masked.blocks, MaskedBlocks)
    masks = {k for k in masked.state_dict() if "mask" in k}
    assert set(masked.state_dict()) - masks == set(model.state_dict())
    depth = len(model.blocks)
    assert masks == {f"blocks.{i}.{name}" for i in range(depth)
                     for name in ("attn.dim_mask", "mlp.hidden_mask", "token_mask")}
    assert masked.blocks[0].attn.dim_mask.shape == (3, 16)  # (heads, head_dim)
    assert masked.blocks[0].mlp.hidden_mask.shape == (model.blocks[0].mlp.fc1.out_features,)
    assert masked.blocks[0].token_mask.shape == (model.patch_embed.num_patches,)


def test_qk_norm_masks_whole_heads(make_vit):
    masked = vc.attach_masks(make_vit("qk_norm"), vc.SlimConfig())
    assert masked.blocks[0].attn.dim_mask.shape == (4, 1)


def test_input_model_untouched(make_vit, images):
    model = make_vit("reg_tokens")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masked = vc.attach_masks(model, vc.SlimConfig(tokens=True))
    with torch.no_grad():
        for p in masked.parameters():
            p.add_(1.0)
    assert not hasattr(model, "vitcompress_spec")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert masked.vitcompress_spec["steps"][-1]["kind"] == "slim_masks"


def test_masks_get_their_own_group_without_weight_decay(make_vit):
    masked = vc.attach_masks(make_vit(), vc.SlimConfig(tokens=True))
    groups = make_param_groups(masked, weight_decay=0.05, mask_lr=1e-2)
    (mask_group,) = [g for g in groups if g["name"] == "mask"]
    names = {id(p): n for n, p in masked.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in mask_group["params"]} == {"dim_mask", "hidden_mask", "token_mask"}
    assert mask_group["weight_decay"] == 0.0 and mask_group["lr"] == 1e-2
    assert all(id(p) not in {id(q) for q in mask_group["params"]} for g in groups if g["name"] != "mask"
               for p in g["params"])
    # Default groups (no mask_lr): masks still get no weight decay.
    opt = build_optimizer(masked, TrainConfig(weight_decay=0.05))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not decayed & {id(p) for p in mask_group["params"]}


@pytest.mark.parametrize(
    ("build", "config", "message"),
    [
        (dict(global_pool="avg", class_token=False, fc_norm=False), dict(tokens=True), "fc_norm"),
        (dict(dynamic_img_size=True), dict(tokens=True), "fixed patch grid"),
        (dict(global_pool="max"), dict(tokens=True), "global_pool='max'"),
    ],
    ids=["avg-pool-norm-before-pool", "dynamic-size", "max-pool"],
)
def test_token_masks_refused_where_they_cannot_be_exact(make_vit, build, config, message):
    with pytest.raises(vc.VitCompressError, match=message):
        vc.attach_masks(make_vit("vit", **build), vc.SlimConfig(**config))


def test_a_config_masking_nothing_and_vit_options_tokens_cannot_follow_are_refused(make_vit):
    # Refusals every family shares (already masked, a MultiplexConfig, no mlp masks...): tests/families.
    with pytest.raises(vc.VitCompressError, match="masks nothing"):
        vc.SlimConfig(attn=False, mlp=False, tokens=False)
    mx = vc.multiplex(make_vit(), vc.MultiplexConfig(share=1, mlp_transform=True))
    with pytest.raises(vc.VitCompressError, match="depth-wise-conv"):
        vc.attach_masks(mx, vc.SlimConfig(tokens=True))
    scale_norm = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                   embed_dim=32, depth=2, num_heads=2, scale_attn_norm=True)
    with pytest.raises(vc.VitCompressError, match="non-standard"):
        vc.attach_masks(scale_norm)
