"""MiniViT ablation on the built-in `digits` data, driven through the real `vitcompress` CLI.

A 12-layer teacher is trained once with `vitcompress train`; students with `share=2` are multiplexed from it and
trained for the same epochs over several seeds in three variants:

    naive       plain sharing: no weight transforms, no distillation (CE only)
    transforms  attention + MLP transforms, no distillation
    full        the `digits-multiplex` recipe as shipped (transforms + weight distillation)

Top-1/top-5 come from each run's report.json; params, MACs and CPU latency (batch 1 and 32, fixed threads) are
measured here on the saved models after all training, interleaving the models over several rounds so that load
from other processes spreads over all of them rather than hitting one. Writes the `multiplex-digits` section of
BENCHMARKS.md.

    python benchmarks/multiplex_digits.py            # full benchmark (tens of minutes on 2 CPU cores)
    python benchmarks/multiplex_digits.py --quick    # 2 epochs, 1 seed: checks the script, not the method
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _report
from _measure import LATENCY_BATCHES, key, measure_models, saved_models, spread
from _report import mean_std
from _runs import epoch_flags, recipe_value, run_cli

ROOT = Path(__file__).resolve().parent.parent
SECTION = "multiplex-digits"
TEACHER_RECIPE = "digits-teacher"
STUDENT_RECIPE = "digits-multiplex"
# name -> (label in the table, extra `vitcompress multiplex` flags)
VARIANTS = {
    "naive": ("(b) naive sharing (no transforms, no KD)", ["--no-attn-transform", "--no-mlp-transform", "--no-kd"]),
    "transforms": ("(c) transforms, no KD", ["--no-kd"]),
    "full": ("(d) full method (transforms + KD)", []),
    # Not a student: the teacher itself trained for the students' epochs too. Every student starts from the
    # teacher and trains further, so this row separates what sharing costs from what the extra training gives.
    "teacher_more": ("(a') teacher + the students' epochs (equal training, no sharing)", None),
}
TEACHER_LABEL = "(a) teacher (12 layers, 1 run)"


# ----------------------------------------------------------------------------------------------- training runs


def teacher_argv(work: Path, epochs: int | None) -> list[str]:
    return ["train", "--config", TEACHER_RECIPE, "--seed", "0", "-o", str(work / "teacher"), "--no-progress",
            *epoch_flags(TEACHER_RECIPE, epochs)]


def student_argv(work: Path, variant: str, seed: int, epochs: int | None) -> list[str]:
    if VARIANTS[variant][1] is None:  # the teacher, trained on with the students' schedule
        from vitcompress.cli_args import load_recipe

        recipe = load_recipe(STUDENT_RECIPE)
        schedule = [f"--{k.replace('_', '-')}" if i % 2 == 0 else str(recipe[k])
                    for k in ("lr", "weight_decay", "warmup_epochs", "clip_grad", "batch_size") for i in range(2)]
        return ["train", "--model", str(work / "teacher"), "--data", recipe["data"], *schedule, "--seed", str(seed),
                "-o", str(work / variant / f"seed{seed}"), "--no-progress",
                *(epoch_flags(STUDENT_RECIPE, epochs) or ["--epochs", str(recipe["epochs"])])]
    return ["multiplex", "--teacher", str(work / "teacher"), "--config", STUDENT_RECIPE, "--seed", str(seed),
            "-o", str(work / variant / f"seed{seed}"), "--no-progress", *VARIANTS[variant][1],
            *epoch_flags(STUDENT_RECIPE, epochs)]


def train_all(work: Path, seeds: list[int], epochs: int | None, teacher_epochs: int | None,
              force: bool, threads: int) -> dict[str, Any]:
    """Teacher, then every variant x seed; returns the commands and wall times of every run."""
    runs: dict[str, Any] = {}
    argv = teacher_argv(work, teacher_epochs)
    print("teacher", flush=True)
    seconds, retrained = run_cli(argv, work / "teacher", work / "logs" / "teacher.log", force, threads)
    runs["teacher"] = {"argv": argv, "seconds": seconds, "ran": retrained, "dir": work / "teacher"}
    for variant in VARIANTS:
        for seed in seeds:
            name = f"{variant}/seed{seed}"
            print(name, flush=True)
            argv = student_argv(work, variant, seed, epochs)
            # A retrained teacher invalidates every student distilled or initialised from the old one.
            log = work / "logs" / f"{variant}-seed{seed}.log"
            seconds, ran = run_cli(argv, work / name, log, force or retrained, threads)
            runs[name] = {"argv": argv, "seconds": seconds, "ran": ran, "dir": work / name}
    return runs


# ------------------------------------------------------------------------------------------------ measurements


def read_accuracy(runs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """top-1/top-5 (%) of every run from its report.json, checking each student saw the same teacher score."""
    teacher = json.loads((runs["teacher"]["dir"] / "report.json").read_text())["model"]
    acc = {"teacher": {"top1": teacher["top-1 (%)"], "top5": teacher["top-5 (%)"]}}
    for name, run in runs.items():
        if name == "teacher":
            continue
        report = json.loads((run["dir"] / "report.json").read_text())
        if "model" in report:  # a `vitcompress train` run (the teacher trained on): no student/teacher pair
            acc[name] = {"top1": report["model"]["top-1 (%)"], "top5": report["model"]["top-5 (%)"]}
            continue
        seen = report["teacher"]["top-1 (%)"]
        if abs(seen - teacher["top-1 (%)"]) > 1e-6:
            print(f"WARNING: {name} evaluated the teacher at {seen:.2f}% top-1, its own run at "
                  f"{teacher['top-1 (%)']:.2f}%", flush=True)
        acc[name] = {"top1": report["student"]["top-1 (%)"], "top5": report["student"]["top-5 (%)"]}
    return acc


# ------------------------------------------------------------------------------------------------------ report


def latency_cell(samples: list[float]) -> str:
    return f"{statistics.median(samples):.2f} [{min(samples):.2f}–{max(samples):.2f}]"


def group_names(variant: str, seeds: list[int]) -> list[str]:
    return ["teacher"] if variant == "teacher" else [f"{variant}/seed{s}" for s in seeds]


def variant_models(seeds: list[int], meas: dict) -> list[tuple[str, str, list[str], list[dict]]]:
    """(variant, label, run names, their measurements) for the teacher and every variant."""
    out = []
    for variant, label in [("teacher", TEACHER_LABEL), *((v, lab) for v, (lab, _) in VARIANTS.items())]:
        names = group_names(variant, seeds)
        out.append((variant, label, names, [meas["models"][n] for n in names]))
    return out


def summary_rows(seeds: list[int], acc: dict, meas: dict, threads: int) -> list[dict[str, str]]:
    rows = []
    for variant, label, names, models in variant_models(seeds, meas):
        if len({(m["params"], m["macs"]) for m in models}) != 1:
            raise SystemExit(f"{variant}: seeds differ in params/MACs; the variants should share one architecture")
        rows.append({
            "variant": label,
            "top-1 (%)": mean_std([acc[n]["top1"] for n in names]),
            "top-5 (%)": mean_std([acc[n]["top5"] for n in names]),
            "params (M)": f"{models[0]['params'] / 1e6:.3f}",
            "MACs (M)": f"{models[0]['macs'] / 1e6:.3f}",
            **{f"latency b{b} (ms)": latency_cell([x for m in models for x in m[key(b, threads)]])
               for b in LATENCY_BATCHES},
        })
    return rows


def latency_rows(seeds: list[int], meas: dict, threads: int) -> list[dict[str, str]]:
    return [{"variant": label, **{f"latency b{b} (ms)": latency_cell([x for m in models for x in m[key(b, threads)]])
                                  for b in LATENCY_BATCHES}}
            for _, label, _, models in variant_models(seeds, meas)]


def targets(seeds: list[int], acc: dict) -> list[str]:
    teacher = acc["teacher"]["top1"]
    full = statistics.mean(acc[n]["top1"] for n in group_names("full", seeds))
    naive = statistics.mean(acc[n]["top1"] for n in group_names("naive", seeds))
    met = lambda ok: "**met**" if ok else "**NOT met**"
    return [
        f"- Full method ≥ teacher top-1: {met(full >= teacher)} — full {full:.2f}% (mean of {len(seeds)} seed(s)) "
        f"vs teacher {teacher:.2f}% ({full - teacher:+.2f} points).",
        f"- Full method ≥ naive sharing + 2 points: {met(full - naive >= 2.0)} — full {full:.2f}% vs naive "
        f"{naive:.2f}% ({full - naive:+.2f} points)."
        + (f" No student can reach it here: naive sharing is already within 2 points of 100% ({naive:.2f}%)."
           if naive + 2.0 > 100.0 else ""),
    ]


def spread_warning(meas: dict, threads: list[int], limit: float = 3.0) -> list[str]:
    """A warning when the main table's per-round latencies differ so much that they time the contention."""
    ratio = spread(meas, threads[0])
    if ratio < limit:
        return []
    steadiest = min(threads, key=lambda t: spread(meas, t))
    advice = (f"; the {steadiest}-thread table (spread up to {spread(meas, steadiest):.1f}×) is the one to compare "
              "models with" if steadiest != threads[0] else "")
    return [f"**Caution:** at {threads[0]} threads the same model's per-round latency varied up to {ratio:.0f}× "
            "between rounds (per-run table below), so these cells time the contention from other processes more "
            f"than the models{advice}.", ""]


