"""Parse and validate the user-facing arguments of `build_loaders` before any data is touched."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import NamedTuple

from vitcompress.errors import VitCompressError

SCHEMES = ("folder", "hfds")
# Data specs generated offline from what installed packages ship; `digits` is the default.
BUILTINS = ("digits", "cluttered-digits")
# Two or more letters before the colon, so Windows drive letters (C:\data) stay paths.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_+-]+):(.*)$")
_HF_MARKERS = ("dataset_dict.json", "dataset_info.json")


class DataSpec(NamedTuple):
    """A parsed data spec: which source, and where it lives (`""` for built-ins)."""

    kind: str  # a name in BUILTINS, "folder" or "hfds"
    path: str


def parse_spec(spec: str) -> DataSpec:
    """Split a built-in name (`digits`, `cluttered-digits`), `folder:<path>`, `hfds:<path>` or a bare directory path
    into a `DataSpec`.

    A bare path holding a `datasets.save_to_disk` dataset is routed to `hfds`, because such a folder also
    has a `train/` subfolder and would otherwise fail later with a confusing "no images" message.

    Raises:
        VitCompressError: the scheme is unknown or the path does not exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise VitCompressError(f"data spec must be a non-empty string (got {spec!r}); use e.g. --data digits")
    spec = spec.strip()
    if spec in BUILTINS:
        return DataSpec(spec, "")
    match = _SCHEME_RE.match(spec)
    if match:
        scheme, path = match.group(1).lower(), match.group(2)
        if scheme not in SCHEMES:
            raise VitCompressError(
                f"unknown data spec scheme '{scheme}:' in {spec!r}; use digits, folder:<path>, hfds:<path>, "
                "a directory path or cluttered-digits"
            )
        kind = scheme
    else:
        kind, path = "", spec
    path = os.path.expanduser(path)
    if not path or not os.path.exists(path):
        hint = (
            "pass a directory written by datasets' save_to_disk"
            if kind == "hfds"
            else "pass an ImageFolder root with train/ and val/"
        )
        shown = path or "(empty)"
        raise VitCompressError(f"dataset path {shown} does not exist; {hint} or use --data digits")
    if not kind:
        kind = "hfds" if any(os.path.isfile(os.path.join(path, m)) for m in _HF_MARKERS) else "folder"
    return DataSpec(kind, path)


def check_input_size(input_size: Sequence[int]) -> tuple[int, int, int]:
    """Return `input_size` as a `(C, H, W)` tuple of ints, C in {1, 3}.

    Raises:
        VitCompressError: it is not three positive integers with 1 or 3 channels.
    """
    try:
        size = tuple(int(v) for v in input_size)
        ok = len(size) == 3 and all(float(v) == int(v) for v in input_size)
    except (TypeError, ValueError):
        size, ok = (), False
    if not ok or size[0] not in (1, 3) or min(size[1:]) < 1:
        raise VitCompressError(
            f"input_size must be (C, H, W) with C in {{1, 3}} and H, W >= 1 (got {input_size!r}); "
            "e.g. input_size=(3, 224, 224)"
        )
    return size  # type: ignore[return-value]


def check_loader_args(batch_size: int, num_workers: int) -> None:
    """Raise `VitCompressError` for a batch size below 1 or a negative worker count."""
    if int(batch_size) < 1:
        raise VitCompressError(f"batch_size must be >= 1 (got {batch_size}); pass e.g. batch_size=64")
    if int(num_workers) < 0:
        raise VitCompressError(
            f"num_workers must be >= 0 (got {num_workers}); pass 0 to load in the main process"
        )


def resolve_norm(
    values: Sequence[float] | None, default: Sequence[float], channels: int, what: str
) -> tuple[float, ...]:
    """One mean (or std) value per channel: `values` or `default`, a single value broadcast to all channels.

    A 3-value default for a 1-channel input is averaged, so greyscale gets the mean of ImageNet's values.

    Raises:
        VitCompressError: `values` has neither 1 nor `channels` entries, or a std is not positive.
    """
    if values is None:
        vals = tuple(float(v) for v in default)
        if len(vals) != channels:
            vals = (sum(vals) / len(vals),) * channels
    else:
        vals = tuple(float(v) for v in values)
        if len(vals) == 1:
            vals = vals * channels
        if len(vals) != channels:
            raise VitCompressError(
                f"{what} has {len(vals)} values but input_size has {channels} channel(s); "
                f"pass one value or {channels}"
            )
    if what == "std" and min(vals) <= 0:
        raise VitCompressError(f"std values must be > 0 (got {vals}); pass positive per-channel stds")
    return vals
