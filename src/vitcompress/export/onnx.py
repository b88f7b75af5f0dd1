"""`export_onnx`: write any vitcompress or timm model as ONNX with a dynamic batch axis, and keep the file only if
onnxruntime reproduces torch on a check batch of another size.

The check is what makes the export trustworthy: the TorchScript exporter records shapes while tracing one batch,
and a shape it records as a constant (instead of reading it from the input) gives a graph that runs at the traced
batch and is wrong, or fails, at every other. So the file is written under a temporary name in the same directory,
run in onnxruntime at `check_batch_size`, compared with torch, and only then moved into place (`os.replace` is
atomic on one file system): a wrong or half-written file is never left at `path`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.export._ort import first_line, ort_session, record_counts, require
from vitcompress.export.io import atomic_write
from vitcompress.metrics._checks import (
    check_device,
    check_positive_int,
    eval_mode,
    fixed_input_size,
    validate_input_size,
)
from vitcompress.metrics.macs import count_macs
from vitcompress.metrics.params import count_params

DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_ATOL = {"float32": 1e-4, "float16": 1e-2}
"""Largest |onnxruntime - torch| accepted by default: float16 rounds at ~1e-3 relative, so its check is looser."""
TORCHSCRIPT_OPSETS = range(14, 21)
"""The TorchScript exporter's opsets that have scaled_dot_product_attention (14) up to its last (20)."""
DYNAMO_OPSETS = range(18, 24)
"""The dynamo exporter writes opset 18 and newer."""


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote and how well onnxruntime reproduced torch."""

    path: Path
    """The ONNX file (only ever written after the check passed)."""
    exporter: str
    """`torchscript` or `dynamo`."""
    opset: int
    """ONNX opset of the graph."""
    dtype: str
    """`float32` or `float16`: the graph's input, weights and output."""
    max_abs_err: float
    """max |onnxruntime - torch| over the check batch's outputs."""
    check_batch_size: int
    """Batch size of the check (not the traced one, so a batch size baked into the graph is caught)."""

    def __str__(self) -> str:
        return (f"wrote {self.path} ({self.exporter} exporter, opset {self.opset}, {self.dtype}) | "
                f"max |onnxruntime - torch| {self.max_abs_err:.2e} at batch {self.check_batch_size}")