def per_run_table(runs: dict, acc: dict, meas: dict, threads: list[int]) -> str:
    from vitcompress.report import markdown_table

    rows = [{"run": name, "top-1 (%)": f"{acc[name]['top1']:.2f}", "top-5 (%)": f"{acc[name]['top5']:.2f}",
             **{f"b{b} {t}T per round (ms)": " ".join(f"{x:.2f}" for x in meas["models"][name][key(b, t)])
                for t in threads for b in LATENCY_BATCHES},
             "train wall (s)": f"{runs[name]['seconds']:.0f}"} for name in runs]
    return markdown_table(rows)


def render(args: argparse.Namespace, command: str, runs: dict, acc: dict, meas: dict, total_s: float) -> str:
    from vitcompress.report import markdown_table

    seeds, main_threads = args.seeds, args.threads[0]
    epochs = args.epochs or recipe_value(STUDENT_RECIPE, "epochs")
    teacher_epochs = args.teacher_epochs or recipe_value(TEACHER_RECIPE, "epochs")
    lb, la = meas["load_before"], meas["load_after"]
    train_s = sum(r["seconds"] for r in runs.values())
    reused = sum(not r["ran"] for r in runs.values())
    firsts = ["teacher", *(f"{v}/seed{seeds[0]}" for v in VARIANTS)]
    extra_tables = []
    for t in args.threads[1:]:
        extra_tables += [f"Latency at {t} thread(s), same models and rounds:", "",
                         markdown_table(latency_rows(seeds, meas, t)), ""]
    return "\n".join([
        *_report.heading(f"## MiniViT weight multiplexing on `digits` (share=2, {epochs} student epochs)", command,
                         args.quick),
        f"Teacher: `vitcompress train --config {TEACHER_RECIPE}` ({teacher_epochs} epochs, seed 0, one run). "
        f"Students: `vitcompress multiplex --config {STUDENT_RECIPE}` from that teacher, {epochs} epochs each, "
        f"seeds {', '.join(map(str, seeds))}; top-1/top-5 on the 360 fixed `digits` val images (1 image = 0.28 "
        "points), mean ± sample std over seeds. Params count shared weights once; MACs per image, attention "
        f"matmuls included. Every training run used {args.train_threads} torch thread(s) (OMP_NUM_THREADS).",
        "",
        markdown_table(summary_rows(seeds, acc, meas, main_threads)),
        "",
        *spread_warning(meas, args.threads),
        "Latency: `vitcompress.metrics.measure_latency` on the saved models (`vitcompress.load`), CPU, "
        f"**{main_threads} threads** in the table above, batch 1 and batch 32 (ms per forward of the whole batch), "
        f"measured after all training in {args.rounds} round(s) over all {len(runs)} models in shuffled order; a cell "
        "is the median of the per-round medians over rounds and seeds, [min–max] of them. The machine is shared: "
        f"load average (1/5/15 min) {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before the latency runs and "
        f"{la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} after, on {_report.usable_cores()} cores. When the load exceeds the "
        "cores, torch's threads spin-wait for each other while descheduled, so multi-thread times can be many "
        "times the single-thread ones; compare rows, not absolute values.",
        "",
        *extra_tables,
        "Targets (from the product issue):",
        "",
        *targets(seeds, acc),
        "",
        f"Wall time: {train_s / 60:.1f} min of training over the {len(runs)} runs (each run's time is in the table "
        f"below); this invocation took {total_s / 60:.1f} min"
        + (f", reusing {reused} finished run(s) from an earlier one." if reused else "."),
        "",
        *_report.details("The CLI commands (first seed shown) and every run",
                         [f"OMP_NUM_THREADS={args.train_threads} vitcompress {shlex.join(runs[n]['argv'])}"
                          for n in firsts],
                         per_run_table(runs, acc, meas, args.threads)),
    ])


