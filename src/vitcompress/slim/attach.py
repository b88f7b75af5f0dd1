"""`attach_masks`: a copy of a timm ViT/DeiT or Swin (plain or multiplexed) with ViT-Slim soft masks, exact at
init."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.spec import family_of, get_spec, register_step, unwrap, with_step
from vitcompress.slim.config import SlimConfig

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
    kinds = [step["kind"] for step in get_spec(model)["steps"]]
    if MASKS_STEP in kinds or SLIM_STEP in kinds:
        raise VitCompressError("this model is already masked or slimmed; attach masks to the original model")
    family.check_masks(model, config)
    # A masked model is for training (masks and weights together), even if `model` was frozen.
    masked = family.attach_masks(copy.deepcopy(model), config).train(model.training).requires_grad_(True)
    return with_step(model, masked, {"kind": MASKS_STEP, "config": config.to_dict()})


def rebuild_masked(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Redo a recorded mask step on a freshly built model (weights and mask values are loaded afterwards)."""
    config = SlimConfig.from_dict(step["config"])
    family = family_of(model)
    family.check_masks(model, config)
    return family.attach_masks(model, config)


def is_masked(model: nn.Module) -> bool:
    model = unwrap(model)
    return family_of(model).is_masked(model)


def mask_tensors(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """The mask parameters of a masked model: attn/mlp per owner (layer or group), token θ per layer."""
    model = unwrap(model)
    return family_of(model).mask_tensors(model)


register_step(MASKS_STEP, rebuild_masked)
