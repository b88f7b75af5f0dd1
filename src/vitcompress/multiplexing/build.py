"""`multiplex`: turn a timm ViT/DeiT or Swin into its weight-multiplexed student (MiniViT, Mini-Swin)."""

from __future__ import annotations

from typing import Any

from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.spec import family_of, get_spec, register_step, unwrap, with_step
from vitcompress.multiplexing.config import MultiplexConfig


def multiplex(model: nn.Module, config: MultiplexConfig | None = None) -> nn.Module:
    """A new weight-multiplexed student made from `model`; `model` itself is left untouched.

    Shared weights start from the model's layers of each group (`config.init`), every layer keeps its own
    norms, and the transformations start as identities, so the student equals plain weight sharing (and with
    `share=1`, the model itself).
    """
    config = MultiplexConfig() if config is None else config
    if not isinstance(config, MultiplexConfig):
        raise VitCompressError(
            f"config is a {type(config).__name__}; pass a MultiplexConfig, e.g. MultiplexConfig(share=2)"
        )
    model = unwrap(model)
    if any(step["kind"] == "multiplex" for step in get_spec(model)["steps"]):
        raise VitCompressError("this model is already multiplexed; multiplex the original model instead")
    student, groups = family_of(model).multiplex(model, config)
    step: dict[str, Any] = {"kind": "multiplex", "config": config.to_dict(), "groups": groups}
    return with_step(model, student, step)


def rebuild_multiplexed(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Redo a recorded multiplex step on a freshly built base (weights are loaded afterwards)."""
    config = MultiplexConfig.from_dict(step["config"])
    config.groups = step["groups"]
    student, _ = family_of(model).multiplex(model, config)
    return student


register_step("multiplex", rebuild_multiplexed)
