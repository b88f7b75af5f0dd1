"""`vitcompress demo`: the whole MiniViT story on the built-in digits data, on a laptop CPU in minutes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from vitcompress.cli_args import load_recipe
from vitcompress.jobs.multiplex import multiplex_job
from vitcompress.jobs.train import train_job
from vitcompress.multiplexing.config import MultiplexConfig
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.report import markdown_table
from vitcompress.train import TrainConfig

JOB_KEYS = ("data", "batch_size", "model_args")


def _split(recipe: dict[str, Any], *classes) -> list[Any]:
    import dataclasses

    return [cls.from_dict({k: v for k, v in recipe.items() if k in {f.name for f in dataclasses.fields(cls)}})
            for cls in classes]


def demo_job(
    out: str | Path = "out/demo",
    teacher_epochs: int | None = None,
    student_epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the `digits-teacher` recipe, multiplex it with `digits-multiplex`, print teacher vs student."""
    out = Path(out)
    for stale in (out / "teacher", out / "student"):
        # A re-run of the demo starts over; only directories that hold an earlier demo's outputs are removed.
        if (stale / "metrics.jsonl").exists() or (stale / "spec.json").exists():
            shutil.rmtree(stale)
    t_recipe, s_recipe = load_recipe("digits-teacher"), load_recipe("digits-multiplex")
    for recipe, epochs in ((t_recipe, teacher_epochs), (s_recipe, student_epochs)):
        if epochs:
            recipe["epochs"] = epochs
            if recipe.get("warmup_epochs", 0) > epochs:  # a short trial run: the recipe's warmup would not fit
                recipe["warmup_epochs"] = epochs / 2
    (t_train,) = _split(t_recipe, TrainConfig)
    print(f"[1/2] training the teacher ({t_recipe['model']}, {t_recipe['model_args']}) on digits")
    train_job(t_recipe["model"], t_recipe["data"], out / "teacher", t_train, model_args=t_recipe["model_args"],
              batch_size=t_recipe["batch_size"], progress=progress)
    config, distill, s_train = _split(s_recipe, MultiplexConfig, DistillConfig, TrainConfig)
    print(f"[2/2] multiplexing it (share={config.share}) and distilling the student")
    report = multiplex_job(str(out / "teacher"), s_recipe["data"], out / "student", config, distill, s_train,
                           batch_size=s_recipe["batch_size"], progress=progress)
    print()
    print(markdown_table([report["teacher"], report["student"]]))
    print(f"\nmodels and reports: {out / 'teacher'}, {out / 'student'} (vitcompress.load(dir) reads either)")
    return report
