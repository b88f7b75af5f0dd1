"""Argparse arguments generated from config dataclasses: field docstrings become `--help` text."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from typing import Any

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each dataclass field (the litgpt convention), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _parse_value(text: str) -> Any:
    """CLI text -> int/float/None/JSON list, else the string itself."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _kind(annotation: Any) -> tuple[type | None, bool]:
    """(scalar type to convert with, is_bool) of a field annotation; None means parse generically."""
    hints = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    hints = tuple(h for h in hints if h is not type(None))
    if hints == (bool,):
        return None, True
    if len(hints) == 1 and hints[0] in (int, float, str):
        return hints[0], False
    return None, False


def add_config_args(parser: argparse.ArgumentParser, cls: type[BaseConfig], title: str) -> None:
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        convert, is_bool = _kind(hints[f.name])
        if is_bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            nargs = "+" if typing.get_origin(hints[f.name]) is list and f.name == "relations" else None
            group.add_argument(flag, dest=f.name, type=convert or _parse_value, nargs=nargs, default=None,
                               help=help_text, metavar=f.name.upper())


def config_from_args(cls: type[BaseConfig], args: argparse.Namespace, base: dict | None = None) -> BaseConfig:
    """Build `cls` from the parsed args that were given, on top of `base` (e.g. a YAML recipe)."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    known = {f.name for f in dataclasses.fields(cls)}
    return cls.from_dict({k: v for k, v in values.items() if k in known})


def load_recipe(ref: str | None) -> dict[str, Any]:
    """A YAML recipe: a file path, or the name of one shipped in `vitcompress/recipes/`."""
    if ref is None:
        return {}
    from pathlib import Path

    import yaml

    path = Path(ref)
    if not path.is_file():
        shipped = Path(__file__).parent / "recipes" / f"{ref}.yaml"
        if not shipped.is_file():
            names = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
            raise VitCompressError(f"recipe {ref!r} is neither a file nor a shipped recipe ({', '.join(names)})")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VitCompressError(f"recipe {path} is not valid YAML ({e.__class__.__name__}); fix the file") from e
    if not isinstance(data, dict):
        raise VitCompressError(f"recipe {path} must be a mapping of option: value")
    return {k.replace("-", "_"): v for k, v in data.items()}
