"""`attach_masks`: a copy of a timm ViT/DeiT or Swin (plain or multiplexed) with ViT-Slim soft masks, exact at
init."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.spec import family_of, get_spec, unwrap, with_step
from vitcompress.models.swin import is_swin
from vitcompress.slim.config import SlimConfig
from vitcompress.slim.masked import MaskedBlock, MaskedBlocks, MaskedSharedWeights
from vitcompress.slim.swin_masked import attach_swin, check_swin_supported, is_masked_swin, swin_mask_tensors

MASKS_STEP = "slim_masks"
SLIM_STEP = "slim"


def attach_masks(model: nn.Module, config: SlimConfig | None = None) -> nn.Module:
    """A new model: `model` with trainable ViT-Slim masks, all 1 at init (the outputs are unchanged).

    `model` itself is left untouched. Blocks are replaced by masked ones (child replacement; timm's top-level
    forward is kept); mask parameters carry "mask" in their names, so `make_param_groups` gives them their own
    group without weight decay. Works on plain timm ViT/DeiT and Swin models and on `vc.multiplex` outputs, where
    the attention/MLP masks of a shared weight are shared by the layers of its group. On Swin, each block's
    attention and MLP are replaced instead (`vitcompress.slim.swin_masked`); Swin takes no token masks.

    Raises:
        VitCompressError: On an unsupported model, an already masked or slimmed model, or a mask type the model
            cannot support (e.g. token masks on Swin, with MAP pooling or with the depth-wise-conv MLP
            transformation).
    """
    config = SlimConfig() if config is None else config
    if not isinstance(config, SlimConfig):
        raise VitCompressError(f"config is a {type(config).__name__}; pass a SlimConfig, e.g. SlimConfig(tokens=True)")
    model = unwrap(model)
    family = family_of(model)
    if family not in ("vit", "swin"):
        raise VitCompressError(f"ViT-Slim masks support timm ViT/DeiT and Swin models, not {type(model).__name__}")
    kinds = [step["kind"] for step in get_spec(model)["steps"]]
    if MASKS_STEP in kinds or SLIM_STEP in kinds:
        raise VitCompressError("this model is already masked or slimmed; attach masks to the original model")
    check, attach = (check_swin_supported, attach_swin) if family == "swin" else (check_supported, _attach)
    check(model, config)
    # A masked model is for training (masks and weights together), even if `model` was frozen.
    masked = attach(copy.deepcopy(model), config).train(model.training).requires_grad_(True)
    return with_step(model, masked, {"kind": MASKS_STEP, "config": config.to_dict()})


def rebuild_masked(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Redo a recorded mask step on a freshly built model (weights and mask values are loaded afterwards)."""
    config = SlimConfig.from_dict(step["config"])
    if is_swin(model):
        check_swin_supported(model, config)
        return attach_swin(model, config)
    check_supported(model, config)
    return _attach(model, config)


def is_masked(model: nn.Module) -> bool:
    model = unwrap(model)
    if is_swin(model):
        return is_masked_swin(model)
    return isinstance(getattr(model, "blocks", None), MaskedBlocks)


def is_per_head(model: nn.Module) -> bool:
    """q/k-norm models keep attention heads whole (a LayerNorm over fewer dims would be another function)."""
    return not isinstance(unwrap(model).blocks[0].attn.q_norm, nn.Identity)


