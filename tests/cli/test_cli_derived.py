"""The CLI is derived from the job signatures: flags, docs, defaults and strict recipes all come from one place."""

from __future__ import annotations

import argparse
import inspect
import json
import typing
from typing import Annotated

import pytest
import yaml

import vitcompress as vc
from vitcompress.cli import COMMANDS, TRAINING, build_parser, job_of, main
from vitcompress.cli_args import Arg, add_job_args, given_args, job_kwargs, job_params
from vitcompress.errors import VitCompressError

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "128", "--no-progress"]
MODEL_FLAG = {"train": "--model", "multiplex": "--teacher", "slim search": "--model", "finetune": "--model",
              "compress": "--teacher"}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in command.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_lists_every_option_with_its_doc(command, capsys):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for param in job_params(job_of(command)):
        for option in param.options:
            shown = (option.arg.metavar or option.name) if option.arg.positional else option.flag
            assert shown in text, shown
            assert " ".join(option.doc.split())[:40] in text, option.flag


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_maps_to_a_job_parameter(command):
    fn = job_of(command)
    options = {o.name: o for p in job_params(fn) for o in p.options}
    dests = {a.dest for a in _subparser(command)._actions} - {"help", "config"}
    assert dests == set(options)
    for o in options.values():  # each option feeds a parameter of the signature, directly or as a config field
        assert o.param in inspect.signature(fn).parameters


def test_option_names_are_unique_across_configs():
    # SparsityConfig's l1 weights and DistillConfig's relation weight were both `attn_weight` once.
    for command in COMMANDS:
        names = [o.name for p in job_params(job_of(command)) for o in p.options]
        assert len(names) == len(set(names)), command


def test_flags_override_recipe_over_defaults():
    fn = job_of("multiplex")
    kwargs = job_kwargs(fn, {"lr": 1e-3, "epochs": 3, "share": 3, "mixup": 0.8},
                        {"lr": 2e-3, "teacher": "t", "out": "o"})
    assert kwargs["train"].lr == 2e-3 and kwargs["train"].epochs == 3  # flag over recipe
    assert kwargs["config"].share == 3 and kwargs["aug"].mixup == 0.8  # recipe over default
    assert kwargs["train"].weight_decay == vc.TrainConfig().weight_decay  # dataclass default
    assert kwargs["data"].batch_size == 64 and kwargs["kd_teacher"] is None


def test_logit_kd_options_and_their_deprecated_alias():
    finetune, search = job_of("finetune"), job_of("slim search")
    assert job_kwargs(finetune, {}, {"model": "m", "out": "o"})["kd"].alpha == 0.5  # soft KD with --kd-teacher
    assert job_kwargs(search, {}, {"model": "m", "out": "o"})["kd"] is None  # no KD unless asked
    args = _subparser("slim search").parse_args(["--model", "m", "-o", "o", "--kd-alpha", "0.3",
                                                 "--distillation-type", "hard"])
    kd = job_kwargs(search, {}, given_args(search, args))["kd"]
    assert (kd.alpha, kd.distillation_type) == (0.3, "hard")


def _recipe(tmp_path, **values) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("command", TRAINING)
def test_unknown_recipe_key_is_one_line_and_writes_nothing(command, tmp_path, capsys):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, epochs=1, lr_bse=1e-3)  # misspelt
    argv = [*command.split(), MODEL_FLAG[command], "vit_tiny_patch16_224", *TINY, "--config", recipe, "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "lr_bse" in err and "lr_base" in err, err
    assert not out.exists()


def test_demo_recipes_are_strict(tmp_path, capsys, monkeypatch):
    import vitcompress.jobs.demo as demo

    real = demo.load_recipe
    monkeypatch.setattr(demo, "load_recipe", lambda name: {**real(name), "label_smoothing": 0.1})
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "label_smoothing" in err and "smoothing" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [(["--grad-accum-steps", "0"], "grad_accum_steps=0"), (["--smoothing", "1.5"], "smoothing=1.5"),
     (["--mixup", "0.8", "--batch-size", "7"], "odd"), (["--drop-path", "1"], "drop_path=1")],
    ids=["grad-accum-0", "smoothing", "odd-mixup-batch", "drop-path"],
)
def test_bad_training_options_are_one_line_and_write_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(out), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()


class _Captured(Exception):
    pass


