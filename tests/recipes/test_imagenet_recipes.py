"""Every shipped recipe runs: the ImageNet recipes of both papers, a few steps each, with tiny overrides of model
size, image size and data (the recipe's own augmentation, schedule and loss settings stay as shipped)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm

import vitcompress as vc
from vitcompress.cli import main
from vitcompress.cli_args import load_recipe

RECIPES = Path(vc.__file__).parent / "recipes"
VIT = ["img_size=16", "patch_size=4", "embed_dim=32", "depth=4", "num_heads=2", "num_classes=10"]
SWIN = ["img_size=16", "patch_size=2", "embed_dim=16", "num_heads=[1,2,4,8]", "window_size=4", "num_classes=10"]
SWIN_T, SWIN_24 = ["depths=[2,2,6,2]"], ["depths=[2,2,18,2]"]  # Swin-T's 12 layers; Swin-S/B's 24
# The data and what a 2-core machine can run in seconds: one short epoch on digits, one worker-free process.
SMALL = ["--data", "digits", "--batch-size", "128", "--workers", "0", "--epochs", "1", "--warmup-epochs", "0",
         "--no-progress", "--checkpoint-every-minutes", "60"]
pytestmark = pytest.mark.slow


def _saved(tmp_path_factory, name: str, arch: str, args: list[str]) -> str:
    kwargs = {k: json.loads(v) for k, v in (a.split("=") for a in args)}
    out = tmp_path_factory.mktemp(name)
    vc.save(timm.create_model(arch, pretrained=False, **kwargs), out)
    return str(out)


def _overrides(recipe: str, tmp_path_factory) -> list[str]:
    swin = "swin" in recipe
    arch = "swin_tiny_patch4_window7_224" if swin else "vit_tiny_patch16_224"
    model_args = [*SWIN, *(SWIN_T if recipe.endswith(("swin-t", "swin-t-search", "swin-t-retrain")) else SWIN_24)] \
        if swin else VIT
    if "-mini-" in recipe:
        kd = ["--kd-teacher", arch, "--no-kd-teacher-pretrained", "--kd-teacher-args", *SWIN, *SWIN_24] if swin else \
             ["--kd-teacher", "resnet18", "--no-kd-teacher-pretrained", "--kd-teacher-args", "num_classes=10"]
        return ["multiplex", "--teacher", arch, "--no-pretrained", "--model-args", *model_args, *kd,
                "--kernel-size", "3"]
    if recipe.endswith("-search"):
        return ["slim", "search", "--model", arch, "--no-pretrained", "--model-args", *model_args]
    return ["finetune", "--model", _saved(tmp_path_factory, recipe, arch, model_args)]


IMAGENET = sorted(p.stem for p in RECIPES.glob("imagenet-*.yaml"))


def test_both_papers_recipes_are_shipped():
    assert IMAGENET == sorted([
        *(f"imagenet-mini-{m}" for m in ("deit-ti", "deit-s", "deit-b", "swin-t", "swin-s", "swin-b")),
        *(f"imagenet-slim-{m}-{s}" for m in ("deit-s", "swin-t") for s in ("search", "retrain")),
    ])
    for name in IMAGENET:
        text = (RECIPES / f"{name}.yaml").read_text()
        assert "CVPR 2022, Sec." in text.splitlines()[0]  # each cites what it follows
        recipe = load_recipe(name)
        assert recipe["epochs"] in (50, 300) and recipe["aa"] == "rand-m9-mstd0.5-inc1"


@pytest.mark.parametrize("recipe", IMAGENET)
def test_shipped_recipe_runs_a_few_steps(recipe, tmp_path, tmp_path_factory, capsys):
    out = tmp_path / "run"
    code = main([*_overrides(recipe, tmp_path_factory), "--config", recipe, *SMALL, "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    epoch = report["epochs"][-1]
    assert epoch["loss"] == epoch["loss"] and epoch["img_s"] > 0  # finite, measured
    saved = json.loads((out / "spec.json").read_text())["extra"]
    assert saved["augment"]["mixup"] == 0.8 and saved["augment"]["aa"] == "rand-m9-mstd0.5-inc1"
