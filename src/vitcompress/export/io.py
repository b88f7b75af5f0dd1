"""`save` / `load`: safetensors weights + a versioned JSON spec that rebuilds the exact architecture.

No pickle anywhere: loading runs no code from the files, and a truncated, edited or mismatched file is refused
with a one-line error instead of producing a silently wrong model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

# Loading replays any surgery a spec records; importing the surgeries registers their steps with the spec.
import vitcompress.slim.extraction  # noqa: F401  (slim_masks, slim and, through it, multiplex)
from vitcompress.errors import VitCompressError
from vitcompress.models.spec import build_from_spec, get_spec, unwrap

FORMAT = "vitcompress"
FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(target: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp)` on a temporary file next to `target`, then move it to `target` (atomic on one file
    system); if `write` raises, the temporary file is removed and `target` is left as it was."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; a saved model is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` to directory `path` as `model.safetensors` + `spec.json`; returns the directory.

    `extra` is free-form JSON metadata stored in the spec (e.g. data normalisation, training summary).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VitCompressError(f"{path} is a file; pass a directory path to save the model into")
    spec = get_spec(model)  # before touching the disk: an undescribable model writes nothing
    try:
        json.dumps(extra or {})
    except (TypeError, ValueError) as e:
        raise VitCompressError(f"extra metadata is not JSON-serialisable ({e}); use plain JSON values") from e
    state = {k: v.detach().to("cpu").contiguous() for k, v in unwrap(model).state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(path / WEIGHTS_FILE), "num_tensors": len(state)},
        "extra": extra or {},
    }
    atomic_write(path / SPEC_FILE, lambda tmp: tmp.write_text(json.dumps(doc, indent=2)))
    return path


def check_not_onnx(ref: str | Path) -> None:
    """Refuse an ONNX graph where a torch model is needed, in one line, before anything tries to read it."""
    if Path(ref).suffix.lower() == ".onnx":
        raise VitCompressError(f"{ref} is an ONNX graph, which only onnxruntime runs (vitcompress profile takes it); "
                               "pass the torch model it was exported from: a saved directory, checkpoint or timm name")


def read_spec(path: str | Path) -> dict[str, Any]:
    """The parsed, validated `spec.json` of a saved model directory."""
    check_not_onnx(path)
    path = Path(path)
    if not path.exists():
        raise VitCompressError(f"model directory {path} does not exist; pass a directory written by vitcompress save")
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise VitCompressError(f"{path} has no {SPEC_FILE}; it is not a model saved by vitcompress")
    try:
        doc = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VitCompressError(f"{spec_path} is corrupt ({e.__class__.__name__}: {e}); re-save the model") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "spec" not in doc:
        raise VitCompressError(f"{spec_path} is not a vitcompress spec; re-save the model with vitcompress")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise VitCompressError(f"{spec_path} has no valid format_version; re-save the model with vitcompress")
    if version > FORMAT_VERSION:
        raise VitCompressError(
            f"{spec_path} has format version {version}, newer than this vitcompress reads "
            f"({FORMAT_VERSION}); upgrade vitcompress"
        )
    weights = doc.get("weights")
    if (
        not isinstance(weights, dict)
        or not isinstance(weights.get("sha256"), str)
        or not isinstance(weights.get("file"), str)
        or Path(weights["file"]).name != weights["file"]  # a file next to spec.json, never elsewhere
    ):
        raise VitCompressError(f"{spec_path} has no valid 'weights' entry; re-save the model")
    return doc


def load(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a model saved with `save` (no training code needed), in eval mode."""
    path = Path(path)
    doc = read_spec(path)
    weights = path / doc["weights"]["file"]
    if not weights.is_file():
        raise VitCompressError(f"{weights} is missing; the model directory is incomplete, re-save the model")
    if _sha256(weights) != doc["weights"]["sha256"]:
        raise VitCompressError(f"{weights} is corrupt or was modified (checksum mismatch); re-save the model")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise VitCompressError(f"{weights} cannot be read ({e}); re-save the model") from e
    try:
        model = build_from_spec(doc["spec"])
    except VitCompressError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # a hand-edited or foreign spec
        raise VitCompressError(
            f"{path / SPEC_FILE} does not describe a model vitcompress can build "
            f"({e.__class__.__name__}: {e}); re-save the model"
        ) from e
    load_state_dict_strict(model, state, source=str(weights))
    return model.to(device).eval()


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` whose failure names the first few offending keys in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{name} {items[:3]}{' ...' if len(items) > 3 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items]
        raise VitCompressError(
            f"weights in {source} do not match the architecture ({'; '.join(parts)}); "
            "they belong to a different model"
        )
    model.load_state_dict(state, strict=True)
