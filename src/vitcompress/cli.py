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

# command -> (job function, help, takes a --config recipe)
COMMANDS = {
    "train": ("vitcompress.jobs.train:train_job", "train or fine-tune a plain timm model", True),
    "multiplex": ("vitcompress.jobs.multiplex:multiplex_job",
                  "MiniViT: share weights across layers, train by weight distillation", True),
    "slim search": ("vitcompress.jobs.slim:search_job",
                    "train masks and weights with the sparsity loss; write the budget curve", True),
    "slim extract": ("vitcompress.jobs.slim:extract_job",
                     "select a budget from a search and save the physically smaller model", False),
    "finetune": ("vitcompress.jobs.finetune:finetune_job",
                 "retrain a saved (e.g. extracted) model: CE + optional logit KD", True),
    "eval": ("vitcompress.jobs.inspect:eval_job", "top-1/top-5 of a model on a dataset's validation split", False),
    "profile": ("vitcompress.jobs.inspect:profile_job",
                "params, MACs (attention counted) and optionally CPU latency", False),
    "export": ("vitcompress.jobs.export:export_job",
               "write a model as ONNX (dynamic batch), kept only if onnxruntime matches torch", False),
    "compress": ("vitcompress.jobs.compress:compress_job",
                 "teacher + target -> multiplex + distil (params), slim search + extract (MACs), KD fine-tune", True),
    "report": ("vitcompress.jobs.report:report_job",
               "draw a run's figures and per-layer widths into its report.md (every job also does it)", False),
    "demo": ("vitcompress.jobs.demo:demo_job",
             "train a small teacher on digits, multiplex it, print teacher vs student", False),
}
TRAINING = ("train", "multiplex", "slim search", "finetune", "compress")
REPORTS = (*TRAINING, "slim extract")
"""The commands that print the report.md they wrote to <out>."""


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
    _add(slim, "extract", "slim extract", derive("slim extract"))
    for name in ("finetune", "compress", "eval", "profile", "export", "report", "demo"):
        _add(sub, name, name, derive(name))
    return parser


def run(argv: list[str] | None = None) -> Any:
    """Parse `argv`, run the command's job and print its result; returns what the job returned."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    command = f"slim {args.slim_command}" if args.command == "slim" else args.command
    fn = job_of(command)
    config = getattr(args, "config", None)
    kwargs = job_kwargs(fn, load_recipe(config), given_args(fn, args), where=f"recipe {config}")
    result = fn(**kwargs)
    if command in REPORTS:
        if result:  # rank 0 only: the other ranks return an empty report
            print((Path(kwargs["out"]) / "report.md").read_text())
    elif command == "eval":
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    elif command == "profile":
        print("\n".join(map(str, result)))  # one line per batch size
    elif command == "export":
        print(result)
    elif command == "report":
        print("\n".join(result))
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