def _capture_fit(monkeypatch) -> dict:
    """Replace fit by one that records its arguments and stops the job (before anything is written)."""
    import vitcompress.jobs.skeleton as skeleton

    seen: dict = {}

    def fit(model, train_loader, val_loader, objective, cfg, **kwargs):
        seen.update(model=model, objective=objective, cfg=cfg, **kwargs)
        raise _Captured

    monkeypatch.setattr(skeleton, "fit", fit)
    return seen


def test_smoothing_mixup_and_drop_path_reach_the_loop(tmp_path, monkeypatch):
    from vitcompress.models.drop_path import drop_path_rates

    seen = _capture_fit(monkeypatch)
    base = ["train", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(tmp_path / "o"), *FAST]
    with pytest.raises(_Captured):
        main([*base, "--smoothing", "0.1", "--drop-path", "0.1", "--grad-accum-steps", "2"])
    assert seen["objective"].label_smoothing == 0.1 and seen["mixup"] is None
    assert drop_path_rates(seen["model"])[-1] == pytest.approx(0.1) and seen["cfg"].grad_accum_steps == 2
    assert seen["run_meta"]["augment"]["smoothing"] == 0.1 and seen["run_meta"]["source"]["model"]
    with pytest.raises(_Captured):
        main([*base, "--smoothing", "0.1", "--mixup", "0.8", "--cutmix", "1.0"])
    # With Mixup on, the smoothing is folded into the soft targets, so the loss itself smooths no more.
    assert seen["objective"].label_smoothing == 0.0 and seen["mixup"].label_smoothing == 0.1
    assert seen["mixup"].mixup_alpha == 0.8 and seen["mixup"].cutmix_alpha == 1.0


def test_configs_are_recorded_in_report_and_saved_model(tmp_path):
    out = tmp_path / "t"
    recipe = _recipe(tmp_path, epochs=1, warmup_epochs=0, lr=1e-3, smoothing=0.05)
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "--config", recipe, "--lr", "2e-3",
                 "--mixup", "0.8", "-o", str(out), "--batch-size", "128", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["lr"] == 2e-3 and report["train"]["epochs"] == 1  # flag over recipe
    assert report["augment"]["mixup"] == 0.8 and report["augment"]["smoothing"] == 0.05
    assert report["data_config"]["batch_size"] == 128
    extra = vc.export.io.read_spec(out)["extra"]
    assert extra["augment"] == report["augment"] and extra["train"]["lr"] == 2e-3
    assert "mean" in extra["data"]  # the normalisation a later job reads is still there


def test_multiplex_takes_a_cnn_logit_teacher_and_a_separate_relation_teacher(tmp_path, monkeypatch, capsys):
    cnn = ["--kd-teacher", "resnet10t", "--kd-teacher-args", "num_classes=10"]
    base = ["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "-o", str(tmp_path / "o"), *FAST, *cnn]
    # The relation terms default to the kd teacher, and a CNN has no attention to relate: one line, nothing written.
    assert main([*base, "--attn-layers", "all"]) == 2
    # The random-weights note for a teacher named without --kd-teacher-pretrained comes first; the error is one line.
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if "note:" not in line)
    assert err.count("\n") == 0 and "relation" in err, err
    assert not (tmp_path / "o").exists()

    seen = _capture_fit(monkeypatch)
    with pytest.raises(_Captured):
        main([*base, "--relation-teacher", "vit_small_patch16_224", "--relation-teacher-args", "img_size=16",
              "patch_size=4", "depth=2", "num_classes=10", "--distillation-type", "hard", "--smoothing", "0.1"])
    objective = seen["objective"]
    assert type(objective.teacher).__name__ == "ResNet" and objective.relation_teacher.embed_dim == 384
    assert objective.config.distillation_type == "hard" and objective.label_smoothing == 0.1
    assert seen["run_meta"]["kd_teacher"]["model"] == "resnet10t"


# The options `slim extract` had when its parser was written by hand: flags, required, choices, nargs, metavar.
EXTRACT_BEFORE = {
    "search": (["--search"], True, None, None, None),
    "macs": (["--macs"], False, None, None, None),
    "params": (["--params"], False, None, None, None),
    "dims": (["--dims"], False, None, "+", "TYPE=SHARE"),
    "mode": (["--mode"], False, ["share", "joint"], None, None),
    "equal_heads": (["--equal-heads"], False, None, 0, None),
    "latency": (["--latency"], False, None, 0, None),
    "out": (["-o", "--out"], True, None, None, None),
    # added since (issue 10): hardware-aligned widths
    "multiple_of": (["--multiple-of"], False, None, None, None),
    "multiple_of_tokens": (["--multiple-of-tokens"], False, None, None, None),
}


