"""Multiply-accumulate counts (MACs) per image, including the attention matmuls.

Built on `torch.utils.flop_counter.FlopCounterMode`, which counts FLOPs (2 per MAC) from the aten
ops that actually run, so manual attention, einsums (lowered to `bmm`) and fused SDPA kernels are all
seen. Only matmuls and convolutions count; softmax, norms, activations and elementwise ops do not,
matching how MACs are reported for ViT/DeiT/Swin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, bmm_flop, sdpa_flop_count

from vitcompress.metrics._checks import check_positive_int, eval_mode, model_device_dtype, validate_input_size

# Fused attention kernels, all with (batch, heads, tokens, head_dim) q/k/v as their first three args.
# Recent torch knows most of them, older releases (and out-of-tree backends) miss some, e.g. the
# CPU flash kernel, which would silently drop q@k^T and attn@v. The math path needs no entry: it
# decomposes into `bmm` before the counter sees it.
_SDPA_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)


def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mv_flops(mat_shape, vec_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return 2 * mat_shape[0] * mat_shape[1]


def _addmv_flops(self_shape, mat_shape, vec_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return _mv_flops(mat_shape, vec_shape)


def _dot_flops(a_shape, b_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return 2 * a_shape[0]


def _addbmm_flops(self_shape, a_shape, b_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return bmm_flop(a_shape, b_shape)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    mapping: dict[Any, Callable[..., int]] = {
        getattr(aten, name): _sdpa_flops for name in _SDPA_OPS if hasattr(aten, name)
    }
    # Matrix-vector products that torch's table lacks; `matmul` on 1-D operands lowers to them.
    mapping.update({aten.mv: _mv_flops, aten.addmv: _addmv_flops, aten.dot: _dot_flops})
    mapping[aten.addbmm] = _addbmm_flops
    return mapping


@contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    # nn.MultiheadAttention / nn.TransformerEncoderLayer take a fused fast path in eval+no_grad
    # (`aten._native_multi_head_attention`) that FlopCounterMode counts as 0 MACs; the regular path
    # runs the same math as linear + SDPA ops it does count.
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    was_enabled = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was_enabled)


def _run_counter(model: nn.Module, input_size: Sequence[int], batch_size: int) -> FlopCounterMode:
    size = validate_input_size(model, input_size)
    check_positive_int("batch_size", batch_size)
    device, dtype = model_device_dtype(model)
    images = torch.randn(batch_size, *size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with eval_mode(model), _frozen(model), torch.no_grad(), _mha_fastpath_disabled(), counter:
        model(images)
    return counter


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad while counting, then each gets its flag back. FlopCounterMode's module tracker
    hooks the autograd graph of every module input that requires grad, and fails on a parameter passed straight
    to a submodule (the latent query of timm's attention pooling, `self.q(self.latent)`)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def count_module_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one call of `module` on `inputs` (their batch included), counted as `count_macs` counts them.

    For the fixed parts of a cost model that no width formula covers (e.g. an attention-pooling head); meta
    tensors work and allocate nothing.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with eval_mode(module), _frozen(module), torch.no_grad(), _mha_fastpath_disabled(), counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch_size: int = 1) -> int:
    """Multiply-accumulates for one image (FLOPs would be twice this).

    Runs one forward pass in eval mode without gradients on the model's own device and dtype (a
    model on the `meta` device works and allocates nothing), then restores each module's training
    flag.

    Args:
        model: The model to count.
        input_size: `(channels, height, width)` of one image.
        batch_size: Images in the counted forward pass; the result is divided by it.

    Returns:
        MACs per image.

    Raises:
        VitCompressError: If `input_size` or `batch_size` is invalid for the model.
    """
    counter = _run_counter(model, input_size, batch_size)
    return counter.get_total_flops() // (2 * batch_size)


def count_macs_by_module(
    model: nn.Module, input_size: Sequence[int] = (3, 224, 224), batch_size: int = 1
) -> dict[str, int]:
    """MACs per image for the model and each submodule that ran any counted op.

    Keys are `named_modules()`-style names, `""` being the whole model. A submodule shared between
    layers is listed once, under one of its names, with the MACs of all its calls.

    Args:
        model: The model to count.
        input_size: `(channels, height, width)` of one image.
        batch_size: Images in the counted forward pass; the results are divided by it.

    Returns:
        Mapping from module name to MACs per image.
    """
    counter = _run_counter(model, input_size, batch_size)
    root = type(model).__name__
    out: dict[str, int] = {}
    for name, per_op in counter.get_flop_counts().items():
        if name == "Global":
            continue
        # FlopCounterMode names modules "<RootClass>.<path>"; strip the root to match named_modules().
        key = "" if name == root else name.removeprefix(root + ".")
        out[key] = sum(per_op.values()) // (2 * batch_size)
    out.setdefault("", counter.get_total_flops() // (2 * batch_size))
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return dict(sorted(out.items(), key=lambda item: order.get(item[0], len(order))))