# -------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: 2 epochs, seed 0, 2 latency rounds")
    p.add_argument("--epochs", type=int, help="student epochs (default: the digits-multiplex recipe's)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: the digits-teacher recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default: 0 1 2)")
    p.add_argument("--work", type=Path, help="run directory, relative to the repo root "
                                             "(default: out/bench-multiplex[-quick])")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: <work>/BENCHMARKS.md)")
    p.add_argument("--rounds", type=int, help="latency rounds over all models (default: 5; --quick: 2)")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch CPU threads for the latency runs; the first goes in the main table (default: 2 1)")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch CPU threads of each training run (default: 1, since threads that spin-wait for each "
                        "other slow training many times over on a busy machine; the thread count changes results only "
                        "through float rounding)")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds timed per latency measurement")
    p.add_argument("--force", action="store_true", help="retrain even where an identical finished run exists")
    p.add_argument("--section", default=SECTION, help=f"BENCHMARKS.md section to write (default: {SECTION})")
    args = p.parse_args(argv)
    quick = args.quick
    args.epochs = args.epochs or (2 if quick else None)
    args.teacher_epochs = args.teacher_epochs or (2 if quick else None)
    args.seeds = args.seeds or ([0] if quick else [0, 1, 2])
    args.work = args.work or Path("out/bench-multiplex-quick" if quick else "out/bench-multiplex")
    args.md = args.md or (args.work / "BENCHMARKS.md" if quick else Path("BENCHMARKS.md"))
    args.rounds = args.rounds or (2 if quick else 5)
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    os.chdir(ROOT)  # relative paths (work dir, BENCHMARKS.md, the commands written there) are from the repo root
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["python", "benchmarks/multiplex_digits.py", *raw])
    runs = train_all(args.work, args.seeds, args.epochs, args.teacher_epochs, args.force, args.train_threads)
    acc = read_accuracy(runs)
    meas = measure_models(saved_models({name: run["dir"] for name, run in runs.items()}), args.rounds, args.threads,
                          args.min_run_time)
    body = render(args, command, runs, acc, meas, time.perf_counter() - start)
    (args.work / "results.json").write_text(json.dumps(
        {"accuracy": acc, "measurements": meas, "runs": {k: {**v, "dir": str(v["dir"])} for k, v in runs.items()}},
        indent=2))
    _report.publish(args.md, args.section, body)


if __name__ == "__main__":
    main()
