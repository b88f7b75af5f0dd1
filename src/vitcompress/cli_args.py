"""Argparse subcommands derived from a job's typed signature: config dataclass fields and plain typed arguments.

A job parameter annotated with a `BaseConfig` subclass contributes one flag per field (the field's docstring is
its help, the dataclass default its default); any other typed parameter is one flag documented by the job
docstring's `Args:` entry. The same description validates YAML recipes, so the flags, the recipe keys and the
job's arguments can never drift apart, and every default lives in the dataclass or the signature only.

An option typed `X | None` also takes the literal `none` (or `null`), which sets it to None as a recipe's YAML null
does (`--clip-grad none`); a `dict[str, float]` option takes `KEY=VALUE` items; `Annotated[..., Arg(one_of=...)]`
puts plain arguments in a group of which exactly one must be given.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path, PurePath
from typing import Any

from vitcompress.config import BaseConfig
from vitcompress.errors import VitCompressError

SHORT_FLAGS = {"out": "-o"}


@dataclasses.dataclass(frozen=True)
class Flags:
    """How a config parameter of a job appears on the command line (use as `Annotated[Config, Flags(...)]`).

    Attributes:
        only: Expose just these fields (the others keep their dataclass defaults).
        rename: Field -> flag/recipe name, e.g. {"model": "teacher"}.
        aliases: Field -> deprecated names also accepted as flags and recipe keys.
        optional: Build the config only when one of its fields is given (flag or recipe), else pass None.
    """

    only: tuple[str, ...] | None = None
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class Arg:
    """How a plain (non-config) argument of a job appears on the command line (use as `Annotated[type, Arg(...)]`).

    Attributes:
        one_of: The name of a group of arguments of which exactly one must be given (flag or recipe); their flags
            are mutually exclusive.
        metavar: The placeholder in --help and in the error for a malformed item, e.g. "TYPE=SHARE".
        example: The items of a correct value, shown in that error, e.g. "attn=0.7 mlp=0.7".
        positional: A positional argument (`vitcompress report RUN_DIR`) instead of a flag; only for commands
            without a recipe.
    """

    one_of: str | None = None
    metavar: str | None = None
    example: str | None = None
    positional: bool = False


@dataclasses.dataclass
class Option:
    """One flag and recipe key: a config field, or a plain job argument (field None)."""

    name: str
    param: str
    field: str | None
    annotation: Any
    default: Any
    doc: str
    aliases: tuple[str, ...] = ()
    arg: Arg = Arg()

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    @property
    def nullable(self) -> bool:
        """Typed `X | None`: the literal none/null on the command line sets it to None."""
        return _is_optional(self.annotation)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass
class Param:
    """One parameter of a job: a config (with its options) or a plain argument (one option)."""

    name: str
    config: type[BaseConfig] | None
    flags: Flags
    options: list[Option]
    title: str


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


def arg_docs(fn: Callable) -> dict[str, str]:
    """The Google-style `Args:` entries of `fn`'s docstring, by argument name, each on one line."""
    doc = inspect.getdoc(fn) or ""
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, flags=re.M)
    docs: dict[str, str] = {}
    name = None
    for line in (match.group(1) if match else "").splitlines():
        entry = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
        if entry:
            name, docs[entry.group(1)] = entry.group(1), entry.group(2)
        elif name and line.strip():
            docs[name] += " " + line.strip()
    return docs


def _is_optional(annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return type(None) in typing.get_args(annotation)
    return annotation is None or annotation is type(None)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _config_class(annotation: Any) -> type[BaseConfig] | None:
    found = [a for a in _union_args(annotation) if isinstance(a, type) and issubclass(a, BaseConfig)]
    return found[0] if found else None


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0].rstrip(".")