class _Forward(nn.Module):
    """`model(x)` with one tensor argument.

    The TorchScript exporter fills unlisted keyword arguments with their defaults and passes them as traced
    inputs, so timm's Eva `forward(x, attn_mask=None, is_causal=False)` would get `is_causal` as a tensor.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    check_batch_size: int = 3,
    opset: int | None = None,
    dtype: str = "float32",
    dynamo: bool = False,
    atol: float | None = None,
) -> OnnxExport:
    """Export `model` to ONNX with a dynamic batch axis and check it in onnxruntime against torch.

    Height and width stay fixed (timm's Swin fails with dynamic H/W, timm#1844, and every vitcompress model has
    a fixed grid). The model is not changed: it is exported in eval mode, and a float16 export works on a copy.

    Args:
        model: Any timm ViT/Swin/Eva family model, plain, multiplexed or slimmed; on CPU.
        path: Where to write the `.onnx` file; its directory is created.
        input_size: `(C, H, W)` of one image; default: the model's own.
        batch_size: Batch size traced; default 1, or 2 for dynamo (torch.export turns a size-1 dimension into a
            constant).
        check_batch_size: Batch size of the seeded check in onnxruntime; must differ from `batch_size`.
        opset: ONNX opset; default 17 (TorchScript, which supports 14-20) or 18 (dynamo, 18-23).
        dtype: `float32`, or `float16` (runs on onnxruntime's CPU provider where it has float16 kernels).
        dynamo: Use torch's dynamo exporter (needs onnxscript) instead of the TorchScript exporter.
        atol: Largest accepted max |onnxruntime - torch|; default 1e-4 (float32) or 1e-2 (float16).

    Returns:
        The file written, the exporter and opset, and the measured max abs error.

    Raises:
        VitCompressError: Bad arguments, a missing `export` extra, an exporter that fails on this model, or an
            export that onnxruntime cannot run or that exceeds `atol`; nothing is left at `path` then.
    """
    exporter = "dynamo" if dynamo else "torchscript"
    batch_size = (2 if dynamo else 1) if batch_size is None else batch_size
    opset = (18 if dynamo else 17) if opset is None else opset
    atol = DEFAULT_ATOL.get(dtype, 1e-4) if atol is None else atol
    path = _check_args(model, path, batch_size, check_batch_size, opset, dtype, dynamo, atol)
    require("onnx", "onnxruntime", *(("onnxscript",) if dynamo else ()))
    size = validate_input_size(model, input_size if input_size is not None else _input_size(model))
    target = model if _dtype_of(model) == DTYPES[dtype] else copy.deepcopy(model).to(DTYPES[dtype])
    made = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # removed again on failure
    path.parent.mkdir(parents=True, exist_ok=True)
    errors = []

    def write_checked(tmp: Path) -> None:
        with eval_mode(target), torch.no_grad():
            example = torch.randn(batch_size, *size, dtype=DTYPES[dtype])
            _export(_Forward(target).eval(), example, str(tmp), opset, dynamo)
            record_counts(tmp, count_params(model), count_macs(model, size))  # so `profile` can read them back
            errors.append(_check(target, str(tmp), size, check_batch_size, dtype))
        if not errors[0] <= atol:  # also refuses NaN
            raise VitCompressError(
                f"onnxruntime differs from torch by {errors[0]:.3g} (> atol {atol:g}) at batch {check_batch_size}; "
                f"the {exporter} export of {type(model).__name__} is wrong, so no file was written")

    try:
        atomic_write(path, write_checked)  # the file appears at `path` only once the check passed
    except BaseException:
        for directory in made:  # deepest first; a directory someone else filled meanwhile stays
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return OnnxExport(path, exporter, opset, dtype, errors[0], check_batch_size)


def _check_args(model: nn.Module, path: str | os.PathLike, batch_size: int, check_batch_size: int, opset: int,
                dtype: str, dynamo: bool, atol: float) -> Path:
    if not isinstance(model, nn.Module):
        raise VitCompressError(f"export_onnx takes a torch nn.Module, got {type(model).__name__}")
    check_device(model, "cpu")
    path = Path(path)
    if path.suffix != ".onnx":
        raise VitCompressError(f"ONNX path {path} must end in .onnx; pass e.g. {path.with_suffix('.onnx')}")
    if path.is_dir():
        raise VitCompressError(f"{path} is a directory; pass a file path ending in .onnx")
    check_positive_int("batch_size", batch_size)
    check_positive_int("check_batch_size", check_batch_size)
    if check_batch_size == batch_size:
        raise VitCompressError(f"check_batch_size must differ from batch_size ({batch_size}): checking another "
                               "batch size is what catches a batch size baked into the graph")
    if dynamo and batch_size == 1:
        raise VitCompressError("the dynamo exporter turns a traced batch of 1 into a constant; pass batch_size >= 2")
    if dtype not in DTYPES:
        raise VitCompressError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    opsets = DYNAMO_OPSETS if dynamo else TORCHSCRIPT_OPSETS
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in opsets:
        name = "dynamo" if dynamo else "TorchScript"
        raise VitCompressError(f"opset {opset!r} is not one the {name} exporter writes ({opsets[0]}-{opsets[-1]})")
    if not (isinstance(atol, (int, float)) and atol > 0):
        raise VitCompressError(f"atol must be a positive number, got {atol!r}; pass e.g. atol=1e-4")
    return path


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    """The model's fixed size, else (dynamic_img_size models, e.g. DINOv3) the size it was built for."""
    size = fixed_input_size(model)
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if size is None and img_size is not None:
        channels = getattr(getattr(patch_embed, "proj", None), "in_channels", 3)
        size = (int(channels), *(int(v) for v in ((img_size, img_size) if isinstance(img_size, int) else img_size)))
    if size is None:
        raise VitCompressError("the model accepts any input size; pass input_size=(C, H, W) (H and W stay fixed in "
                               "the graph)")
    return size  # type: ignore[return-value]


def _dtype_of(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _export(module: nn.Module, example: torch.Tensor, path: str, opset: int, dynamo: bool) -> None:
    """Run the exporter, its warnings and progress output silenced: the onnxruntime check is the verdict."""
    kind = "dynamo" if dynamo else "TorchScript"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                torch.onnx.export(module, (example,), path, dynamo=True, opset_version=opset, verbose=False,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
            else:
                with _unflatten_keeps_batch(opset):
                    torch.onnx.export(module, (example,), path, dynamo=False, opset_version=opset,
                                      input_names=["input"], output_names=["output"],
                                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except VitCompressError:
        raise
    except Exception as e:  # exporters raise many types, each with pages of context
        fix = "export with dynamo=False (the TorchScript exporter, the default)" if dynamo else \
            "please report it with the model's spec"
        raise VitCompressError(f"the {kind} exporter cannot export {type(module.model).__name__} "
                               f"({first_line(e)}); {fix}") from e


@contextlib.contextmanager
def _unflatten_keeps_batch(opset: int) -> Iterator[None]:
    """Export `aten::unflatten` as a Reshape that keeps the leading dims symbolic.

    torch's own symbolic computes the new shape from Shape/Slice ops that its shape inference does not follow, so
    the tensor gets the traced (static) batch size, and a later `reshape(x.shape)` (timm's `rot` in rotary
    embeddings) bakes batch 1 into the graph. A constant shape `[-1, 0, ..., sizes..., trailing]` says the same
    thing and keeps the batch dynamic. Registered for this export only.
    """
    from torch.onnx import symbolic_helper as helper

    def unflatten(g, x, dim, sizes):
        rank, sizes_ = helper._get_tensor_rank(x), helper._maybe_get_const(sizes, "is")
        dim_ = helper._maybe_get_const(dim, "i")
        if rank is None or not isinstance(dim_, int) or not isinstance(sizes_, list):
            return _default_unflatten(g, x, dim, sizes)
        dim_ = dim_ % rank
        trailing = helper._get_tensor_sizes(x)[dim_ + 1:]
        if dim_ == 0 or -1 in sizes_ or None in trailing:
            return _default_unflatten(g, x, dim, sizes)
        shape = [-1] + [0] * (dim_ - 1) + list(sizes_) + list(trailing)
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))

    torch.onnx.register_custom_op_symbolic("aten::unflatten", unflatten, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unflatten", opset)


def _default_unflatten(g, x, dim, sizes):
    from torch.onnx import symbolic_opset13

    return symbolic_opset13.unflatten(g, x, dim, sizes)


def _check(model: nn.Module, path: str, size: tuple[int, int, int], batch: int, dtype: str) -> float:
    """max |onnxruntime - torch| on a seeded batch of `batch` images."""
    (onnx,) = require("onnx")
    try:
        onnx.checker.check_model(path)
    except Exception as e:
        raise VitCompressError(f"the exported graph is not valid ONNX ({first_line(e)}); no file was written") from e
    images = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0)).to(DTYPES[dtype])
    session = ort_session(path)
    try:
        (got, *_) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    except Exception as e:
        raise VitCompressError(f"onnxruntime cannot run the exported graph at batch {batch} ({first_line(e)}); "
                               "the graph depends on the traced batch size, so no file was written") from e
    expected = model(images)
    if not isinstance(expected, torch.Tensor) or tuple(got.shape) != tuple(expected.shape):
        shape = tuple(expected.shape) if isinstance(expected, torch.Tensor) else type(expected).__name__
        raise VitCompressError(f"onnxruntime returned shape {tuple(got.shape)}, torch {shape}; no file was written")
    return (torch.from_numpy(got).float() - expected.float()).abs().max().item()
