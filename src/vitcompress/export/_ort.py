"""onnxruntime plumbing shared by the ONNX export check and the latency harness: the optional imports, a CPU
session, and the image size a saved graph takes."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from vitcompress.errors import VitCompressError

INSTALL = 'pip install -e ".[export]" (or pip install "vitcompress[export]")'
"""The command that brings the `export` extra (onnx, onnxruntime, onnxscript)."""


def require(*modules: str) -> tuple[ModuleType, ...]:
    """Import the optional `modules` of the `export` extra, or say in one line how to install them.

    Raises:
        VitCompressError: If one of them is not installed.
    """
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as e:
            raise VitCompressError(f"ONNX export and the onnxruntime runtime need {name}, which is not installed; "
                                   f"run {INSTALL}") from e
    return tuple(loaded)


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of the graph at `path`, with `threads` intra-op threads (ORT's default if None).

    One inter-op thread: the graphs are sequential, and a second pool would only compete with the first.

    Raises:
        VitCompressError: If onnxruntime cannot load the graph (e.g. no CPU kernel for one of its ops in this
            dtype).
    """
    (ort,) = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: errors come back as exceptions, which we report in one line
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail / NotImplemented / InvalidGraph types
        raise VitCompressError(f"onnxruntime cannot load {path}: {first_line(e)}") from e


def input_size_of_session(session: Any) -> tuple[int, int, int]:
    """`(C, H, W)` of the graph's image input (the batch axis may be symbolic; the rest must be fixed).

    Raises:
        VitCompressError: If the graph does not take one fixed-size image batch.
    """
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise VitCompressError(f"the ONNX graph's input is {[(i.name, i.shape) for i in inputs]}; vitcompress "
                               "times graphs with one (batch, C, H, W) image input of fixed C, H, W")
    return tuple(shape[1:])  # type: ignore[return-value]


def numpy_dtype(session: Any) -> str:
    """The numpy dtype name of the session's input: float32 or float16."""
    return "float16" if session.get_inputs()[0].type == "tensor(float16)" else "float32"


def first_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, cut to `limit` characters (exporter errors run to pages)."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


COUNTS = ("vitcompress.params", "vitcompress.macs")
"""ONNX metadata keys under which `export_onnx` records the torch model's params and MACs per image."""


def record_counts(path: str | Path, params: int, macs: int) -> None:
    """Write the torch model's params and MACs into the ONNX file's metadata (a graph cannot tell its MACs)."""
    (onnx,) = require("onnx")
    graph = onnx.load(str(path))
    for key, value in zip(COUNTS, (params, macs), strict=True):
        graph.metadata_props.add(key=key, value=str(value))
    onnx.save(graph, str(path))


def recorded_counts(path: str | Path) -> tuple[int | None, int | None]:
    """The params and MACs `record_counts` wrote into an ONNX file, each None if absent.

    Raises:
        VitCompressError: If the file does not exist or is not ONNX.
    """
    (onnx,) = require("onnx")
    if not Path(path).is_file():
        raise VitCompressError(f"ONNX file {path} does not exist; check the path")
    try:
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as e:  # a corrupt or non-ONNX file raises protobuf's DecodeError among others
        raise VitCompressError(f"{path} is not a readable ONNX file ({first_line(e)})") from e
    return tuple(int(props[k]) if props.get(k, "").isdigit() else None for k in COUNTS)  # type: ignore[return-value]