def test_slim_extract_is_derived_with_the_options_it_had():
    from vitcompress.jobs.slim import extract_job
    from vitcompress.slim.solver import MODES

    parser = _subparser("slim extract")
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(actions) == set(EXTRACT_BEFORE)  # and no --config: extract takes no recipe
    for dest, (flags, required, choices, nargs, metavar) in EXTRACT_BEFORE.items():
        a = actions[dest]
        assert set(flags) <= set(a.option_strings), dest  # the bool flags gained --no-equal-heads/--no-latency
        assert (a.required, a.choices) == (required, choices), dest
        if nargs == 0:  # a switch: --equal-heads sets True, nothing given keeps the signature's False
            assert parser.parse_args(["--search", "s", "-o", "o", "--macs", "0.5", flags[0]]).__dict__[dest] is True
        else:
            assert (a.nargs, a.metavar if metavar else None) == (nargs, metavar), dest
    (budget,) = parser._mutually_exclusive_groups
    assert budget.required and [a.dest for a in budget._group_actions] == ["macs", "params", "dims"]
    # The defaults live in the signature only: argparse leaves every option None until given.
    assert all(a.default is None for a in actions.values())
    assert typing.get_args(typing.get_type_hints(extract_job)["mode"]) == MODES


def test_slim_extract_help_names_the_budget_group(capsys):
    with pytest.raises(SystemExit):
        main(["slim", "extract", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exactly one of --macs, --params, --dims is required" in text
    assert "--dims TYPE=SHARE [TYPE=SHARE ...]" in text and "{share,joint}" in text


@pytest.mark.parametrize(
    "budget, message",
    [([], "one of the arguments --macs --params --dims is required"),
     (["--macs", "0.5", "--dims", "attn=0.7"], "not allowed with argument"),
     (["--macs", "0.5", "--params", "0.5"], "not allowed with argument")],
    ids=["none", "macs-and-dims", "macs-and-params"],
)
def test_slim_extract_takes_exactly_one_budget(budget, message, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["slim", "extract", "--search", str(tmp_path / "search"), *budget, "-o", str(out)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()


def test_slim_extract_budget_is_checked_for_library_callers_too():
    from vitcompress.jobs.slim import extract_job

    with pytest.raises(VitCompressError, match=r"exactly one of --macs, --params, --dims \(got none\)"):
        job_kwargs(extract_job, {}, {"search": "s", "out": "o"})
    with pytest.raises(VitCompressError, match="got --macs and --dims"):
        job_kwargs(extract_job, {}, {"search": "s", "out": "o", "macs": 0.5, "dims": ["attn=0.5"]})
    kwargs = job_kwargs(extract_job, {}, {"search": "s", "out": "o", "dims": ["attn=0.7", "mlp=1"]})
    assert kwargs == {"search": "s", "out": "o", "dims": {"attn": 0.7, "mlp": 1.0}}


@pytest.mark.parametrize("item", ["attn", "attn=", "=0.5", "attn=big"])
def test_slim_extract_bad_dims_item_is_one_line(item, tmp_path, capsys):
    out = tmp_path / "out"  # the items are parsed before the search is read: no search needed
    assert main(["slim", "extract", "--search", str(tmp_path / "search"), "--dims", "mlp=0.5", item,
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"vitcompress: error: --dims {item!r} is not TYPE=SHARE; write e.g. --dims attn=0.7 mlp=0.7"
    assert not out.exists()


def test_slim_extract_requires_search_and_out(tmp_path, capsys):
    for argv, flag in ((["-o", str(tmp_path / "o")], "--search"), (["--search", str(tmp_path)], "-o/--out")):
        with pytest.raises(SystemExit):
            main(["slim", "extract", "--macs", "0.5", *argv])
        assert f"the following arguments are required: {flag}" in capsys.readouterr().err


def _toy_job(
    out: str,
    a: Annotated[int | None, Arg(one_of="pick")] = None,
    b: Annotated[int | None, Arg(one_of="pick")] = None,
    weights: dict[str, int] | None = None,
) -> None:
    """A job with a one-of group, for the generic behaviour.

    Args:
        out: Output.
        a: First choice.
        b: Second choice.
        weights: Integer weights by name.
    """


def test_one_of_group_with_a_recipe():
    # A recipe may name the choice; a flag of the group replaces the recipe's choice instead of conflicting.
    assert job_kwargs(_toy_job, {"a": 1}, {"out": "o"}) == {"out": "o", "a": 1}
    assert job_kwargs(_toy_job, {"a": 1}, {"out": "o", "b": 2}) == {"out": "o", "b": 2}
    with pytest.raises(VitCompressError, match="exactly one of --a, --b"):
        job_kwargs(_toy_job, {"a": 1, "b": 2}, {"out": "o"})
    with pytest.raises(VitCompressError, match="got none"):
        job_kwargs(_toy_job, {"a": None}, {"out": "o"})  # a YAML null is no choice
    # With a recipe, argparse cannot know the group is satisfied: job_kwargs checks it after the merge.
    parser = argparse.ArgumentParser()
    add_job_args(parser, _toy_job, recipe=True)
    (group,) = parser._mutually_exclusive_groups
    assert not group.required and not next(a for a in parser._actions if a.dest == "out").required
    with pytest.raises(SystemExit):
        parser.parse_args(["--a", "1", "--b", "2"])


def test_typed_mapping_items():
    assert job_kwargs(_toy_job, {}, {"out": "o", "a": 1, "weights": ["x=2", "y = 3"]})["weights"] == {"x": 2, "y": 3}
    with pytest.raises(VitCompressError, match=r"--weights 'x=0.5' is not KEY=VALUE; write KEY=VALUE items with int"):
        job_kwargs(_toy_job, {}, {"out": "o", "a": 1, "weights": ["x=0.5"]})
    # An untyped mapping keeps YAML scalars (model_args), and a recipe's mapping is taken as it is.
    kwargs = job_kwargs(job_of("eval"), {}, {"model": "m", "model_args": ["depth=2", "qk_norm=true"]})
    assert kwargs["model"].model_args == {"depth": 2, "qk_norm": True}
    assert job_kwargs(_toy_job, {"weights": {"x": 2}}, {"out": "o", "a": 1})["weights"] == {"x": 2}


def test_none_unsets_an_optional_option(capsys):
    parser = _subparser("train")
    fn = job_of("train")

    def train_cfg(argv, recipe=None):
        args = parser.parse_args(["--model", "m", "-o", "o", *argv])
        return job_kwargs(fn, recipe or {}, given_args(fn, args))

    assert train_cfg([])["train"].clip_grad == vc.TrainConfig().clip_grad == 5.0
    assert train_cfg(["--clip-grad", "none"])["train"].clip_grad is None
    assert train_cfg(["--clip-grad", "NULL"], {"clip_grad": 1.0})["train"].clip_grad is None  # flag over recipe
    assert train_cfg(["--clip-grad", "2"])["train"].clip_grad == 2.0
    assert train_cfg(["--scale", "none"], {"scale": [0.5, 1.0]})["aug"].scale is None  # a list option
    assert train_cfg(["--model-args", "none"], {"model_args": {"depth": 2}})["model"].model_args is None
    with pytest.raises(VitCompressError, match="give none alone"):
        train_cfg(["--scale", "0.5", "none"])
    with pytest.raises(SystemExit):  # lr is a float, never None: none is no value for it
        parser.parse_args(["--model", "m", "--lr", "none"])
    assert "invalid float value: 'none'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--clip-grad", "big"])
    assert "invalid float value: 'big'" in capsys.readouterr().err
    help_text = " ".join(parser.format_help().split())
    assert "(default: 5.0; none to unset)" in help_text


def test_none_for_an_optional_choice():
    def job(out: str, kind: typing.Literal["a", "b"] | None = "a") -> None:
        """Toy.

        Args:
            out: Output.
            kind: A kind.
        """

    parser = argparse.ArgumentParser()
    add_job_args(parser, job, recipe=False)
    assert given_args(job, parser.parse_args(["--out", "o", "--kind", "none"])) == {"out": "o", "kind": None}
    assert given_args(job, parser.parse_args(["--out", "o", "--kind", "b"]))["kind"] == "b"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "--kind", "c"])
    assert "{a,b,none}" in parser.format_help()