@functools.cache
def job_params(fn: Callable) -> tuple[Param, ...]:
    """The parameters of `fn` as configs and plain options, with names, defaults and docs (cached: the sources
    of the config classes are parsed once)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    docs = arg_docs(fn)
    params = []
    for name, p in inspect.signature(fn).parameters.items():
        annotation, flags, arg = hints[name], Flags(), Arg()
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extras = typing.get_args(annotation)
            flags = next((e for e in extras if isinstance(e, Flags)), flags)
            arg = next((e for e in extras if isinstance(e, Arg)), arg)
        cls = _config_class(annotation)
        if cls is None:
            default = dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
            option = Option(name, name, None, annotation, default, docs.get(name, ""), arg=arg)
            params.append(Param(name, None, flags, [option], ""))
            continue
        fdocs, fhints = field_docs(cls), typing.get_type_hints(cls)
        options = []
        for f in dataclasses.fields(cls):
            if flags.only is not None and f.name not in flags.only:
                continue
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            options.append(Option(flags.rename.get(f.name, f.name), name, f.name, fhints[f.name], default,
                                  fdocs.get(f.name, ""), tuple(flags.aliases.get(f.name, ()))))
        title = (docs.get(name) or _first_line(cls.__doc__) or cls.__name__).rstrip(".")
        params.append(Param(name, cls, flags, options, title))
    names = [o.name for p in params for o in p.options]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:  # a programming error in a job signature, caught by the CLI tests
        raise TypeError(f"{fn.__name__}: option name(s) {clash} come from two parameters; rename with Flags")
    return tuple(params)


def one_of_groups(fn: Callable) -> dict[str, list[Option]]:
    """The `Arg(one_of=...)` groups of `fn`: group name -> its options, in signature order."""
    groups: dict[str, list[Option]] = {}
    for param in job_params(fn):
        for o in param.options:
            if o.arg.one_of:
                groups.setdefault(o.arg.one_of, []).append(o)
    return groups


class _NoneGiven:
    """The literal none/null given on the command line to an `X | None` option (argparse's None means "not
    given", so None itself cannot say "set it to None")."""

    def __repr__(self) -> str:
        return "none"

    __str__ = __repr__


NONE = _NoneGiven()


def _nullable(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`convert`, except that none/null becomes `NONE`; keeps `convert`'s name for argparse's error message."""

    def parse(text: str) -> Any:
        return NONE if text.lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _parse_value(text: str) -> Any:
    """CLI text -> int/float/None/JSON list, else the string itself."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _argparse_kwargs(annotation: Any, metavar: str | None = None) -> dict[str, Any]:
    """type/nargs/action for a field or argument annotation; `X | None` also takes none/null (as `NONE`)."""
    kwargs = _plain_argparse_kwargs(annotation, metavar)
    if _is_optional(annotation) and "action" not in kwargs:
        if "choices" in kwargs:
            if not all(isinstance(c, str) for c in kwargs["choices"]):
                return kwargs  # no parse for non-string choices: leave those without none
            kwargs["choices"] = [*kwargs["choices"], NONE]
        kwargs["type"] = _nullable(kwargs.get("type", str))
    return kwargs


def _plain_argparse_kwargs(annotation: Any, metavar: str | None) -> dict[str, Any]:
    hints = _union_args(annotation)
    origin = typing.get_origin(hints[0]) if len(hints) == 1 else None
    if hints == (bool,):
        return {"action": argparse.BooleanOptionalAction}
    if len(hints) == 1 and hints[0] in (int, float, str):
        return {"type": hints[0]}
    if set(hints) <= {str, PurePath, Path}:  # an output directory named 123 stays a name
        return {"type": str}
    if origin is dict:  # parsed by `_convert`, so a recipe may give the same list
        return {"nargs": "+", "metavar": metavar or "KEY=VALUE"}
    if origin is list:
        (item,) = typing.get_args(hints[0]) or (str,)
        if item in (int, float, str):  # timm's habit: --scale 0.08 1.0
            return {"type": item, "nargs": "+"}
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(hints[0]))}
    return {"type": _parse_value}  # nested lists and unions, e.g. --groups [[0,1],[2,3]]


def _help(option: Option, one_of: list[Option] | None = None) -> str:
    if one_of:
        default = f"exactly one of {', '.join(m.flag for m in one_of)} is required"
    else:
        default = "required" if option.required else f"default: {option.default}"
        if option.nullable and option.default is not None:
            default += "; none to unset"
    alias = f"; deprecated alias: {', '.join('--' + a.replace('_', '-') for a in option.aliases)}" \
        if option.aliases else ""
    return f"{option.doc} ({default}{alias})".replace("%", "%%").strip()


def add_job_args(parser: argparse.ArgumentParser, fn: Callable, recipe: bool = True) -> None:
    """Add one flag per option of `fn` (plain arguments first, then one group per config), and --config if
    `recipe`.

    Without a recipe only flags can give a value, so argparse itself enforces the required options and the
    `Arg(one_of=...)` groups; with one, `job_kwargs` does, after merging the recipe.
    """
    params = job_params(fn)
    groups = one_of_groups(fn)
    exclusive: dict[str, Any] = {}
    for param in [p for p in params if p.config is None] + [p for p in params if p.config is not None]:
        group = parser if param.config is None else parser.add_argument_group(param.title)
        for o in param.options:
            flags = [f for f in (SHORT_FLAGS.get(o.name), o.flag) if f]
            flags += ["--" + a.replace("_", "-") for a in o.aliases]
            kwargs = _argparse_kwargs(o.annotation, o.arg.metavar)
            if o.name.startswith("no_") and kwargs.get("action"):  # --no-kd, not --no-kd/--no-no-kd
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            if "action" not in kwargs and "metavar" not in kwargs and "choices" not in kwargs:
                kwargs["metavar"] = o.arg.metavar or o.name.upper()
            target = group
            if o.arg.one_of:
                if o.arg.one_of not in exclusive:
                    exclusive[o.arg.one_of] = group.add_mutually_exclusive_group(required=not recipe)
                target = exclusive[o.arg.one_of]
            elif o.required and not recipe:
                kwargs["required"] = True
            if o.arg.positional and not recipe:  # argparse names a positional's dest after it
                kwargs.pop("required", None)
                target.add_argument(o.name, help=_help(o, groups.get(o.arg.one_of)), **kwargs)
                continue
            target.add_argument(*flags, dest=o.name, default=None, help=_help(o, groups.get(o.arg.one_of)),
                                **kwargs)
    if recipe:
        parser.add_argument("--config", help="YAML recipe: a file, or a shipped name such as digits-teacher; "
                                             "flags override its values")


