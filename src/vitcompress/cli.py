"""`vitcompress` command line: each subcommand parses its options and calls one job function."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from vitcompress.cli_args import add_config_args, config_from_args, load_recipe
from vitcompress.errors import VitCompressError

# Job-level options (not part of a config dataclass), with their defaults.
MODEL_OPTS = {"arch": None, "pretrained": False, "model_args": None}
DATA_OPTS = {"data": "digits", "batch_size": 64, "workers": 0}


def _add_model(p: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    p.add_argument(flag, dest=flag.strip("-").replace("-", "_"), help=help_text)
    p.add_argument("--arch", help="timm architecture of a checkpoint file given as the model")
    p.add_argument("--pretrained", action="store_true", default=None,
                   help="load timm's pretrained weights for a model given by name (needs hub access)")
    p.add_argument("--model-args", nargs="+", metavar="KEY=VALUE",
                   help="extra timm.create_model arguments, e.g. img_size=32 patch_size=4 depth=12")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="digits (built-in), an ImageFolder root with train/ and val/, "
                                  "folder:<path> or hfds:<path> (default: digits)")
    p.add_argument("--batch-size", type=int, help="batch size per process (default: 64)")
    p.add_argument("--workers", type=int, help="data loader worker processes (default: 0)")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", help="output directory (model, report, metrics, checkpoint)")
    p.add_argument("--resume", action="store_true", default=None, help="resume from <out>/checkpoint")
    p.add_argument("--config", help="YAML recipe (a file, or a shipped name such as digits-teacher)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from vitcompress.multiplexing.config import MultiplexConfig
    from vitcompress.multiplexing.distill_config import DistillConfig
    from vitcompress.slim.config import SlimConfig, SparsityConfig
    from vitcompress.train.config import TrainConfig

    parser = argparse.ArgumentParser(prog="vitcompress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train or fine-tune a plain timm model")
    _add_model(p, "--model", "timm name, saved model directory, or checkpoint file")
    _add_data(p)
    _add_run(p)
    p.add_argument("--label-smoothing", type=float, help="label smoothing of the CE loss (default: 0)")
    add_config_args(p, TrainConfig, "training")

    p = sub.add_parser("multiplex", help="MiniViT: share weights across layers, train by weight distillation")
    _add_model(p, "--teacher", "the model to multiplex and distil from: timm name, saved dir or checkpoint")
    p.add_argument("--kd-teacher", help="distil from this model instead (same patch grid; width may differ)")
    p.add_argument("--no-kd", action="store_true", help="no distillation: ground-truth CE only (ablation)")
    _add_data(p)
    _add_run(p)
    add_config_args(p, MultiplexConfig, "multiplexing")
    add_config_args(p, DistillConfig, "distillation")
    add_config_args(p, TrainConfig, "training")

    p = sub.add_parser("slim", help="ViT-Slim: search soft masks, then extract any budget from the search")
    slim = p.add_subparsers(dest="slim_command", required=True)
    p = slim.add_parser("search", help="train masks and weights with the sparsity loss; write the budget curve")
    _add_model(p, "--model", "the model to slim: timm name, saved model directory, or checkpoint file")
    p.add_argument("--kd-alpha", type=float, help="logit KD from the unmasked original: (1-a)*CE + a*KL (default: 0)")
    p.add_argument("--temperature", type=float, help="KD softmax temperature (default: 1)")
    p.add_argument("--curve-points", type=int, help="budget-curve points from share 1 to 0 (default: 21)")
    _add_data(p)
    _add_run(p)
    add_config_args(p, SlimConfig, "masks")
    add_config_args(p, SparsityConfig, "sparsity")
    add_config_args(p, TrainConfig, "training")

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

    p = sub.add_parser("finetune", help="retrain a saved (e.g. extracted) model: CE + optional logit KD")
    p.add_argument("--model", help="saved model directory (e.g. from `vitcompress slim extract`)")
    p.add_argument("--kd-teacher", help="distil logits from this model (e.g. the original): saved dir or name")
    p.add_argument("--kd-alpha", type=float, help="(1-a)*CE + a*KL with --kd-teacher (default: 0.5)")
    p.add_argument("--temperature", type=float, help="KD softmax temperature (default: 1)")
    p.add_argument("--latency", action="store_true", default=None, help="also time the models on CPU")
    _add_data(p)
    _add_run(p)
    add_config_args(p, TrainConfig, "training")

    p = sub.add_parser("eval", help="top-1/top-5 of a model on a dataset's validation split")
    _add_model(p, "--model", "timm name, saved model directory, or checkpoint file")
    _add_data(p)

    p = sub.add_parser("profile", help="params, MACs (attention counted) and optionally CPU latency")
    _add_model(p, "--model", "timm name, saved model directory, or checkpoint file")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: the model's")
    p.add_argument("--latency", action="store_true", help="also time the forward pass on CPU")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the latency measurement")

    p = sub.add_parser("demo", help="train a small teacher on digits, multiplex it, print teacher vs student")
    p.add_argument("-o", "--out", default="out/demo", help="output directory (default: out/demo)")
    p.add_argument("--teacher-epochs", type=int, help="override the teacher recipe's epochs")
    p.add_argument("--student-epochs", type=int, help="override the student recipe's epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _job_opts(args: argparse.Namespace, recipe: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Command line over recipe over defaults, for options that are not config fields."""
    out = {}
    for name, default in defaults.items():
        value = getattr(args, name, None)
        out[name] = value if value is not None else recipe.get(name, default)
    return out


