"""Saving and loading models: safetensors weights + a JSON architecture spec."""

from vitcompress.export.io import load, read_spec, save

__all__ = ["load", "read_spec", "save"]
