"""The CLI end to end on a tiny model, and its one-line errors for bad input (nothing written)."""

from __future__ import annotations

import json

import pytest
import torch

import vitcompress as vc
from vitcompress.cli import main

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=4", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "128", "--no-progress"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "teacher"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "--data", "digits", "-o", str(out), *FAST]) == 0
    return out


def test_train_writes_loadable_model_and_report(teacher_dir):
    report = json.loads((teacher_dir / "report.json").read_text())
    assert {"model", "val", "epochs"} <= set(report)
    model = vc.load(teacher_dir)
    assert model.num_classes == 10
    assert (teacher_dir / "metrics.jsonl").is_file() and (teacher_dir / "metrics.csv").is_file()


def test_train_with_the_same_seed_is_reproducible(teacher_dir, tmp_path):
    # The weights of a model trained from scratch start from torch's global generator, which torch seeds
    # differently in every process; the job must seed it from --seed before building the model.
    again = tmp_path / "again"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "--data", "digits", "-o", str(again), *FAST]) == 0
    for name, value in vc.load(teacher_dir).state_dict().items():
        assert torch.equal(vc.load(again).state_dict()[name], value), name
    other = tmp_path / "other"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "--data", "digits", "--seed", "1", "-o",
                 str(other), *FAST]) == 0
    assert not torch.equal(vc.load(other).state_dict()["head.weight"], vc.load(teacher_dir).state_dict()["head.weight"])


def test_multiplex_eval_profile(teacher_dir, tmp_path, capsys):
    out = tmp_path / "student"
    args = ["multiplex", "--teacher", str(teacher_dir), "--share", "2", "--kernel-size", "3",
            "--attn-layers", "all", "--hidden-layers", "all", "-o", str(out), *FAST]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["params (M)"] < report["teacher"]["params (M)"]
    epoch = report["epochs"][-1]
    for key in ("ce", "kd_logits", "kd_attn", "kd_hidden"):
        assert torch.isfinite(torch.tensor(epoch[key])), key
    student = vc.load(out)
    assert sum(p.numel() for p in student.parameters()) == vc.count_params(student)

    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", "digits"]) == 0
    assert "top1" in capsys.readouterr().out
    assert main(["profile", "--model", str(out)]) == 0
    assert "MACs" in capsys.readouterr().out


def test_no_kd_ablation_logs_only_ce(teacher_dir, tmp_path):
    out = tmp_path / "naive"
    args = ["multiplex", "--teacher", str(teacher_dir), "--no-attn-transform", "--no-mlp-transform", "--no-kd",
            "-o", str(out), *FAST]
    assert main(args) == 0
    epoch = json.loads((out / "report.json").read_text())["epochs"][-1]
    assert "ce" in epoch and "kd_logits" not in epoch and "kd_attn" not in epoch


def test_recipes_validate():
    """Every shipped recipe parses strictly into the job of the command it is for (`recipe_command`)."""
    from pathlib import Path

    from vitcompress.cli import job_of
    from vitcompress.cli_args import job_kwargs, load_recipe

    recipes = sorted((Path(vc.__file__).parent / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        command = recipe_command(path.stem)
        kwargs = job_kwargs(job_of(command), load_recipe(path.stem), {"out": "o", "teacher": "t", "model": "m"}
                            if command != "train" else {"out": "o"})
        assert kwargs["train"].epochs >= 1, path.stem


def recipe_command(name: str) -> str:
    """The command a shipped recipe is for, by its name's last part."""
    for part, command in (("-teacher", "train"), ("-multiplex", "multiplex"), ("-slim", "slim search"),
                          ("-search", "slim search"), ("-retrain", "finetune"), ("-mini-", "multiplex")):
        if name.endswith(part) or (part == "-mini-" and part in name):
            return command
    raise AssertionError(f"recipe {name}: name it <...>-teacher|-multiplex|-slim|-search|-retrain or map it here")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "vit_tiny_patch16_225", "--data", "digits"], "unknown timm model"),
        (["train", "--model", "vit_tiny_patch16_224", *TINY, "--data", "/no/such/dir"], "does not exist"),
        (["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "--share", "0"], "share=0"),
        (["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "--share", "5"], "larger than"),
        (["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "--groups", "[[0,1],[3]]"], "in no group"),
        (["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "--groups", "[[0,1],[1,2,3]]"], "appears in"),
        (["multiplex", "--teacher", "no/such/teacher"], "does not exist"),
        (["train", "--model", "vit_tiny_patch16_224", *TINY, "--lr", "-1"], "lr=-1"),
        (["multiplex", "--teacher", "vit_tiny_patch16_224", *TINY, "--config", "no-such-recipe"], "recipe"),
    ],
    ids=["unknown-model", "missing-data", "share-0", "share-gt-depth", "groups-skip", "groups-repeat",
         "missing-teacher", "bad-lr", "unknown-recipe"],
)
def test_bad_input_one_line_error_nothing_written(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not out.exists()


def test_profile_wrong_input_size(capsys):
    assert main(["profile", "--model", "vit_tiny_patch16_224", *TINY, "--input-size", "3", "32", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "input_size" in err and "(3, 16, 16)" in err and err.count("\n") == 0


def test_teacher_with_wrong_classes_is_refused(tmp_path, capsys):
    args = ["multiplex", "--teacher", "vit_tiny_patch16_224", "--model-args", "img_size=16", "patch_size=4",
            "embed_dim=32", "depth=2", "num_heads=2", "-o", str(tmp_path / "o"), *FAST]
    assert main(args) == 2
    assert "1000 classes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_runs_end_to_end(tmp_path, capsys):
    # The README's main command, shortened to one epoch per model.
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--teacher-epochs", "1", "--student-epochs", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[2/2]" in printed and "student" in printed
    student = vc.load(out / "student")
    assert vc.count_params(student) < vc.count_params(vc.load(out / "teacher"))
