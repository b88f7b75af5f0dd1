"""Mini-Swin and Swin-Slim on the built-in `digits` data, driven through the real `vitcompress` CLI.

A small 4-stage Swin teacher is trained once with `vitcompress train --config digits-swin-teacher`. From it, over
several seeds and for the same number of student epochs:

    mplx-full    `vitcompress multiplex --config digits-swin-multiplex` (share=stage, transforms, weight distillation)
    mplx-naive   the same, with `--no-attn-transform --no-mlp-transform --no-kd` (plain sharing, CE only)
    slim-uniform every block keeps the same share of its attention dims (in every head) and MLP units, the
                 largest by weight magnitude (ℓ1 of their q/k/v rows, fc1 row), at most 60% of the teacher's
                 MACs, cut with `vitcompress.extract`, then `vitcompress finetune`
    slim         `vitcompress slim search --config digits-swin-slim` -> `slim extract --macs 0.6` -> `finetune`

Both slim variants are fine-tuned the same way (CE + logit KD from the teacher). Top-1 comes from each run's
report.json; params, MACs and CPU latency (batch 1 and 32, 1 thread first) are measured here on the saved models
after all training, interleaving the models over several rounds so that load from other processes spreads over all
of them. Writes the `swin-digits` section of BENCHMARKS.md.

    python benchmarks/swin_digits.py            # full benchmark (tens of minutes on 2 CPU cores)
    python benchmarks/swin_digits.py --quick    # 2 epochs, 1 seed: checks the script, not the methods
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _report
from _measure import LATENCY_BATCHES, input_size, key, measure_models, saved_models, speedups
from _report import mean_std
from _runs import epoch_flags, finished, recipe_value, run_cli

SECTION = "swin-digits"
TEACHER_RECIPE = "digits-swin-teacher"
MPLX_RECIPE = "digits-swin-multiplex"
SLIM_RECIPE = "digits-swin-slim"
MACS_TARGET = 0.6
FINETUNE_FLAGS = ["--lr", "5e-4", "--warmup-epochs", "1", "--kd-alpha", "0.5"]
NAIVE_FLAGS = ["--no-attn-transform", "--no-mlp-transform", "--no-kd"]
VARIANTS = {  # name -> label in the tables
    "teacher": "(a) Swin teacher (1 run)",
    "mplx-naive": "(b) multiplex share=stage, naive (no transforms, no KD)",
    "mplx-full": "(c) multiplex share=stage, full method",
    "slim-uniform": f"(d) uniform magnitude pruning to {MACS_TARGET:.0%} MACs + fine-tune",
    "slim": f"(e) ViT-Slim search, extract {MACS_TARGET:.0%} MACs + fine-tune",
}
SLIM_VARIANTS = ("slim-uniform", "slim")


# ----------------------------------------------------------------------------------------------- training runs


def magnitude_selection(model: Any, share: float) -> Any:
    """Keep round(share·n) of every head's dims and of every block's MLP units, the largest by weight magnitude.

    Scores as `benchmarks/_baselines.py` does for ViT (ℓ1 norm of a dim's q, k and v rows; of a unit's fc1 row),
    over Swin's stages, whose blocks differ in heads and widths.
    """
    from vitcompress.slim.selection import Selection

    def top(scores: Any, k: int) -> list[int]:
        return sorted(scores.argsort(descending=True, stable=True)[:k].tolist())

    attn, mlp = [], []
    for stage in model.layers:
        for block in stage.blocks:
            heads, qkv = block.attn.num_heads, block.attn.qkv.weight.detach()
            rows = qkv.abs().sum(1).view(3, heads, -1).sum(0)  # (heads, head_dim)
            attn.append([top(rows[h], max(1, round(share * rows.shape[1]))) for h in range(heads)])
            units = block.mlp.fc1.weight.detach().abs().sum(1)
            mlp.append(top(units, max(1, round(share * units.numel()))))
    return Selection(attn=attn, mlp=mlp, info={"target": f"uniform magnitude share {share:.4f}", "share": share})


def uniform_prune(teacher_dir: Path, out_dir: Path, target: float, force: bool, teacher_ran: bool) -> bool:
    """Cut the teacher with the largest uniform magnitude share whose MACs are at most `target` of its own.

    Saves the model (with the teacher's data normalisation) and selection.json; returns whether it ran now.
    """
    import vitcompress as vc
    from vitcompress.export import read_spec

    record = {"teacher": str(teacher_dir), "target": target, "scores": "l1 qkv rows, fc1 rows"}
    if not teacher_ran and finished(out_dir, record, force):
        print(f"  reuse  {out_dir}", flush=True)
        return False
    shutil.rmtree(out_dir, ignore_errors=True)
    teacher = vc.load(teacher_dir).eval()
    size = input_size(teacher_dir)
    full = vc.count_macs(teacher, size)

    def macs_at(share: float) -> int:
        return vc.count_macs(vc.extract(teacher, magnitude_selection(teacher, share)), size)

    lo, hi = 0.0, 1.0  # bisection on the share: MACs grow with it (in steps, from rounding to whole dims)
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs_at(mid) <= target * full else (lo, mid)
    selection = magnitude_selection(teacher, lo)
    small = vc.extract(teacher, selection).eval()
    macs, params = vc.count_macs(small, size), vc.count_params(small)
    selection.info.update({"macs": macs, "params": params, "macs_ratio": macs / full,
                           "params_ratio": params / vc.count_params(teacher)})
    extra = {k: v for k, v in read_spec(teacher_dir).get("extra", {}).items() if k == "data"}
    vc.save(small, out_dir, extra={**extra, "selection": selection.info})
    (out_dir / "selection.json").write_text(json.dumps(selection.to_dict()))
    (out_dir / "report.json").write_text(json.dumps({"selection": selection.info}, indent=2))
    (out_dir / "bench.json").write_text(json.dumps({**record, "seconds": 0.0}, indent=2))
    print(f"  cut    {out_dir}: share {lo:.3f}, MACs ratio {macs / full:.3f}", flush=True)
    return True


def slim_unavailable() -> str | None:
    """Why ViT-Slim masks cannot be attached to a Swin in this checkout, or None when they can."""
    import timm

    import vitcompress as vc

    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, patch_size=2,
                              embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=10)
    try:
        vc.attach_masks(model, vc.SlimConfig(attn=True, mlp=True))
    except Exception as e:  # noqa: BLE001 - any failure means the slim rows cannot be produced
        return f"{type(e).__name__}: {e}"
    return None


class Runner:
    """Runs the benchmark's steps in order, each reused when an identical finished run exists."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, args.work
        self.runs: dict[str, dict[str, Any]] = {}

    def cli(self, name: str, argv: list[str], deps: list[str]) -> None:
        out_dir = self.work / name
        force = self.args.force or any(self.runs[d]["ran"] for d in deps)
        seconds, ran = run_cli(argv, out_dir, self.work / "logs" / f"{name.replace('/', '-')}.log", force,
                               self.args.train_threads, recoverable=True)
        self.runs[name] = {"argv": argv, "seconds": seconds, "ran": ran, "dir": out_dir}

    def multiplex_and_teacher(self) -> None:
        a, t = self.args, str(self.work / "teacher")
        print("teacher", flush=True)
        self.cli("teacher", ["train", "--config", TEACHER_RECIPE, "--seed", "0", "-o", t, "--no-progress",
                             *epoch_flags(TEACHER_RECIPE, a.teacher_epochs)], [])
        for variant, flags in (("mplx-naive", NAIVE_FLAGS), ("mplx-full", [])):
            for seed in a.seeds:
                name = f"{variant}/seed{seed}"
                print(name, flush=True)
                self.cli(name, ["multiplex", "--teacher", t, "--config", MPLX_RECIPE, "--seed", str(seed), "-o",
                                str(self.work / name), "--no-progress", *flags, *epoch_flags(MPLX_RECIPE, a.epochs)],
                         ["teacher"])

    def slim(self) -> None:
        a, t = self.args, str(self.work / "teacher")
        finetune = ["--kd-teacher", t, *FINETUNE_FLAGS, "--epochs", str(a.epochs or recipe_value(MPLX_RECIPE,
                                                                                                  "epochs"))]
        print("slim-uniform/cut", flush=True)
        ran = uniform_prune(self.work / "teacher", self.work / "slim-uniform" / "cut", MACS_TARGET, a.force,
                            self.runs["teacher"]["ran"])
        self.runs["slim-uniform/cut"] = {"argv": None, "seconds": 0.0, "ran": ran,
                                         "dir": self.work / "slim-uniform" / "cut"}
        for seed in a.seeds:
            name = f"slim-uniform/seed{seed}"
            print(name, flush=True)
            self.cli(name, ["finetune", "--model", str(self.work / "slim-uniform" / "cut"), "--seed", str(seed),
                            "-o", str(self.work / name), "--no-progress", *finetune], ["slim-uniform/cut"])
        for seed in a.seeds:
            search, cut, name = (f"slim/search{seed}", f"slim/cut{seed}", f"slim/seed{seed}")
            print(name, flush=True)
            self.cli(search, ["slim", "search", "--model", t, "--config", SLIM_RECIPE, "--seed", str(seed), "-o",
                              str(self.work / search), "--no-progress",
                              *epoch_flags(SLIM_RECIPE, a.slim_epochs)], ["teacher"])
            self.cli(cut, ["slim", "extract", "--search", str(self.work / search), "--macs", str(MACS_TARGET),
                           "-o", str(self.work / cut)], [search])
            self.cli(name, ["finetune", "--model", str(self.work / cut), "--seed", str(seed), "-o",
                            str(self.work / name), "--no-progress", *finetune], [cut])


# ------------------------------------------------------------------------------------------------ measurements


def read_accuracy(runs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """top-1/top-5 (%) of every trained model from its report.json, plus top-1 before fine-tuning (slim)."""
    acc = {}
    for name, run in runs.items():
        report = json.loads((run["dir"] / "report.json").read_text())
        if name == "teacher":
            acc[name] = {"top1": report["val"]["top1"], "top5": report["val"]["top5"]}
        elif name.startswith("mplx-"):
            acc[name] = {"top1": report["student"]["top-1 (%)"], "top5": report["student"]["top-5 (%)"]}
        elif "/seed" in name:  # a fine-tune
            before = next(r for r in report["rows"] if r["model"].endswith("(before)"))
            acc[name] = {"top1": report["val"]["top1"], "top5": report["val"]["top5"], "before": before["top-1 (%)"]}
    return acc


def model_runs(runs: dict[str, Any]) -> dict[str, Path]:
    """The final model of every table row's run: the teacher, the students and the fine-tuned models."""
    return {n: r["dir"] for n, r in runs.items() if n == "teacher" or "/seed" in n}


def stage_widths(model_dir: Path, depths: list[int]) -> dict[str, list[int]] | None:
    """Kept attention dims and MLP units summed per stage, from a slimmed model's selection.json."""
    path = model_dir / "selection.json"
    if not path.is_file():
        return None
    sel = json.loads(path.read_text())
    bounds = [sum(depths[:i]) for i in range(len(depths) + 1)]
    out = {}
    for kind, count in (("attn", lambda layer: sum(len(h) for h in layer)), ("mlp", len)):
        if sel.get(kind) is not None:
            out[kind] = [sum(count(sel[kind][i]) for i in range(bounds[s], bounds[s + 1]))
                         for s in range(len(depths))]
    return out


def windows(model_dir: Path) -> str:
    """The stage maps, windows and which stages shift, as timm built the saved model."""
    import vitcompress as vc

    stages = vc.load(model_dir).layers
    maps = " → ".join("×".join(map(str, st.output_resolution)) for st in stages)
    wins = "/".join(str(st.blocks[0].window_size[0]) for st in stages)
    shifted = [str(i + 1) for i, st in enumerate(stages) if any(max(b.shift_size) > 0 for b in st.blocks)]
    return (f"maps {maps}, windows {wins}, shifted windows in stage(s) {', '.join(shifted) or 'none'}")


# ------------------------------------------------------------------------------------------------------ report


def span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def names_of(variant: str, seeds: list[int]) -> list[str]:
    return ["teacher"] if variant == "teacher" else [f"{variant}/seed{s}" for s in seeds]


def summary_rows(variants: list[str], seeds: list[int], acc: dict, meas: dict, threads: int) -> list[dict]:
    teacher = meas["models"]["teacher"]
    rows = []
    for variant in variants:
        names = names_of(variant, seeds)
        models = [meas["models"][n] for n in names]
        row = {"variant": VARIANTS[variant], "top-1 (%)": mean_std([acc[n]["top1"] for n in names]),
               "params (M)": span([m["params"] / 1e6 for m in models], ".3f"),
               "MACs (M)": span([m["macs"] / 1e6 for m in models], ".3f"),
               "MACs ratio": span([m["macs"] / teacher["macs"] for m in models], ".3f"),
               "1 / MACs ratio": span([teacher["macs"] / m["macs"] for m in models], ".2f")}
        for b in LATENCY_BATCHES:
            lat = [x for m in models for x in m[key(b, threads)]]
            row[f"latency b{b} (ms)"] = f"{statistics.median(lat):.2f}"
        for b in LATENCY_BATCHES:
            ratio = [x for n in names for x in speedups(meas, n, b, threads)]
            row[f"speedup b{b}"] = f"{statistics.median(ratio):.2f}× [{min(ratio):.2f}–{max(ratio):.2f}]"
        rows.append(row)
    return rows


def slim_rows(seeds: list[int], runs: dict, acc: dict, depths: list[int]) -> list[dict]:
    rows = []
    for variant in SLIM_VARIANTS:
        for seed in seeds:
            name = f"{variant}/seed{seed}"
            if name not in acc:
                continue
            cut = runs["slim-uniform/cut" if variant == "slim-uniform" else f"slim/cut{seed}"]["dir"]
            widths = stage_widths(cut, depths) or {}
            rows.append({"run": name, "top-1 before fine-tune (%)": f"{acc[name]['before']:.2f}",
                         "top-1 after (%)": f"{acc[name]['top1']:.2f}",
                         "attn dims kept per stage": " / ".join(map(str, widths.get("attn", []))) or "all",
                         "MLP units kept per stage": " / ".join(map(str, widths.get("mlp", []))) or "all"})
    return rows


def per_run_table(runs: dict, acc: dict, meas: dict, threads: list[int]) -> str:
    from vitcompress.report import markdown_table

    rows = []
    for name, run in runs.items():
        row = {"run": name, "top-1 (%)": f"{acc[name]['top1']:.2f}" if name in acc else "",
               "top-5 (%)": f"{acc[name]['top5']:.2f}" if name in acc else ""}
        for t in threads:
            for b in LATENCY_BATCHES:
                samples = meas["models"].get(name, {}).get(key(b, t), [])
                row[f"b{b} {t}T per round (ms)"] = " ".join(f"{x:.2f}" for x in samples)
        row["train wall (s)"] = f"{run['seconds']:.0f}"
        rows.append(row)
    return markdown_table(rows)


def render(args: argparse.Namespace, command: str, state: dict[str, Any], total_s: float) -> str:
    from vitcompress.cli_args import load_recipe
    from vitcompress.report import markdown_table

    runs, acc, meas, seeds = state["runs"], state["acc"], state["meas"], args.seeds
    threads = args.threads[0]
    variants = ["teacher", "mplx-naive", "mplx-full", *([] if state["slim_missing"] else SLIM_VARIANTS)]
    teacher_recipe = load_recipe(TEACHER_RECIPE)
    depths = teacher_recipe["model_args"]["depths"]
    epochs = args.epochs or recipe_value(MPLX_RECIPE, "epochs")
    lb, la = meas["load_before"], meas["load_after"]
    train_s = sum(r["seconds"] for r in runs.values())
    reused = sum(not r["ran"] for r in runs.values())
    s0 = seeds[0]
    firsts = [n for n in runs if n in ("teacher", "slim-uniform/cut", f"slim/search{s0}", f"slim/cut{s0}")
              or n.endswith(f"/seed{s0}")]
    extra_tables = []
    for t in args.threads[1:]:
        extra_tables += [f"Latency at {t} thread(s), same models and rounds:", "",
                         markdown_table([{k: v for k, v in r.items() if "latency" in k or "speedup" in k
                                          or k == "variant"}
                                         for r in summary_rows(variants, seeds, acc, meas, t)]), ""]
    if state["slim_missing"]:
        slim_text = [f"**Slim rows (d) and (e) are missing:** {state['slim_missing']}", ""]
    else:
        slim_text = [
            f"Slimming: (e) searches masks on attention dims and MLP units (`{SLIM_RECIPE}`, "
            f"{args.slim_epochs or recipe_value(SLIM_RECIPE, 'epochs')} epochs, one search per seed), extracts the "
            f"largest equal share of each mask type that costs at most {MACS_TARGET:.0%} of the teacher's MACs and "
            f"fine-tunes it; (d) cuts the teacher uniformly (every head and every MLP keeps the same share, largest "
            f"weights first; the largest share within {MACS_TARGET:.0%} MACs) and fine-tunes it the same way: "
            f"`vitcompress finetune {shlex.join(FINETUNE_FLAGS)} --kd-teacher <teacher> --epochs {epochs}`. So (e) "
            f"has trained {args.slim_epochs or recipe_value(SLIM_RECIPE, 'epochs')} search epochs more than (d). "
            "Patch embedding, patch merging, norms, relative-position tables and head are not pruned.",
            "",
            markdown_table(slim_rows(seeds, runs, acc, depths)),
            "",
        ]
    return "\n".join([
        *_report.heading("## Mini-Swin and Swin-Slim on `digits`", command, args.quick),
        f"Teacher: `vitcompress train --config {TEACHER_RECIPE}` (`{teacher_recipe['model']}` with "
        f"{teacher_recipe['model_args']}: {windows(runs['teacher']['dir'])}; "
        f"{args.teacher_epochs or teacher_recipe['epochs']} epochs, seed 0, one run). Students "
        f"`vitcompress multiplex --config {MPLX_RECIPE}` (all blocks of a stage share weights) from that teacher "
        f"and fine-tuned slim models: {epochs} epochs each, seeds {', '.join(map(str, seeds))}. Top-1 on the 360 "
        "fixed `digits` val images (1 image = 0.28 points), mean ± sample std over seeds. Params count shared "
        "weights once; MACs per image, attention matmuls included; MACs ratio and speedup are against the teacher. "
        f"Every training run used {args.train_threads} torch thread(s) (OMP_NUM_THREADS).",
        "",
        markdown_table(summary_rows(variants, seeds, acc, meas, threads)),
        "",
        "Latency: `vitcompress.metrics.measure_latency` on the saved models (`vitcompress.load`), CPU, "
        f"**{threads} thread(s)**, batch 1 and batch 32 (ms per forward of the whole batch), measured after all "
        f"training in {args.rounds} round(s) over all {len(meas['models'])} models in shuffled order; a latency "
        "cell is the median over rounds and seeds. Speedup = teacher latency / model latency in the same round, "
        "median [min–max] over rounds and seeds; 1 / MACs ratio is the speedup MACs alone would predict. "
        "The machine is shared: load average (1/5/15 min) "
        f"{lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before the latency runs and {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} "
        f"after, on {_report.usable_cores()} cores.",
        "",
        *extra_tables,
        *slim_text,
        f"Wall time: {train_s / 60:.1f} min of training over the {len(runs)} runs (each run's time is in the table "
        f"below); this invocation took {total_s / 60:.1f} min"
        + (f", reusing {reused} finished run(s) from an earlier one." if reused else "."),
        "",
        *_report.details("The CLI commands (first seed shown) and every run",
                         [f"OMP_NUM_THREADS={args.train_threads} vitcompress {shlex.join(runs[n]['argv'])}"
                          if runs[n]["argv"] else
                          f"# {n}: benchmarks/swin_digits.py uniform_prune (vitcompress.extract with a magnitude "
                          "Selection)" for n in firsts],
                         per_run_table(runs, acc, meas, args.threads)),
    ])


# -------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: 2 epochs, seed 0, 2 latency rounds")
    p.add_argument("--epochs", type=int, help="student and fine-tune epochs (default: the digits-swin-multiplex "
                                              "recipe's)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: the digits-swin-teacher recipe's)")
    p.add_argument("--slim-epochs", type=int, help="search epochs (default: the digits-swin-slim recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default: 0 1 2)")
    p.add_argument("--no-slim", action="store_true", help="multiplexing rows only")
    p.add_argument("--work", type=Path, help="run directory (default: out/bench-swin[-quick])")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: <work>/BENCHMARKS.md)")
    p.add_argument("--rounds", type=int, help="latency rounds over all models (default: 5; --quick: 2)")
    p.add_argument("--threads", type=int, nargs="+", default=[1],
                   help="torch CPU threads for the latency runs; the first goes in the main table (default: 1)")
    p.add_argument("--train-threads", type=int, default=1, help="torch CPU threads of each training run")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds timed per latency measurement")
    p.add_argument("--force", action="store_true", help="retrain even where an identical finished run exists")
    args = p.parse_args(argv)
    quick = args.quick
    args.epochs = args.epochs or (2 if quick else None)
    args.teacher_epochs = args.teacher_epochs or (2 if quick else None)
    args.slim_epochs = args.slim_epochs or (2 if quick else None)
    args.seeds = args.seeds or ([0] if quick else [0, 1, 2])
    args.work = args.work or Path("out/bench-swin-quick" if quick else "out/bench-swin")
    args.md = args.md or (args.work / "BENCHMARKS.md" if quick else Path("BENCHMARKS.md"))
    args.rounds = args.rounds or (2 if quick else 5)
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["python", "benchmarks/swin_digits.py", *raw])
    runner = Runner(args)
    runner.multiplex_and_teacher()
    slim_missing = "skipped (--no-slim)." if args.no_slim else None
    if slim_missing is None and (why := slim_unavailable()):
        slim_missing = f"Swin slimming is not available in this checkout (`vc.attach_masks` on a Swin: {why})."
    if slim_missing is None:
        try:
            runner.slim()
        except RuntimeError as e:
            slim_missing = f"a slim step failed: {e}"
            runner.runs = {n: r for n, r in runner.runs.items() if not n.startswith("slim")}
    runs = runner.runs
    acc = read_accuracy(runs)
    meas = measure_models(saved_models(model_runs(runs)), args.rounds, args.threads, args.min_run_time)
    state = {"runs": runs, "acc": acc, "meas": meas, "slim_missing": slim_missing}
    body = render(args, command, state, time.perf_counter() - start)
    (args.work / "results.json").write_text(json.dumps(
        {"accuracy": acc, "measurements": meas, "slim_missing": slim_missing,
         "runs": {k: {**v, "dir": str(v["dir"])} for k, v in runs.items()}}, indent=2))
    _report.publish(args.md, SECTION, body)


if __name__ == "__main__":
    main()
