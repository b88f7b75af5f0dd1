"""`vitcompress export`: write a model in a deployment format, checked against torch before it is kept."""

from __future__ import annotations

from vitcompress.errors import VitCompressError
from vitcompress.export.onnx import OnnxExport, export_onnx
from vitcompress.jobs.source import ModelSource, source_of

FORMATS = ("onnx",)


def export_job(
    model: ModelSource | str,
    out: str,
    format: str = "onnx",
    input_size: list[int] | None = None,
    batch_size: int | None = None,
    check_batch_size: int = 3,
    opset: int | None = None,
    dtype: str = "float32",
    dynamo: bool = False,
    atol: float | None = None,
) -> OnnxExport:
    """Export a model to ONNX with a dynamic batch axis; keep the file only if onnxruntime matches torch.

    Args:
        model: The model to export.
        out: The file to write, e.g. out/slim60.onnx.
        format: Deployment format; onnx is the one there is.
        input_size: C H W of one image; default: the model's (H and W stay fixed in the graph).
        batch_size: Batch size traced (the batch axis is dynamic either way); default 1, or 2 with --dynamo.
        check_batch_size: Batch size of the seeded onnxruntime-vs-torch check; must differ from the traced one.
        opset: ONNX opset; default 17 (TorchScript exporter, 14-20) or 18 (--dynamo, 18-23).
        dtype: float32 or float16 (onnxruntime's CPU provider runs float16 where it has the kernels).
        dynamo: Use torch's dynamo exporter instead of the TorchScript one.
        atol: Largest accepted max |onnxruntime - torch|; default 1e-4 (float32), 1e-2 (float16).

    Returns:
        The `OnnxExport` written (its str is the line the CLI prints).
    """
    if format not in FORMATS:  # checked before the model is built: nothing to load for a typo
        raise VitCompressError(f"unknown export format {format!r}; the formats are: {', '.join(FORMATS)}")
    net, _ = source_of(model).resolve()
    return export_onnx(net, out, input_size=tuple(input_size) if input_size else None, batch_size=batch_size,
                       check_batch_size=check_batch_size, opset=opset, dtype=dtype, dynamo=dynamo, atol=atol)