def _check_recipe(recipe: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(recipe) - allowed)
    if unknown:
        raise VitCompressError(f"recipe {where} has unknown option(s) {unknown}; valid: {sorted(allowed)}")


def _model_args(value: Any) -> dict[str, Any] | None:
    from vitcompress.models.resolve import parse_model_args

    return value if isinstance(value, dict) or value is None else parse_model_args(value)


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


def _fields(*classes) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def run(argv: list[str] | None = None) -> Any:
    from vitcompress.multiplexing.config import MultiplexConfig
    from vitcompress.multiplexing.distill_config import DistillConfig
    from vitcompress.train.config import TrainConfig

    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from vitcompress.jobs.demo import demo_job

        return demo_job(args.out, args.teacher_epochs, args.student_epochs, progress=not args.no_progress)
    if args.command == "profile":
        from vitcompress.jobs.inspect import profile_job

        result = profile_job(args.model, tuple(args.input_size) if args.input_size else None, args.arch,
                             _model_args(args.model_args), args.latency, args.batch_size)
        print(result)
        return result
    if args.command == "eval":
        from vitcompress.jobs.inspect import eval_job

        opts = _job_opts(args, {}, {**DATA_OPTS, **MODEL_OPTS})
        opts["model_args"] = _model_args(opts["model_args"])
        result = eval_job(args.model, **opts)
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
        return result

    if args.command == "slim" and args.slim_command == "extract":
        from vitcompress.jobs.slim import extract_job

        result = extract_job(args.search, args.out, macs=args.macs, params=args.params,
                             dims=_parse_dims(args.dims), mode=args.mode, equal_heads=args.equal_heads,
                             latency=args.latency)
        print((Path(args.out) / "report.md").read_text())
        return result

    recipe = load_recipe(args.config)
    run_opts = {"out": None, "resume": False}
    if args.command == "slim":
        from vitcompress.jobs.slim import search_job
        from vitcompress.slim.config import SlimConfig, SparsityConfig

        model_key = "model"
        job_opts = {"kd_alpha": 0.0, "temperature": 1.0, "curve_points": 21}
        _check_recipe(recipe, _fields(TrainConfig, SlimConfig, SparsityConfig) | set(DATA_OPTS) | set(MODEL_OPTS)
                      | set(run_opts) | set(job_opts) | {"model"}, args.config)
        slim, sparsity = config_from_args(SlimConfig, args, recipe), config_from_args(SparsityConfig, args, recipe)
        train = config_from_args(TrainConfig, args, recipe)
        opts = _job_opts(args, recipe, {**DATA_OPTS, **MODEL_OPTS, **run_opts, **job_opts, model_key: None})
        job = lambda o: search_job(slim=slim, sparsity=sparsity, train=train, progress=not args.no_progress, **o)
    elif args.command == "finetune":
        from vitcompress.jobs.slim import finetune_job

        model_key = "model"
        job_opts = {"kd_teacher": None, "kd_alpha": 0.5, "temperature": 1.0, "latency": False}
        _check_recipe(recipe, _fields(TrainConfig) | set(DATA_OPTS) | set(run_opts) | set(job_opts) | {"model"},
                      args.config)
        train = config_from_args(TrainConfig, args, recipe)
        opts = _job_opts(args, recipe, {**DATA_OPTS, **run_opts, **job_opts, model_key: None})
        job = lambda o: finetune_job(train=train, progress=not args.no_progress, **o)
    elif args.command == "train":
        from vitcompress.jobs.train import train_job

        model_key = "model"
        _check_recipe(recipe, _fields(TrainConfig) | set(DATA_OPTS) | set(MODEL_OPTS) | set(run_opts)
                      | {"model", "label_smoothing"}, args.config)
        train = config_from_args(TrainConfig, args, recipe)
        opts = _job_opts(args, recipe, {**DATA_OPTS, **MODEL_OPTS, **run_opts, model_key: None,
                                         "label_smoothing": 0.0})
        job = lambda o: train_job(train=train, progress=not args.no_progress, **o)
    else:
        from vitcompress.jobs.multiplex import multiplex_job

        model_key = "teacher"
        _check_recipe(recipe, _fields(TrainConfig, MultiplexConfig, DistillConfig) | set(DATA_OPTS)
                      | set(MODEL_OPTS) | set(run_opts) | {"teacher", "kd_teacher", "no_kd"}, args.config)
        config = config_from_args(MultiplexConfig, args, recipe)
        no_kd = args.no_kd or recipe.get("no_kd", False)
        distill = DistillConfig.off() if no_kd else config_from_args(DistillConfig, args, recipe)
        train = config_from_args(TrainConfig, args, recipe)
        opts = _job_opts(args, recipe, {**DATA_OPTS, **MODEL_OPTS, **run_opts, model_key: None, "kd_teacher": None})
        job = lambda o: multiplex_job(config=config, distill=distill, train=train,
                                      progress=not args.no_progress, **o)
    if opts[model_key] is None:
        raise VitCompressError(f"no model given; pass --{model_key} <timm name | saved dir | checkpoint>")
    if opts["out"] is None:
        raise VitCompressError("no output directory given; pass -o <dir>")
    if "model_args" in opts:
        opts["model_args"] = _model_args(opts["model_args"])
    report = job(opts)
    if report:
        print((Path(opts["out"]) / "report.md").read_text())
    return report


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except VitCompressError as e:
        print(f"vitcompress: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
