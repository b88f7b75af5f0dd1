"""The architecture spec: a JSON-able description that rebuilds any (compressed) model without training code.

A spec is `{"base": <family description>, "steps": [<surgery>, ...]}`. The base is read off a plain timm model;
each surgery (multiplex, slim extraction, ...) appends one step that says how to redo its structural change on a
freshly built base. Weights are loaded afterwards, so a step only needs to rebuild shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.models.family import family_named, family_of, unwrap
from vitcompress.models.layers import transformer_layers

__all__ = ["SPEC_ATTR", "build_from_spec", "describe_base", "family_of", "get_spec", "register_step", "unwrap",
           "with_step"]

SPEC_ATTR = "vitcompress_spec"

# step kind -> function(model, step) -> model that redoes the structural change; each surgery registers its own.
_STEPS: dict[str, Callable[[nn.Module, dict[str, Any]], nn.Module]] = {}


def register_step(kind: str, rebuild: Callable[[nn.Module, dict[str, Any]], nn.Module]) -> None:
    """Teach `build_from_spec` to redo steps of `kind` (called by the module that records such steps)."""
    _STEPS[kind] = rebuild


def describe_base(model: nn.Module) -> dict[str, Any]:
    model = unwrap(model)
    return family_of(model).describe(model)


def get_spec(model: nn.Module) -> dict[str, Any]:
    """The model's spec: recorded by earlier surgeries, or read off a plain timm model."""
    model = unwrap(model)
    spec = getattr(model, SPEC_ATTR, None)
    if spec is not None:
        return _with_live_head(copy.deepcopy(spec), model)
    return {"base": describe_base(model), "steps": []}


def _with_live_head(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The recorded spec with the head the model has now: timm's `reset_classifier(n, pool)` (a backbone given
    new classes) changes it after a surgery recorded the spec, and saving must rebuild the current head."""
    kwargs = spec.get("base", {}).get("kwargs", {})
    _refuse_truncated(kwargs, model)
    for key in ("num_classes", "global_pool"):  # what every family reads off the model (`patch_embed_kwargs`)
        if key in kwargs and hasattr(model, key):
            kwargs[key] = getattr(model, key)
    return spec


def _refuse_truncated(kwargs: dict[str, Any], model: nn.Module) -> None:
    """timm's `prune_intermediate_layers` drops the layers after a backbone's last tap; the recorded spec (and its
    surgery steps) still describes them all, so a saved file would not load and a further surgery would rebuild the
    wrong model: refuse in one line."""
    depth = kwargs.get("depth", kwargs.get("depths"))
    recorded = sum(depth) if isinstance(depth, list) else depth
    if not isinstance(recorded, int):
        return
    live = len(transformer_layers(model))
    if live != recorded:
        raise VitCompressError(
            f"this compressed model has {live} of its {recorded} transformer layers (timm's "
            "prune_intermediate_layers?), and vitcompress rebuilds it from a spec with all of them: save or "
            "compress it before pruning, and prune after vc.load"
        )


def with_step(source: nn.Module, result: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Record on `result` that it is `source` plus one more structural `step`."""
    spec = get_spec(source)
    spec["steps"].append(step)
    setattr(unwrap(result), SPEC_ATTR, spec)
    return result


def build_from_spec(spec: dict[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """A randomly initialised model with exactly the architecture `spec` describes."""
    base = spec.get("base") or {}
    model = family_named(base.get("family")).build(base)
    for i, step in enumerate(spec.get("steps", [])):
        rebuild = _STEPS.get(step.get("kind"))
        if rebuild is None:
            raise VitCompressError(
                f"spec step {i} has unknown kind {step.get('kind')!r}; known: {sorted(_STEPS)} "
                "(was it written by a newer vitcompress?)"
            )
        model = rebuild(model, step)
    setattr(model, SPEC_ATTR, copy.deepcopy(spec))
    return model.to(device) if device is not None else model
