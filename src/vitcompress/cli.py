"""`vitcompress` command line: each subcommand is derived from the signature of the one job function it calls.

The flags of a subcommand are its job's typed arguments and the fields of the configs it takes (see
`vitcompress.cli_args`), so the defaults, `--help` texts and the recipe keys a `--config` may hold live in one
place: the dataclasses and the job signatures.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from vitcompress.cli_args import add_job_args, given_args, job_kwargs, load_recipe
from vitcompress.errors import VitCompressError

# command -> (job function, help, takes a --config recipe, prints report.md)
COMMANDS = {
    "train": ("vitcompress.jobs.train:train_job", "train or fine-tune a plain timm model", True),
    "multiplex": ("vitcompress.jobs.multiplex:multiplex_job",
                  "MiniViT: share weights across layers, train by weight distillation", True),
    "slim search": ("vitcompress.jobs.slim:search_job",
                    "train masks and weights with the sparsity loss; write the budget curve", True),
    "finetune": ("vitcompress.jobs.finetune:finetune_job",
                 "retrain a saved (e.g. extracted) model: CE + optional logit KD", True),
    "eval": ("vitcompress.jobs.inspect:eval_job", "top-1/top-5 of a model on a dataset's validation split", False),
    "profile": ("vitcompress.jobs.inspect:profile_job",
                "params, MACs (attention counted) and optionally CPU latency", False),
    "demo": ("vitcompress.jobs.demo:demo_job",
             "train a small teacher on digits, multiplex it, print teacher vs student", False),
}
TRAINING = ("train", "multiplex", "slim search", "finetune")


def job_of(command: str):
    """The job function a command calls."""
    module, name = COMMANDS[command][0].split(":")
    return getattr(importlib.import_module(module), name)


def _add(sub, name: str, command: str, derive: bool) -> argparse.ArgumentParser:
    _, help_text, recipe = COMMANDS[command]
    if not derive:  # a command this run does not call: its job (and torch, timm) need not be imported
        return sub.add_parser(name, help=help_text)
    fn = job_of(command)
    p = sub.add_parser(name, help=help_text, description=(fn.__doc__ or "").split("\n\n")[0])
    add_job_args(p, fn, recipe=recipe)
    return p


def _called(argv: list[str] | None) -> str | None:
    """The command `argv` calls ("slim search" for two words), or None when it does not name one yet."""
    words = [a for a in (argv or []) if not a.startswith("-")][:2]
    if not words:
        return None
    return " ".join(words) if words[0] == "slim" else words[0]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `argv`, only the command it calls gets its (derived) options."""
    called = _called(argv) if argv is not None else None

    def derive(command: str) -> bool:
        return argv is None or command == called

    parser = argparse.ArgumentParser(prog="vitcompress", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, "train", "train", derive("train"))
    _add(sub, "multiplex", "multiplex", derive("multiplex"))
    p = sub.add_parser("slim", help="ViT-Slim: search soft masks, then extract any budget from the search")
    slim = p.add_subparsers(dest="slim_command", required=True)
    _add(slim, "search", "slim search", derive("slim search"))
    p = slim.add_parser("extract", help="select a budget from a search and save the physically smaller model")
    p.add_argument("--search", required=True, help="output directory of `vitcompress slim search`")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--macs", type=float, help="target MACs as a fraction of the original, e.g. 0.6")
    budget.add_argument("--params", type=float, help="target params as a fraction of the original, e.g. 0.6")
    budget.add_argument("--dims", nargs="+", metavar="TYPE=SHARE",
                        help="share each mask type keeps, e.g. attn=0.7 mlp=0.7 tokens=0.9")
    p.add_argument("--mode", choices=["share", "joint"], default="share",
                   help="for --macs/--params: the same share for every mask type, or one joint threshold")
    p.add_argument("--equal-heads", action="store_true",
                   help="every head of a layer keeps the same number of dims: one attention call per layer, "
                        "faster on small models")
    p.add_argument("--latency", action="store_true", help="also time original and extracted on CPU (batch 1, 32)")
    p.add_argument("-o", "--out", required=True, help="output directory for the extracted model")
    for name in ("finetune", "eval", "profile", "demo"):
        _add(sub, name, name, derive(name))
    return parser


def _parse_dims(items: list[str] | None) -> dict[str, float] | None:
    """["attn=0.7", "mlp=0.7"] -> {"attn": 0.7, "mlp": 0.7}."""
    if items is None:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise VitCompressError(f"--dims {item!r} is not TYPE=SHARE; write e.g. --dims attn=0.7 mlp=0.7")
    return out


def _extract(args: argparse.Namespace) -> Any:
    from vitcompress.jobs.slim import extract_job

    result = extract_job(args.search, args.out, macs=args.macs, params=args.params, dims=_parse_dims(args.dims),
                         mode=args.mode, equal_heads=args.equal_heads, latency=args.latency)
    print((Path(args.out) / "report.md").read_text())
    return result


def run(argv: list[str] | None = None) -> Any:
    """Parse `argv`, run the command's job and print its result; returns what the job returned."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    command = f"slim {args.slim_command}" if args.command == "slim" else args.command
    if command == "slim extract":
        return _extract(args)
    fn = job_of(command)
    config = getattr(args, "config", None)
    kwargs = job_kwargs(fn, load_recipe(config), given_args(fn, args), where=f"recipe {config}")
    result = fn(**kwargs)
    if command in TRAINING:
        if result:  # rank 0 only: the other ranks return an empty report
            print((Path(kwargs["out"]) / "report.md").read_text())
    elif command == "eval":
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    elif command == "profile":
        print(result)
    return result


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except VitCompressError as e:
        print(f"vitcompress: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
