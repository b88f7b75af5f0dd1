"""`vitcompress demo`: the whole MiniViT story on the built-in digits data, on a laptop CPU in minutes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from vitcompress.cli_args import job_kwargs, load_recipe
from vitcompress.jobs.multiplex import multiplex_job
from vitcompress.jobs.train import train_job
from vitcompress.report import markdown_table

TEACHER_RECIPE, STUDENT_RECIPE = "digits-teacher", "digits-multiplex"


def _recipe(name: str, epochs: int | None) -> dict[str, Any]:
    recipe = load_recipe(name)
    if epochs:
        recipe["epochs"] = epochs
        if recipe.get("warmup_epochs", 0) > epochs:  # a short trial run: the recipe's warmup would not fit
            recipe["warmup_epochs"] = epochs / 2
    return recipe


def demo_job(
    out: str = "out/demo",
    teacher_epochs: int | None = None,
    student_epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the digits-teacher recipe, multiplex it with digits-multiplex, print teacher vs student.

    Args:
        out: Output directory; the teacher and the student go to <out>/teacher and <out>/student.
        teacher_epochs: Override the teacher recipe's epochs.
        student_epochs: Override the student recipe's epochs.
        progress: Show a progress bar.
    """
    out = Path(out)
    # Both recipes are validated as strictly as `--config` is, before anything is written.
    teacher = job_kwargs(train_job, _recipe(TEACHER_RECIPE, teacher_epochs),
                         {"out": str(out / "teacher"), "progress": progress}, where=f"recipe {TEACHER_RECIPE}")
    student = job_kwargs(multiplex_job, _recipe(STUDENT_RECIPE, student_epochs),
                         {"teacher": str(out / "teacher"), "out": str(out / "student"), "progress": progress},
                         where=f"recipe {STUDENT_RECIPE}")
    for stale in (out / "teacher", out / "student"):
        # A re-run of the demo starts over; only directories that hold an earlier demo's outputs are removed.
        if (stale / "metrics.jsonl").exists() or (stale / "spec.json").exists():
            shutil.rmtree(stale)
    source = teacher["model"]
    print(f"[1/2] training the teacher ({source.model}, {source.model_args}) on digits")
    train_job(**teacher)
    print(f"[2/2] multiplexing it (share={student['config'].share}) and distilling the student")
    report = multiplex_job(**student)
    print()
    print(markdown_table([report["teacher"], report["student"]]))
    print(f"\nmodels and reports: {out / 'teacher'}, {out / 'student'} (vitcompress.load(dir) reads either)")
    return report
