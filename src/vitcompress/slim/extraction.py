"""`binarize` and `extract`: the thresholded masked model, and the physically smaller model equal to it."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import vitcompress.multiplexing.build  # noqa: F401  (registers the multiplex step that extracted specs replay)
from vitcompress.errors import VitCompressError
from vitcompress.models.attention import QKV_LAYOUT
from vitcompress.models.layers import is_mask_param, transformer_layers
from vitcompress.models.spec import SPEC_ATTR, build_from_spec, family_of, get_spec, register_step, unwrap
from vitcompress.slim.attach import MASKS_STEP, SLIM_STEP, is_masked, mask_tensors
from vitcompress.slim.cost import structure_of
from vitcompress.slim.selection import Selection


def _check_selection(selection: Any) -> Selection:
    if not isinstance(selection, Selection):
        raise VitCompressError(f"selection is a {type(selection).__name__}; pass the Selection vc.select returns")
    return selection


def binarize(model: nn.Module, selection: Selection) -> nn.Module:
    """A copy of a masked model whose masks are exactly 1 where `selection` keeps and 0 where it drops.

    Token masks are set through θ: θ_init gives a value of exactly 1, -θ_init exactly 0. The copy computes the
    same function as `extract(model, selection)`, with the masks still in place (a reference for tests).
    """
    selection = _check_selection(selection)
    model = unwrap(model)
    if not is_masked(model):
        raise VitCompressError("binarize needs a masked model from vc.attach_masks")
    s = structure_of(model)
    selection.check(s)
    present = mask_tensors(model)
    for kind in ("attn", "mlp", "tokens"):
        if getattr(selection, kind) is not None and kind not in present:
            raise VitCompressError(f"the selection prunes {kind} but the model has no {kind} masks to set")
    out = copy.deepcopy(model)
    masks = mask_tensors(out)
    first = [s.layers_of(o)[0] for o in range(s.num_owners)]
    layers = transformer_layers(out)
    with torch.no_grad():
        for o, m in enumerate(masks.get("attn", [])):
            m.fill_(1.0 if selection.attn is None else 0.0)
            for h, dims in enumerate(selection.attn[first[o]] if selection.attn is not None else []):
                if dims:
                    m[h, [0] if s.per_head else dims] = 1.0
        for o, m in enumerate(masks.get("mlp", [])):
            m.fill_(1.0 if selection.mlp is None else 0.0)
            if selection.mlp is not None:
                m[selection.mlp[first[o]]] = 1.0
        for i, theta in enumerate(masks.get("tokens", [])):
            init = layers[i].token_init
            theta.fill_(init if selection.tokens is None else -init)
            if selection.tokens is not None:
                theta[selection.tokens[i]] = init
    return out


def extract(model: nn.Module, selection: Selection) -> nn.Module:
    """A physically smaller plain model that keeps what `selection` keeps (masks dropped, weights sliced).

    It computes exactly what `binarize(model, selection)` computes, runs timm's forward, and carries a spec
    (base + any multiplex step + a "slim" step) so `vc.save`/`vc.load` rebuild it without masks or search
    code. `model` may also be unmasked (plain or multiplexed), to slice it by a hand-made selection.
    """
    selection = _check_selection(selection)
    model = unwrap(model)
    spec = get_spec(model)
    if any(step["kind"] == SLIM_STEP for step in spec["steps"]):
        raise VitCompressError("this model is already slimmed; extract from the masked model instead")
    selection.check(structure_of(model))
    base_spec = {"base": spec["base"], "steps": [st for st in spec["steps"] if st["kind"] != MASKS_STEP]}
    state = {k: v.detach() for k, v in model.state_dict().items() if not is_mask_param(k)}
    with torch.device("meta"):  # shapes only; the real tensors are assigned next, nothing is initialised
        plain = build_from_spec(base_spec)
    plain.load_state_dict(state, strict=True, assign=True)  # keys match: masks only add keys
    device = next(iter(state.values())).device
    apply_selection(plain, selection)
    _unshare(plain, {v.data_ptr() for v in state.values()})
    _materialize_buffers(plain, model, device)
    step = {"kind": SLIM_STEP, "selection": selection.to_dict(), "qkv_layout": QKV_LAYOUT}
    setattr(plain, SPEC_ATTR, {"base": base_spec["base"], "steps": [*base_spec["steps"], step]})
    return plain.train(model.training)


ZERO_BUFFERS = ("k_bias",)
"""Constant zero buffers of timm attentions (EVA-02's and Swin V2's k bias beside their q/v biases): the attention
core of a masked model computes with zeros instead of keeping them, so an attention extraction leaves unsliced
gets them back as zeros."""


def _materialize_buffers(plain: nn.Module, source: nn.Module, device: torch.device) -> None:
    """Non-persistent buffers (rotary tables, window indices) were built on the meta device with the base: take
    the source model's, which sit at the same paths; index buffers the surgery made go to the weights' device."""
    source_buffers = dict(source.named_buffers())
    for module_name, module in plain.named_modules():
        for name, buf in module._buffers.items():
            if buf is None:
                continue
            if buf.is_meta and device.type != "meta":  # (a meta source, e.g. a structure check, stays meta)
                path = f"{module_name}.{name}" if module_name else name
                src = source_buffers.get(path)
                if src is None and name in ZERO_BUFFERS:
                    src = torch.zeros(buf.shape, dtype=buf.dtype, device=device)
                if src is None or src.shape != buf.shape:
                    raise VitCompressError(f"cannot rebuild buffer {path} of the extracted model; please report it")
                module._buffers[name] = src.detach().clone()
            elif buf.device != device:
                module._buffers[name] = buf.to(device)


def _unshare(model: nn.Module, source: set[int]) -> None:
    """Copy every tensor still aliasing the source model's (sliced ones are fresh already): copying only what
    slicing did not is what keeps a new budget's extraction well under a second on DeiT-S."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and p.data_ptr() in source:
                module._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        for name, b in module._buffers.items():
            if b is not None and b.data_ptr() in source:
                module._buffers[name] = b.clone()


def rebuild_slim(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Redo a recorded slim step on a freshly built model (weights are loaded afterwards)."""
    if step.get("qkv_layout") != QKV_LAYOUT and Selection.from_dict(step["selection"]).attn is not None:
        raise VitCompressError(
            "this slimmed model was saved by an older vitcompress whose qkv row layout differs; "
            "extract it again from its search (`vitcompress slim extract --search <dir>`)"
        )
    apply_selection(model, Selection.from_dict(step["selection"]))
    return model


def apply_selection(model: nn.Module, selection: Selection) -> None:
    """Slice an unmasked (plain or multiplexed) model in place to the widths and tokens `selection` keeps."""
    family_of(model).apply_selection(model, selection)


register_step(SLIM_STEP, rebuild_slim)
