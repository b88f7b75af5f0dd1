"""vitcompress: make pretrained timm vision transformers smaller and faster.

Public verbs (each returns a new module and leaves its input untouched):
    multiplex(model, MultiplexConfig)   MiniViT weight multiplexing
    attach_masks(model, SlimConfig)     ViT-Slim soft masks; then select(masked, macs=0.6) -> extract(masked, sel)
    profile(model, input_size)          params and MACs (attention matmuls counted)
    save(model, dir) / load(dir)        safetensors + JSON architecture spec
    export_onnx(model, path)            ONNX with a dynamic batch axis, checked in onnxruntime against torch

Attributes are imported on first use, so `import vitcompress` stays cheap (no timm, no torch import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "multiplex": "vitcompress.multiplexing.build",
    "MultiplexConfig": "vitcompress.multiplexing.config",
    "DistillConfig": "vitcompress.multiplexing.distill_config",
    "DistillationObjective": "vitcompress.multiplexing.objective",
    "profile": "vitcompress.metrics.profile",
    "Profile": "vitcompress.metrics.profile",
    "count_params": "vitcompress.metrics.params",
    "count_macs": "vitcompress.metrics.macs",
    "measure_latency": "vitcompress.metrics.latency",
    "evaluate": "vitcompress.metrics.accuracy",
    "save": "vitcompress.export.io",
    "load": "vitcompress.export.io",
    "export_onnx": "vitcompress.export.onnx",
    "OnnxExport": "vitcompress.export.onnx",
    "build_loaders": "vitcompress.data",
    "TrainConfig": "vitcompress.train.config",
    "fit": "vitcompress.train.loop",
    "VitCompressError": "vitcompress.errors",
    "attach_masks": "vitcompress.slim.attach",
    "SlimConfig": "vitcompress.slim.config",
    "SparsityConfig": "vitcompress.slim.config",
    "SlimObjective": "vitcompress.slim.sparsity",
    "select": "vitcompress.slim.solver",
    "Selection": "vitcompress.slim.selection",
    "binarize": "vitcompress.slim.extraction",
    "extract": "vitcompress.slim.extraction",
    "compress": "vitcompress.jobs.compress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vitcompress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover
    from vitcompress.data import build_loaders
    from vitcompress.errors import VitCompressError
    from vitcompress.export.io import load, save
    from vitcompress.export.onnx import OnnxExport, export_onnx
    from vitcompress.jobs.compress import compress
    from vitcompress.metrics.accuracy import evaluate
    from vitcompress.metrics.latency import measure_latency
    from vitcompress.metrics.macs import count_macs
    from vitcompress.metrics.params import count_params
    from vitcompress.metrics.profile import Profile, profile
    from vitcompress.multiplexing.build import multiplex
    from vitcompress.multiplexing.config import MultiplexConfig
    from vitcompress.multiplexing.distill_config import DistillConfig
    from vitcompress.multiplexing.objective import DistillationObjective
    from vitcompress.slim.attach import attach_masks
    from vitcompress.slim.config import SlimConfig, SparsityConfig
    from vitcompress.slim.extraction import binarize, extract
    from vitcompress.slim.selection import Selection
    from vitcompress.slim.solver import select
    from vitcompress.slim.sparsity import SlimObjective
    from vitcompress.train.config import TrainConfig
    from vitcompress.train.loop import fit
