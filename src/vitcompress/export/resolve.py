"""Turn what a user types (a timm name, a saved vitcompress directory or a checkpoint file) into a model.

It lives with save/load, above the model adapters: `models` never imports `export` (no import cycle)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.export.io import check_not_onnx, load, load_state_dict_strict, read_spec

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """`["depth=12", "img_size=32"]` -> `{"depth": 12, "img_size": 32}` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise VitCompressError(f"model argument {item!r} is not key=value; write e.g. depth=12")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_model(
    ref: str, *, arch: str | None = None, pretrained: bool = False, model_args: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model `ref` names and the metadata saved with it (empty unless `ref` is a vitcompress directory).

    Args:
        ref: a directory written by `vitcompress.save`, a checkpoint file (`.safetensors`/`.pth`, needs `arch`),
            or a timm model name.
        arch: timm architecture of a checkpoint file.
        pretrained: for a timm name, load timm's pretrained weights (needs network access to the hub).
        model_args: extra `timm.create_model` arguments for a name or checkpoint (e.g. img_size, depth).
    """
    model_args = dict(model_args or {})
    path = Path(ref)
    check_not_onnx(path)  # before any other reading: an ONNX graph holds no torch module to rebuild
    if path.is_dir():

        if model_args:
            raise VitCompressError(f"{ref} is a saved model; its architecture is fixed, drop --model-args")
        return load(path), read_spec(path).get("extra", {})
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists():
        if not path.is_file():
            raise VitCompressError(f"checkpoint {ref} does not exist; check the path")
        if not arch:
            raise VitCompressError(f"checkpoint {ref} needs its timm architecture: pass --arch <timm model name>")
        model = create_timm_model(arch, False, model_args)
        load_checkpoint_file(model, path)
        return model, {}
    if "/" in ref or "\\" in ref:
        raise VitCompressError(f"model path {ref} does not exist; pass a saved model directory or a timm name")
    return create_timm_model(ref, pretrained, model_args), {}


def create_timm_model(name: str, pretrained: bool, model_args: dict[str, Any]) -> nn.Module:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models('vit_*')"
        raise VitCompressError(f"unknown timm model {name!r}; {hint}")
    try:
        return timm.create_model(name, pretrained=pretrained, **model_args)
    except TypeError as e:
        raise VitCompressError(f"bad model argument for {name}: {e}; check --model-args") from e
    except (OSError, RuntimeError) as e:
        if pretrained:
            raise VitCompressError(
                f"could not fetch pretrained weights for {name} ({e.__class__.__name__}); without network access "
                "pass a local checkpoint file with --arch"
            ) from e
        raise


def load_checkpoint_file(model: nn.Module, path: Path) -> None:
    """Load a timm-style state dict from safetensors or a weights-only torch file (never unpickles code)."""

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt files raise many different types
        raise VitCompressError(f"cannot read checkpoint {path} ({e.__class__.__name__}); is it a state dict?") from e
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    load_state_dict_strict(model, state, source=str(path))
