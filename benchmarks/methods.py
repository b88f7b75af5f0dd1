"""Every method against its baselines on the built-in `cluttered-digits` data, over seeds: one runner, four suites.

    multiplex  MiniViT (share 2): the teacher; the teacher trained on for the students' epochs; naive sharing (no
               transforms, no KD); transforms without KD; the full method (transforms + weight distillation)
    slim       ViT-Slim (one search per seed, extracted at 80/60/40% MACs) vs Torch-Pruning (Taylor) vs the uniform
               ℓ1 cut, each at equal MACs and then fine-tuned by the same `vitcompress finetune` (logit KD)
    swin       a Swin teacher; Mini-Swin (full) vs naive sharing; Swin-Slim vs the uniform cut at 60% MACs
    combined   `vitcompress compress` (multiplex share 2 + slim to 60% MACs + KD fine-tune) vs Torch-Pruning at
               60% MACs (the slim suite's rows)

Every row of a suite gets the same training budget (epochs) after the teacher, and runs for every seed (the
teachers once, seed 0). Each run is a real `vitcompress` command (or, for the two pruning baselines, the cut done
here in-process and saved like an extracted model); a finished run with the same command is reused, so an
interrupted benchmark continues where it stopped. Afterwards every final model is loaded and scored here, the same
way for every row: top-1 on the 2,000 fixed val images, params and MACs (`vc.count_params` / `vc.count_macs`).
Writes one BENCHMARKS.md section per suite and the figures beside it (figures/*.png), never tuning per seed or
per method.

    python benchmarks/methods.py                         # every suite, 3 seeds (hours on 2 CPU cores)
    python benchmarks/methods.py --suites slim --jobs 2  # one suite, two runs at a time
    python benchmarks/methods.py --quick                 # tiny: checks the runner, not the methods
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _baselines
import _report
from _report import mean_std
from _runs import finished, run_cli

ROOT = Path(__file__).resolve().parent.parent
DATA = "cluttered-digits"
SUITES = ("multiplex", "slim", "swin", "combined")
SWIN_ARGS = ("img_size=32", "patch_size=4", "embed_dim=48", "depths=[2,2,4]", "num_heads=[2,4,8]", "window_size=4",
             "num_classes=10")
NAIVE = ["--no-attn-transform", "--no-mlp-transform", "--no-kd"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """Epochs of every kind of run; the rows of one suite share them."""

    teacher: int | None  # None: the teacher recipe's own
    student: int  # multiplexed students, and the teacher trained on beside them
    search: int  # ViT-Slim searches
    finetune: int  # every pruned or extracted model
    budgets: tuple[float, ...]  # MACs fractions of the slim suite
    vit: tuple[str, ...] = ()  # `--model-args` of the ViT teacher (empty: the recipe's)
    swin: tuple[str, ...] = SWIN_ARGS
    curve_points: int = 21  # budget-curve points of every search, each scored on the val split


FULL = Budget(teacher=None, student=6, search=6, finetune=6, budgets=(0.8, 0.6, 0.4))
# Tiny models and short curves: the quick mode checks the runner, in a few minutes on 2 cores.
QUICK = Budget(teacher=1, student=1, search=1, finetune=1, budgets=(0.6,),
               vit=("img_size=32", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"),
               swin=("img_size=32", "patch_size=4", "embed_dim=16", "depths=[2,2]", "num_heads=[1,2]",
                     "window_size=4", "num_classes=10"), curve_points=5)


@dataclasses.dataclass(frozen=True)
class Run:
    """One step of a row: a `vitcompress` command (`argv`), or an in-process cut (`cut`) writing a saved model."""

    out: Path
    argv: list[str] | None = None
    cut: Callable[[Path], dict[str, Any]] | None = None
    record: dict[str, Any] | None = None  # what identifies an in-process cut, for reuse


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a suite's table: the runs of one seed (the last one's directory holds the model)."""

    key: str
    label: str
    method: str  # the legend group in the figures
    runs: Callable[[int], list[Run]]
    seeded: bool = True  # False: one run (a teacher), whatever the seeds


# --------------------------------------------------------------------------------------------------- the suites


