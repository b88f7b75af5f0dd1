"""The architecture spec: a JSON-able description that rebuilds any (compressed) model without training code.

A spec is `{"base": <family description>, "steps": [<surgery>, ...]}`. The base is read off a plain timm model;
each surgery (multiplex, slim extraction, ...) appends one step that says how to redo its structural change on a
freshly built base. Weights are loaded afterwards, so a step only needs to rebuild shapes.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError

SPEC_ATTR = "vitcompress_spec"

# family -> (describe, build); resolved lazily so importing vitcompress stays cheap.
_FAMILIES = {
    "vit": ("vitcompress.models.vit", "is_vit", "describe_vit", "build_vit"),
    "swin": ("vitcompress.models.swin", "is_swin", "describe_swin", "build_swin"),
}
# step kind -> function(model, step) -> model that redoes the structural change.
_STEPS = {
    "multiplex": "vitcompress.multiplexing.build:rebuild_multiplexed",
    "slim_masks": "vitcompress.slim.attach:rebuild_masked",
    "slim": "vitcompress.slim.extraction:rebuild_slim",
}


def register_family(name: str, module: str, is_fn: str, describe_fn: str, build_fn: str) -> None:
    _FAMILIES[name] = (module, is_fn, describe_fn, build_fn)


def register_step(kind: str, target: str) -> None:
    _STEPS[kind] = target


def _family_fns(name: str):
    module, is_fn, describe_fn, build_fn = _FAMILIES[name]
    mod = importlib.import_module(module)
    return getattr(mod, is_fn), getattr(mod, describe_fn), getattr(mod, build_fn)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module behind DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def family_of(model: nn.Module) -> str:
    for name in _FAMILIES:
        is_fn, _, _ = _family_fns(name)
        if is_fn(model):
            return name
    raise VitCompressError(
        f"{type(model).__name__} is not a supported model; vitcompress works on timm VisionTransformer "
        "(ViT/DeiT/DeiT-III) and SwinTransformer models"
    )


def describe_base(model: nn.Module) -> dict[str, Any]:
    _, describe, _ = _family_fns(family_of(model))
    return describe(model)


def get_spec(model: nn.Module) -> dict[str, Any]:
    """The model's spec: recorded by earlier surgeries, or read off a plain timm model."""
    model = unwrap(model)
    spec = getattr(model, SPEC_ATTR, None)
    if spec is not None:
        return copy.deepcopy(spec)
    return {"base": describe_base(model), "steps": []}


def with_step(source: nn.Module, result: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Record on `result` that it is `source` plus one more structural `step`."""
    spec = get_spec(source)
    spec["steps"].append(step)
    setattr(unwrap(result), SPEC_ATTR, spec)
    return result


def build_from_spec(spec: dict[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """A randomly initialised model with exactly the architecture `spec` describes."""
    base = spec.get("base") or {}
    family = base.get("family")
    if family not in _FAMILIES:
        raise VitCompressError(f"unknown model family {family!r} in spec; known: {sorted(_FAMILIES)}")
    _, _, build = _family_fns(family)
    model = build(base)
    for i, step in enumerate(spec.get("steps", [])):
        target = _STEPS.get(step.get("kind"))
        if target is None:
            raise VitCompressError(
                f"spec step {i} has unknown kind {step.get('kind')!r}; known: {sorted(_STEPS)} "
                "(was it written by a newer vitcompress?)"
            )
        module, fn = target.split(":")
        model = getattr(importlib.import_module(module), fn)(model, step)
    setattr(model, SPEC_ATTR, copy.deepcopy(spec))
    return model.to(device) if device is not None else model
