"""The CLI is derived from the job signatures: flags, docs, defaults and strict recipes all come from one place."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest
import yaml

import vitcompress as vc
from vitcompress.cli import COMMANDS, TRAINING, build_parser, job_of, main
from vitcompress.cli_args import job_kwargs, job_params

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "128", "--no-progress"]
MODEL_FLAG = {"train": "--model", "multiplex": "--teacher", "slim search": "--model", "finetune": "--model"}


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
            assert option.flag in text, option.flag
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
    from vitcompress.cli_args import given_args

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