def mask_tensors(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The mask parameters of a masked model: attn/mlp per owner (layer or group), token θ per layer."""
    model = unwrap(model)
    if is_swin(model):
        return swin_mask_tensors(model)
    shared = getattr(model, "blocks_shared", None)
    owners_attn = [w.dim_mask for w in shared] if shared is not None else [b.attn.dim_mask for b in model.blocks]
    owners_mlp = [w.hidden_mask for w in shared] if shared is not None else [b.mlp.hidden_mask for b in model.blocks]
    out: dict[str, list[torch.Tensor]] = {}
    if owners_attn[0] is not None:
        out["attn"] = owners_attn
    if owners_mlp[0] is not None:
        out["mlp"] = owners_mlp
    if model.blocks[0].token_mask is not None:
        out["tokens"] = [b.token_mask for b in model.blocks]
    return out


def check_supported(model: nn.Module, config: SlimConfig) -> None:
    for i, blk in enumerate(model.blocks):
        kind = type(blk).__name__
        if kind not in ("Block", "MultiplexedBlock") or type(blk.attn).__name__ not in (
                "Attention", "MultiplexedAttention"):
            raise VitCompressError(
                f"block {i} is {kind}/{type(blk.attn).__name__}; ViT-Slim masks support timm's Block/Attention "
                "and vitcompress's multiplexed blocks"
            )
        if type(blk.mlp).__name__ not in ("Mlp", "MultiplexedMlp"):
            raise VitCompressError(f"block {i} has a {type(blk.mlp).__name__} MLP; ViT-Slim masks support timm's Mlp")
        if getattr(blk.attn, "gate", None) is not None:
            raise VitCompressError(f"block {i} uses gated attention, which ViT-Slim masks do not support")
        if config.attn and not isinstance(blk.attn.norm, nn.Identity):
            raise VitCompressError(
                f"block {i} normalises the attention output over all heads (scale_attn_norm); removing dims "
                "would change that norm, so attention masks are not supported here: use SlimConfig(attn=False)"
            )
        if config.mlp and not isinstance(blk.mlp.norm, nn.Identity):
            raise VitCompressError(
                f"block {i} normalises the MLP hidden layer (scale_mlp_norm); MLP masks are not supported here: "
                "use SlimConfig(mlp=False)"
            )
        if config.tokens and getattr(blk, "mlp_transform", None) is not None:
            raise VitCompressError(
                "token masks cannot be combined with the multiplexed depth-wise-conv MLP transformation, which "
                "needs the full patch grid; use SlimConfig(tokens=False) or multiplex with mlp_transform=False"
            )
    if getattr(model, "attn_pool", None) is not None:
        raise VitCompressError("ViT-Slim does not support attention-pooling (MAP) heads yet")
    if getattr(model, "grad_checkpointing", False):
        raise VitCompressError("turn off gradient checkpointing (model.set_grad_checkpointing(False)) before masking")
    if config.tokens:
        _check_token_pooling(model)


def _check_token_pooling(model: nn.Module) -> None:
    if model.dynamic_img_size:
        raise VitCompressError("token masks need a fixed patch grid; build the model with dynamic_img_size=False")
    if model.attn_pool is not None or model.global_pool not in ("token", "avg"):
        raise VitCompressError(
            f"token masks support class-token or average pooling, not global_pool={model.global_pool!r}; "
            "use SlimConfig(tokens=False)"
        )
    if model.global_pool == "avg" and not isinstance(model.norm, nn.Identity):
        raise VitCompressError(
            "token masks with average pooling need the final norm after pooling (fc_norm), so dropped tokens "
            "can be left out of the mean exactly; this model normalises before pooling: use SlimConfig(tokens=False)"
        )


def pool_from(model: nn.Module) -> int | None:
    """First token index the average pool reads (None for class-token pooling)."""
    if model.global_pool != "avg":
        return None
    return 0 if model.pool_include_prefix else model.num_prefix_tokens


def _attach(model: nn.Module, config: SlimConfig) -> nn.Module:
    per_head = is_per_head(model)
    shared = getattr(model, "blocks_shared", None)
    blk0 = model.blocks[0]
    if shared is not None:
        heads, head_dim = blk0.attn.num_heads, blk0.attn.head_dim
        for g, weights in enumerate(shared):
            mask_shape = (heads, 1 if per_head else head_dim) if config.attn else None
            shared[g] = MaskedSharedWeights(weights, mask_shape, weights.fc1.out_features if config.mlp else None)
    num_patches = model.patch_embed.num_patches if config.tokens else None
    layers = []
    for blk in model.blocks:
        layer = MaskedBlock(blk, config.attn, config.mlp, per_head, num_patches, config.token_init)
        if shared is not None:
            layer.bind(shared[blk.group])
            layer.group = blk.group
        layers.append(layer)
    model.blocks = MaskedBlocks(layers, model.num_prefix_tokens, config.tokens,
                                pool_from(model) if config.tokens else None)
    return model