class Suites:
    """The rows of every suite, as commands on the paths of one work directory."""

    def __init__(self, work: Path, budget: Budget, taylor_batches: int) -> None:
        self.work, self.b, self.taylor_batches = work, budget, taylor_batches
        self.teacher, self.swin_teacher = work / "teacher", work / "swin-teacher"

    def _epochs(self, n: int | None) -> list[str]:
        return [] if n is None else ["--epochs", str(n), "--warmup-epochs", str(min(1, n / 2))]

    def teacher_run(self, seed: int = 0) -> list[Run]:
        model_args = ["--model-args", *self.b.vit] if self.b.vit else []
        return [Run(self.teacher, ["train", "--config", "cluttered-teacher", *model_args, "--seed", "0", "-o",
                                   str(self.teacher), "--no-progress", *self._epochs(self.b.teacher)])]

    def swin_teacher_run(self, seed: int = 0) -> list[Run]:
        return [Run(self.swin_teacher, ["train", "--config", "cluttered-teacher", "--model",
                                        "swin_tiny_patch4_window7_224", "--model-args", *self.b.swin, "--seed", "0",
                                        "-o", str(self.swin_teacher), "--no-progress",
                                        *self._epochs(self.b.teacher)])]

    def student(self, key: str, teacher: Path, flags: list[str], seed: int) -> Run:
        out = self.work / key / f"seed{seed}"
        return Run(out, ["multiplex", "--teacher", str(teacher), "--config", "digits-multiplex", "--data", DATA,
                         "--share", "2", "--seed", str(seed), "-o", str(out), "--no-progress", *flags,
                         *self._epochs(self.b.student)])

    def trained_on(self, seed: int) -> list[Run]:
        """The teacher trained further with the students' data, schedule and epochs, but no sharing."""
        out = self.work / "multiplex" / "teacher-more" / f"seed{seed}"
        return [Run(out, ["train", "--model", str(self.teacher), "--data", DATA, "--batch-size", "64", "--lr", "1e-3",
                          "--weight-decay", "0.05", "--clip-grad", "5", "--seed", str(seed), "-o", str(out),
                          "--no-progress", *self._epochs(self.b.student)])]

    def search(self, teacher: Path, key: str, seed: int) -> Run:
        out = self.work / key / f"search-seed{seed}"
        recipe = "digits-swin-slim" if teacher == self.swin_teacher else "digits-slim"
        points = ["--curve-points", str(self.b.curve_points)] if self.b.curve_points != FULL.curve_points else []
        return Run(out, ["slim", "search", "--model", str(teacher), "--config", recipe, "--data", DATA, "--seed",
                         str(seed), "-o", str(out), "--no-progress", *points, *self._epochs(self.b.search)])

    def finetune(self, model: Path, teacher: Path, seed: int) -> Run:
        out = model.parent / "finetuned"
        return Run(out, ["finetune", "--model", str(model), "--kd-teacher", str(teacher), "--kd-alpha", "0.5",
                         "--lr", "5e-4", "--data", DATA, "--seed", str(seed), "-o", str(out), "--no-progress",
                         *self._epochs(self.b.finetune)])

    def slimmed(self, teacher: Path, key: str, budget: float, seed: int) -> list[Run]:
        search = self.search(teacher, key.split("/")[0], seed)
        cut = self.work / key / f"seed{seed}" / "extracted"
        extract = Run(cut, ["slim", "extract", "--search", str(search.out), "--macs", str(budget), "-o", str(cut)])
        return [search, extract, self.finetune(cut, teacher, seed)]

    def baseline(self, teacher: Path, key: str, method: str, budget: float, seed: int) -> list[Run]:
        cut = self.work / key / f"seed{seed}" / "pruned"
        record = {"method": method, "budget": budget, "seed": seed, "teacher": str(teacher),
                  "taylor_batches": self.taylor_batches if method == "tp" else None}
        run = Run(cut, cut=lambda out: _baselines.prune_saved(teacher, out, method, budget, seed, DATA,
                                                              self.taylor_batches), record=record)
        return [run, self.finetune(cut, teacher, seed)]

    def compressed(self, seed: int) -> list[Run]:
        out = self.work / "combined" / "compress" / f"seed{seed}"
        argv = ["compress", "--teacher", str(self.teacher), "--share", "2", "--macs", "0.6", "--data", DATA,
                "--batch-size", "64", "--lr", "1e-3", "--seed", str(seed), "-o", str(out), "--no-progress",
                *self._epochs(self.b.finetune)]
        return [Run(out, argv)]

    def rows(self, suite: str) -> list[Row]:
        t, st = self.teacher, self.swin_teacher
        teacher = Row("teacher", "ViT teacher (1 run)", "teacher", self.teacher_run, seeded=False)
        if suite == "multiplex":
            return [
                teacher,
                Row("multiplex/teacher-more", "teacher + the students' epochs (no sharing)", "teacher",
                    self.trained_on),
                Row("multiplex/naive", "naive sharing (no transforms, no KD)", "naive sharing",
                    lambda s: [self.student("multiplex/naive", t, NAIVE, s)]),
                Row("multiplex/transforms", "transforms, no KD", "MiniViT",
                    lambda s: [self.student("multiplex/transforms", t, ["--no-kd"], s)]),
                Row("multiplex/full", "MiniViT (transforms + weight distillation)", "MiniViT",
                    lambda s: [self.student("multiplex/full", t, [], s)]),
            ]
        if suite == "slim":
            rows = [teacher]
            for b in self.b.budgets:
                tag = f"{round(b * 100)}"
                rows += [
                    Row(f"slim/vit-slim-{tag}", f"ViT-Slim, {tag}% MACs", "ViT-Slim",
                        lambda s, b=b, tag=tag: self.slimmed(t, f"slim/vit-slim-{tag}", b, s)),
                    Row(f"slim/tp-{tag}", f"Torch-Pruning (Taylor), {tag}% MACs", "Torch-Pruning",
                        lambda s, b=b, tag=tag: self.baseline(t, f"slim/tp-{tag}", "tp", b, s)),
                    Row(f"slim/uniform-{tag}", f"uniform ℓ1 cut, {tag}% MACs", "uniform cut",
                        lambda s, b=b, tag=tag: self.baseline(t, f"slim/uniform-{tag}", "uniform", b, s)),
                ]
            return rows
        if suite == "swin":
            return [
                Row("swin-teacher", "Swin teacher (1 run)", "teacher", self.swin_teacher_run,
                    seeded=False),
                Row("swin/naive", "naive sharing per stage pair", "naive sharing",
                    lambda s: [self.student("swin/naive", st, NAIVE, s)]),
                Row("swin/mini-swin", "Mini-Swin (transforms + weight distillation)", "MiniViT",
                    lambda s: [self.student("swin/mini-swin", st, [], s)]),
                Row("swin/swin-slim-60", "Swin-Slim, 60% MACs", "ViT-Slim",
                    lambda s: self.slimmed(st, "swin/swin-slim-60", 0.6, s)),
                Row("swin/uniform-60", "uniform ℓ1 cut, 60% MACs", "uniform cut",
                    lambda s: self.baseline(st, "swin/uniform-60", "uniform", 0.6, s)),
            ]
        if suite == "combined":
            return [
                teacher,
                Row("combined/compress", "multiplex (share 2) + ViT-Slim 60% + KD fine-tune", "combined",
                    self.compressed),
                Row("slim/tp-60", "Torch-Pruning (Taylor), 60% MACs", "Torch-Pruning",
                    lambda s: self.baseline(t, "slim/tp-60", "tp", 0.6, s)),
                Row("slim/vit-slim-60", "ViT-Slim, 60% MACs", "ViT-Slim",
                    lambda s: self.slimmed(t, "slim/vit-slim-60", 0.6, s)),
            ]
        raise SystemExit(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")


# ---------------------------------------------------------------------------------------------------- running


class Runner:
    """Runs every row's steps, each chain (a row and seed) in order, reusing identical finished runs."""

    def __init__(self, work: Path, force: bool, threads: int) -> None:
        self.work, self.force, self.threads = work, force, threads
        self.done: dict[Path, tuple[float, bool]] = {}  # out dir -> (seconds, ran in this invocation)
        self.lock = threading.Lock()
        self.busy: dict[Path, threading.Lock] = {}

    def step(self, run: Run, upstream_ran: bool) -> tuple[float, bool]:
        with self.lock:
            busy = self.busy.setdefault(run.out, threading.Lock())
        with busy:  # two chains sharing a step (a search, a teacher) run it once
            if run.out in self.done:
                return self.done[run.out]
            force = self.force or upstream_ran
            log = self.work / "logs" / f"{run.out.relative_to(self.work).as_posix().replace('/', '-')}.log"
            if run.argv is not None:
                result = run_cli(run.argv, run.out, log, force, self.threads)
            else:
                result = self.cut(run, force)
            self.done[run.out] = result
            return result

    def cut(self, run: Run, force: bool) -> tuple[float, bool]:
        if finished(run.out, run.record, force):
            print(f"  reuse  {run.out}", flush=True)
            return json.loads((run.out / "bench.json").read_text())["seconds"], False
        print(f"  cut    {run.out}", flush=True)
        start = time.perf_counter()
        info = run.cut(run.out)
        seconds = time.perf_counter() - start
        (run.out / "report.json").write_text(json.dumps(info, indent=2, default=str))
        (run.out / "bench.json").write_text(json.dumps({**run.record, "seconds": seconds}, indent=2))
        return seconds, True

    def chain(self, runs: list[Run], upstream_ran: bool) -> dict[str, Any]:
        seconds, ran = 0.0, upstream_ran
        for run in runs:
            s, now = self.step(run, ran)
            seconds, ran = seconds + s, ran or now
        return {"dir": runs[-1].out, "seconds": seconds, "argv": [r.argv for r in runs]}


def run_suites(suites: Suites, names: list[str], seeds: list[int], runner: Runner, jobs: int
               ) -> dict[str, dict[str, dict[str, Any]]]:
    """Teachers first, then every (row, seed) chain of the suites, `jobs` at a time."""
    rows = {suite: suites.rows(suite) for suite in names}
    teachers = {row.key: row for suite in rows.values() for row in suite if not row.seeded}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    ran_teacher = {}
    for key, row in teachers.items():
        print(key, flush=True)
        results.setdefault(key, {})["0"] = runner.chain(row.runs(0), False)
        ran_teacher[key] = runner.done[row.runs(0)[-1].out][1]
    teacher_of = {"swin": "swin-teacher"}
    work = [(suite, row, seed) for suite, suite_rows in rows.items() for row in suite_rows if row.seeded
            for seed in seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {(row.key, seed): pool.submit(runner.chain, row.runs(seed),
                                                ran_teacher.get(teacher_of.get(suite, "teacher"), False))
                   for suite, row, seed in work}
        for (key, seed), future in futures.items():
            results.setdefault(key, {})[str(seed)] = future.result()
    return results


# ------------------------------------------------------------------------------------------------------ scoring


def score(model_dir: Path) -> dict[str, float]:
    """top-1/top-5 on the val split, params and MACs of a saved model; cached beside it by its weights' hash."""
    import vitcompress as vc
    from vitcompress.export import read_spec

    spec = read_spec(model_dir)
    sha, cache = spec["weights"]["sha256"], model_dir / "bench-score.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("sha256") == sha:
        return cached
    model, data = vc.load(model_dir).eval(), spec["extra"]["data"]
    size = tuple(data["input_size"])
    _, val, _ = vc.build_loaders(DATA, input_size=size, mean=data["mean"], std=data["std"], batch_size=256)
    metrics = vc.evaluate(model, val)
    out = {"sha256": sha, "top1": metrics["top1"], "top5": metrics["top5"], "params": vc.count_params(model),
           "macs": vc.count_macs(model, size)}
    cache.write_text(json.dumps(out, indent=2))
    return out


def final_model(run_dir: Path) -> Path:
    """The saved model of a run: the directory itself, or a `compress` run's last stage."""
    return run_dir / "4-finetune" if (run_dir / "4-finetune" / "spec.json").is_file() else run_dir


def summarize(rows: list[Row], results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per row: its label, method, per-seed scores and their means."""
    out = []
    for row in rows:
        runs = results[row.key]
        scores = {seed: score(final_model(run["dir"])) for seed, run in runs.items()}
        first = next(iter(scores.values()))
        if len({(s["params"], s["macs"]) for s in scores.values()}) != 1:
            print(f"note: {row.key}: seeds differ in params/MACs (searches select per seed)", flush=True)
        out.append({"key": row.key, "label": row.label, "method": row.method, "scores": scores,
                    "top1": [s["top1"] for s in scores.values()],
                    "params": statistics.mean(s["params"] for s in scores.values()),
                    "macs": statistics.mean(s["macs"] for s in scores.values()),
                    "seconds": [r["seconds"] for r in runs.values()], "first": first,
                    "argv": next(iter(runs.values()))["argv"]})
    return out


# ------------------------------------------------------------------------------------------------------ targets


def _mean(summary: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(next(r for r in summary if r["key"] == key)["top1"])


def _row(summary: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return next(r for r in summary if r["key"] == key)


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def targets(suite: str, summary: list[dict[str, Any]], budgets: tuple[float, ...]) -> list[str]:
    """The issue's targets for the suite, each with the numbers it is judged on (means over seeds)."""
    m = lambda key: _mean(summary, key)
    if suite == "multiplex":
        full, teacher, naive = m("multiplex/full"), m("teacher"), m("multiplex/naive")
        return [f"- MiniViT ≥ teacher: {verdict(full >= teacher)} — {full:.2f}% vs {teacher:.2f}% "
                f"({full - teacher:+.2f} points).",
                f"- MiniViT ≥ naive sharing + 2 points (params {_row(summary, 'multiplex/full')['params'] / 1e6:.3f} M"
                f" vs {_row(summary, 'multiplex/naive')['params'] / 1e6:.3f} M): {verdict(full - naive >= 2)} — "
                f"{full:.2f}% vs {naive:.2f}% ({full - naive:+.2f} points)."]
    if suite == "slim":
        lines = []
        if 0.6 in budgets:
            slim, teacher, tp = m("slim/vit-slim-60"), m("teacher"), m("slim/tp-60")
            lines += [f"- ViT-Slim at 60% MACs ≥ teacher − 0.3: {verdict(slim >= teacher - 0.3)} — {slim:.2f}% vs "
                      f"{teacher:.2f}% ({slim - teacher:+.2f} points).",
                      f"- ViT-Slim ≥ Torch-Pruning + 1 point at 60% MACs: {verdict(slim - tp >= 1)} — {slim:.2f}% "
                      f"vs {tp:.2f}% ({slim - tp:+.2f} points)."]
        for b in budgets:
            tag = round(b * 100)
            slim, tp, uni = m(f"slim/vit-slim-{tag}"), m(f"slim/tp-{tag}"), m(f"slim/uniform-{tag}")
            lines.append(f"- At {tag}% MACs: ViT-Slim {slim - tp:+.2f} points vs Torch-Pruning, {slim - uni:+.2f} vs "
                         "the uniform cut.")
        return lines
    if suite == "swin":
        mini, naive, teacher = m("swin/mini-swin"), m("swin/naive"), m("swin-teacher")
        slim, uni = m("swin/swin-slim-60"), m("swin/uniform-60")
        return [f"- Mini-Swin ≥ Swin teacher: {verdict(mini >= teacher)} — {mini:.2f}% vs {teacher:.2f}%.",
                f"- Mini-Swin ≥ naive sharing + 2 points: {verdict(mini - naive >= 2)} — {mini - naive:+.2f} points.",
                f"- Swin-Slim at 60% MACs ≥ Swin teacher − 0.3: {verdict(slim >= teacher - 0.3)} — {slim:.2f}% vs "
                f"{teacher:.2f}%; vs the uniform cut {slim - uni:+.2f} points."]
    if suite == "combined":
        comb, tp = _row(summary, "combined/compress"), _row(summary, "slim/tp-60")
        acc = statistics.mean(comb["top1"]) - statistics.mean(tp["top1"])
        fewer = comb["params"] < tp["params"]
        at_most = comb["macs"] <= tp["macs"] * 1.01
        return [f"- Combined ≥ Torch-Pruning at equal MACs with fewer params: {verdict(acc >= 0 and fewer and at_most)}"
                f" — {acc:+.2f} points; params {comb['params'] / 1e6:.3f} M vs {tp['params'] / 1e6:.3f} M; MACs "
                f"{comb['macs'] / 1e6:.2f} M vs {tp['macs'] / 1e6:.2f} M."]
    return []


# ------------------------------------------------------------------------------------------------------ output


def table(summary: list[dict[str, Any]], teacher: dict[str, Any]) -> str:
    from vitcompress.report import markdown_table

    return markdown_table([{
        "row": r["label"],
        "top-1 (%)": mean_std(r["top1"]),
        "params (M)": f"{r['params'] / 1e6:.3f}",
        "params ratio": f"{r['params'] / teacher['params']:.2f}",
        "MACs (M)": f"{r['macs'] / 1e6:.2f}",
        "MACs ratio": f"{r['macs'] / teacher['macs']:.2f}",
        "runs": str(len(r["top1"])),
        "wall per run (min)": f"{statistics.mean(r['seconds']) / 60:.1f}",
    } for r in summary])


def per_seed(summary: list[dict[str, Any]]) -> str:
    from vitcompress.report import markdown_table

    return markdown_table([{"row": r["key"], "seed": seed, "top-1 (%)": f"{s['top1']:.2f}",
                            "top-5 (%)": f"{s['top5']:.2f}", "params": s["params"], "MACs": s["macs"]}
                           for r in summary for seed, s in r["scores"].items()])


def figures(suite: str, name: str, summary: list[dict[str, Any]], teacher: dict[str, Any], work: Path, figdir: Path,
            budgets: tuple[float, ...]) -> list[tuple[str, Path]]:
    """The suite's PNGs (named `name`-*.png): top-1 vs MACs and params; with searches, their budget curves and the
    kept widths."""
    from vitcompress.report import plots

    if plots.pyplot() is None:
        print(f"no figures: {plots.PLOT_INSTALL}", flush=True)
        return []
    figdir.mkdir(parents=True, exist_ok=True)
    points = [{"label": r["label"], "method": r["method"], "top1": r["top1"],
               "macs_ratio": r["macs"] / teacher["macs"], "params_ratio": r["params"] / teacher["params"]}
              for r in summary]
    out = [("top-1 vs MACs and params, as fractions of the teacher's (bars: ± std over seeds)",
            plots.plot_pareto(points, figdir / f"{name}-pareto.png"))]
    curves = {p.name: json.loads((p / "curve.json").read_text())
              for p in sorted((work / suite).glob("search-seed*")) if (p / "curve.json").is_file()}
    if curves:
        out.append(("the searches' budget curves: MACs and params kept, and top-1 before any fine-tuning",
                    plots.plot_budget_curves(curves, figdir / f"{name}-budget-curve.png")))
    kept, labels = kept_grids(work, suite, budgets)
    if kept:
        out.append(("kept fraction of every layer's attention dims / MLP units / tokens at each MACs budget (seed 0)",
                    plots.plot_kept_heatmap(kept, labels, figdir / f"{name}-kept.png", "MACs budget")))
    return out


def kept_grids(work: Path, suite: str, budgets: tuple[float, ...]) -> tuple[dict[str, list[list[float]]], list[str]]:
    """Per mask type, the kept fraction per layer of each budget's seed-0 extracted model of the suite."""
    from vitcompress.export import read_spec
    from vitcompress.report.run import extracted_structure, kept_fractions

    grids: dict[str, list[list[float]]] = {}
    labels = []
    for extracted in sorted(work.glob(f"{suite}/*-slim-*/seed0/extracted"), reverse=True):
        selection, structure = extracted_structure(read_spec(extracted)["spec"])
        for kind, row in kept_fractions(selection, structure).items():
            grids.setdefault(kind, []).append(row)
        labels.append(extracted.parent.parent.name.rsplit("-", 1)[1] + "%")
    return grids, labels


def render(suite: str, command: str, summary: list[dict[str, Any]], pngs: list[tuple[str, Path]], md: Path,
           args: argparse.Namespace) -> str:
    b = args.budget
    teacher = summary[0]["first"]
    titles = {"multiplex": "MiniViT weight multiplexing", "slim": "ViT-Slim vs Torch-Pruning vs the uniform cut",
              "swin": "Mini-Swin and Swin-Slim", "combined": "Multiplex + slim combined vs Torch-Pruning"}
    budgets = {"multiplex": f"students {b.student} epochs (the teacher trained on: the same)",
               "slim": f"search {b.search} epochs, every cut fine-tuned {b.finetune} epochs with logit KD",
               "swin": f"students {b.student} epochs; search {b.search}, fine-tune {b.finetune} epochs",
               "combined": f"compress: {b.finetune} epochs per stage (multiplex, search, fine-tune); Torch-Pruning "
                           f"and ViT-Slim: fine-tune {b.finetune} epochs (ViT-Slim also searched {b.search})"}
    lines = [
        *_report.heading(f"## {titles[suite]} on `{DATA}`" + (f" ({args.tag})" if args.tag else ""), command,
                         args.quick),
        f"Data: the built-in `{DATA}` (32×32 canvases, 5,000 train / 2,000 val images, balanced and fixed; 1 val "
        f"image = 0.05 points). Training budget per row: {budgets[suite]}; teachers: "
        f"{'their recipe' if b.teacher is None else f'{b.teacher} epochs'}, seed 0, one run. Seeds "
        f"{', '.join(map(str, args.seeds))}; top-1 mean ± sample std over them, scored here on the saved models "
        f"(`vc.evaluate` on the val split); params count shared weights once; MACs per image, attention included. "
        f"Every run used {args.threads} torch thread(s).",
        "",
        table(summary, teacher),
        "",
        "Targets:",
        "",
        *targets(suite, summary, b.budgets),
        "",
        *reselect_line(args.work, suite),
        *(line for caption, png in pngs
          for line in (f"![{caption}]({png.relative_to(md.parent).as_posix()})", "", f"*{caption}*", "")),
        *_report.details("The commands of seed 0 (cuts by Torch-Pruning or the uniform ℓ1 rule run in this script) "
                         "and every run's scores", commands(summary, args.threads), per_seed(summary)),
    ]
    return "\n".join(lines)


def reselect_line(work: Path, suite: str) -> list[str]:
    """How long a new budget takes from a saved search (`slim extract`'s own timing of select + extract)."""
    times = [json.loads(r.read_text())["select_and_extract_s"]
             for r in sorted(work.glob(f"{suite}/*/seed*/extracted/report.json"))]
    if not times:
        return []
    return [f"A new budget from a saved search (`slim extract`: select + extract, as its report times it): median "
            f"{statistics.median(times) * 1e3:.0f} ms [{min(times) * 1e3:.0f}–{max(times) * 1e3:.0f}] over "
            f"{len(times)} extractions.", ""]


def commands(summary: list[dict[str, Any]], threads: int) -> list[str]:
    """Each row's seed-0 chain as shell lines (an in-process cut as a comment)."""
    lines = []
    for row in summary:
        lines.append(f"# {row['label']}")
        for argv in row["argv"]:
            lines.append(f"OMP_NUM_THREADS={threads} vitcompress {shlex.join(argv)}" if argv else
                         "# (cut in process: benchmarks/_baselines.py prune_saved)")
    return lines


# --------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES), help="suites to run (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of every row but the teachers (default: 0 1 2)")
    p.add_argument("--quick", action="store_true", help="1 epoch everywhere, seed 0, one budget: checks the runner")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time after the teachers (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run (default: 1)")
    p.add_argument("--taylor-batches", type=int, default=10, help="train batches of the Taylor importance")
    p.add_argument("--work", type=Path, help="run directory (default: out/bench-methods[-quick])")
    p.add_argument("--md", type=Path, help="Markdown file to write into (default: BENCHMARKS.md; with --quick: "
                                           "<work>/BENCHMARKS.md); figures go to figures/ beside it")
    p.add_argument("--student-epochs", type=int, help=f"epochs of the multiplexed students (default: {FULL.student})")
    p.add_argument("--search-epochs", type=int, help=f"epochs of every ViT-Slim search (default: {FULL.search})")
    p.add_argument("--finetune-epochs", type=int, help=f"epochs of every fine-tune (default: {FULL.finetune})")
    p.add_argument("--tag", help="suffix of the sections and figures, so a run at another budget sits beside the "
                                 "default one (use its own --work)")
    p.add_argument("--force", action="store_true", help="redo every run even where an identical finished one exists")
    args = p.parse_args(argv)
    budget = QUICK if args.quick else FULL
    args.budget = dataclasses.replace(budget, **{k: v for k, v in (("student", args.student_epochs),
                                                                    ("search", args.search_epochs),
                                                                    ("finetune", args.finetune_epochs)) if v})
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.work = args.work or Path("out/bench-methods-quick" if args.quick else "out/bench-methods")
    args.md = args.md or (args.work / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md")
    return args


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    os.chdir(ROOT)  # relative paths (the work dir, in the commands written to BENCHMARKS.md) are from the repo root
    command = shlex.join(["python", "benchmarks/methods.py", *raw])
    suites = Suites(args.work, args.budget, args.taylor_batches)
    runner = Runner(args.work, args.force, args.threads)
    results = run_suites(suites, args.suites, args.seeds, runner, args.jobs)
    for suite in args.suites:
        summary = summarize(suites.rows(suite), results)
        name = f"{suite}-{args.tag}" if args.tag else suite
        pngs = figures(suite, name, summary, summary[0]["first"], args.work, args.md.parent / "figures",
                       args.budget.budgets)
        body = render(suite, command, summary, pngs, args.md, args)
        (args.work / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
        _report.publish(args.md, f"methods-{name}", body)


if __name__ == "__main__":
    main()