def recipe_keys(fn: Callable) -> dict[str, str]:
    """Every key a recipe for `fn` may hold (aliases included) -> the option name it sets."""
    keys = {}
    for param in job_params(fn):
        for o in param.options:
            keys[o.name] = o.name
            keys.update({a: o.name for a in o.aliases})
    return keys


def given_args(fn: Callable, args: argparse.Namespace) -> dict[str, Any]:
    """The options of `fn` that were given on the command line (argparse leaves the others None); a literal
    none/null given to an `X | None` option is None here."""
    return {o.name: _given_value(o, getattr(args, o.name)) for p in job_params(fn) for o in p.options
            if getattr(args, o.name, None) is not None}


def _given_value(option: Option, value: Any) -> Any:
    if value is NONE:
        return None
    if isinstance(value, list) and any(v is NONE for v in value):
        if len(value) > 1:
            raise VitCompressError(f"{option.flag} none unsets the option; give none alone, not with other values")
        return None
    return value


def job_kwargs(fn: Callable, recipe: Mapping[str, Any] | None = None, given: Mapping[str, Any] | None = None,
               where: str = "recipe") -> dict[str, Any]:
    """The keyword arguments of `fn`: `given` (flags) over `recipe` over the dataclass/signature defaults.

    Raises:
        VitCompressError: The recipe has a key `fn` does not take, a required option is missing, or a config
            rejects its values; all before anything is written.
    """
    keys = recipe_keys(fn)
    unknown = sorted(set(recipe or {}) - set(keys))
    if unknown:
        valid = ", ".join(sorted(k for k, v in keys.items() if k == v))
        raise VitCompressError(f"{where} has unknown key(s) {', '.join(unknown)}; valid keys: {valid}")
    values = {keys[k]: v for k, v in (recipe or {}).items()}
    groups = one_of_groups(fn)
    for members in groups.values():  # a flag of a one-of group replaces the recipe's choice in it
        if any(m.name in (given or {}) for m in members):
            for m in members:
                values.pop(m.name, None)
    values.update(given or {})
    for members in groups.values():
        chosen = [m.flag for m in members if values.get(m.name) is not None]
        if len(chosen) != 1:
            raise VitCompressError(f"pass exactly one of {', '.join(m.flag for m in members)} "
                                   f"(got {' and '.join(chosen) or 'none'})")
    kwargs = {}
    for param in job_params(fn):
        found = {o.field or o.name: _convert(o, values[o.name]) for o in param.options if o.name in values}
        if param.config is not None and param.flags.optional and not found:
            kwargs[param.name] = None  # an optional config none of whose options is given
            continue
        for o in param.options:
            if o.required and o.name not in values:
                raise VitCompressError(f"missing {o.flag}; pass {o.flag} <{o.name}> (or `{o.name}:` in a recipe)")
        if param.config is None:
            if found:
                kwargs[param.name] = found[param.name]
        else:
            kwargs[param.name] = param.config.from_dict(found)
    return kwargs


def _convert(option: Option, value: Any) -> Any:
    """Command-line forms that a config does not take as they are: KEY=VALUE lists become a mapping, its values
    of the annotated type (`dict[str, float]`) or, untyped (`dict[str, Any]`), YAML scalars."""
    hint = _union_args(option.annotation)[0]
    if typing.get_origin(hint) is not dict or not isinstance(value, list):
        return value
    value_type = (typing.get_args(hint) or (str, Any))[-1]
    if value_type not in (int, float, str):
        from vitcompress.export.resolve import parse_model_args

        return parse_model_args(value)
    out = {}
    for item in value:
        key, sep, text = str(item).partition("=")
        try:
            out[key.strip()] = value_type(text)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            metavar = option.arg.metavar or "KEY=VALUE"
            fix = f"write e.g. {option.flag} {option.arg.example}" if option.arg.example else \
                f"write {metavar} items with {value_type.__name__} values"
            raise VitCompressError(f"{option.flag} {item!r} is not {metavar}; {fix}")
    return out


def load_recipe(ref: str | None) -> dict[str, Any]:
    """A YAML recipe: a file path, or the name of one shipped in `vitcompress/recipes/`."""
    if ref is None:
        return {}
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
