"""ViT-Slim vs Torch-Pruning vs uniform magnitude pruning on the built-in `digits` data, at equal MACs.

From the 12-layer digits teacher (`vitcompress train --config digits-teacher`, reused from the multiplexing
benchmark when it is there), for every seed and MACs budget:

    slim      `vitcompress slim search --config digits-slim` (one search per seed), `vitcompress slim extract
              --macs B` from it, then `vitcompress finetune`
    slim_eq   the same search, extracted with `--equal-heads` (every head of a layer keeps the same number of
              dims: one attention call per layer), then the same fine-tune
    tp        Torch-Pruning (MetaPruner + GroupTaylorImportance, global ranking over attention head dims and MLP
              units), pruning ratio bisected to B of the MACs; read back as a Selection, extracted, fine-tuned
    uniform   the same share of attention dims per head and of MLP units in every layer, largest ℓ1 rows first

Every model is fine-tuned by the same `vitcompress finetune` command (same epochs, same logit KD from the teacher).
Top-1 comes from each fine-tune's report.json; params, MACs and CPU latency (batch 1 and 32) are measured here on the
saved models after all training, interleaving the models over several rounds. Also timed: a new budget selected and
extracted from a saved search, and a masked training step against a plain one. Writes the `slim-digits` section of
BENCHMARKS.md.

    python benchmarks/slim_digits.py            # full benchmark (about 40 min on 2 shared CPU cores)
    python benchmarks/slim_digits.py --quick    # 2 epochs, 1 seed: checks the script, not the methods
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _baselines
import _report
from _measure import LATENCY_BATCHES, few_warmups_for_big_batches, key, measure_models, saved_models, speedups, spread
from _report import mean_std
from _runs import recipe_value, run_cli
from _slim_timing import op_breakdown, time_reselect, time_steps

SECTION = "slim-digits"
TEACHER_RECIPE = "digits-teacher"
SEARCH_RECIPE = "digits-slim"
DEFAULT_TEACHER = Path("out/bench-multiplex/teacher")
METHODS = {
    "slim": "(a) ViT-Slim search + extract",
    "slim_eq": "(a′) ViT-Slim, equal heads",
    "tp": "(b) Torch-Pruning, Taylor",
    "uniform": "(c) uniform ℓ1 magnitude",
}
RESELECT_BUDGETS = (0.5, 0.7, 0.3, 0.45, 0.55, 0.35, 0.65, 0.25)


def tag(budget: float) -> str:
    return f"macs{round(budget * 100):02d}"


# ----------------------------------------------------------------------------------------------- training runs


def teacher_sha(teacher: Path) -> str:
    from vitcompress.export import read_spec

    return read_spec(teacher)["weights"]["sha256"]


def get_teacher(args: argparse.Namespace) -> dict[str, Any]:
    """The digits teacher: reused if a finished run is there, else trained with the teacher recipe."""
    if (args.teacher / "report.json").is_file():
        print(f"teacher: reuse {args.teacher}", flush=True)
        stamp = args.teacher / "bench.json"
        seconds = json.loads(stamp.read_text())["seconds"] if stamp.is_file() else float("nan")
        argv = ["train", "--config", TEACHER_RECIPE, "--seed", "0", "-o", str(args.teacher), "--no-progress"]
        return {"dir": args.teacher, "argv": argv, "seconds": seconds, "ran": False}
    teacher = args.work / "teacher"
    argv = ["train", "--config", TEACHER_RECIPE, "--seed", "0", "-o", str(teacher), "--no-progress"]
    if args.teacher_epochs:
        argv += ["--epochs", str(args.teacher_epochs), "--warmup-epochs", str(min(3, args.teacher_epochs / 2))]
    print("teacher: train", flush=True)
    seconds, ran = run_cli(argv, teacher, args.work / "logs" / "teacher.log", args.force, args.train_threads)
    return {"dir": teacher, "argv": argv, "seconds": seconds, "ran": ran}


def finetune_argv(args: argparse.Namespace, model: Path, out: Path, seed: int) -> list[str]:
    return ["finetune", "--model", str(model), "--kd-teacher", str(args.teacher_dir), "--kd-alpha",
            str(args.kd_alpha), "--epochs", str(args.finetune_epochs), "--lr", str(args.lr), "--seed", str(seed),
            "-o", str(out), "--no-progress"]


def prune_baseline(args: argparse.Namespace, method: str, budget: float, seed: int | None, out: Path,
                   force: bool) -> tuple[dict[str, Any], bool]:
    """Prune the teacher in process (Torch-Pruning or uniform) and save the extracted model, unless done already."""
    import vitcompress as vc
    from vitcompress.export import read_spec

    config = {"method": method, "budget": budget, "seed": seed, "teacher_sha256": args.teacher_sha,
              "taylor_batches": args.taylor_batches if method == "tp" else None,
              "tp_ranking": args.tp_ranking if method == "tp" else None}
    stamp = out / "prune.json"
    if not force and (out / "model.safetensors").is_file() and stamp.is_file():
        done = json.loads(stamp.read_text())
        if done["config"] == config:
            print(f"  reuse  {out}", flush=True)
            return done, False
    print(f"  prune  {method} {tag(budget)}" + ("" if seed is None else f" seed {seed}"), flush=True)
    start = time.perf_counter()
    teacher = vc.load(args.teacher_dir).eval()
    size = tuple(read_spec(args.teacher_dir)["extra"]["data"]["input_size"])
    norm = read_spec(args.teacher_dir)["extra"]["data"]
    train_loader, val_loader, _ = vc.build_loaders("digits", input_size=size, seed=seed or 0, mean=norm["mean"],
                                                   std=norm["std"])
    info: dict[str, Any] = {}
    if method == "tp":
        batches = [b for _, b in zip(range(args.taylor_batches), train_loader, strict=False)]
        check = next(iter(val_loader))[0]
        tp_model, selection, info = _baselines.taylor_prune(teacher, batches, budget, size, check,
                                                            args.tp_ranking)
        info["tp_manual_top1"] = vc.evaluate(tp_model, val_loader)["top1"]
        for blk in tp_model.blocks:
            blk.attn.fused_attn = True
        info["tp_fused_top1"] = vc.evaluate(tp_model, val_loader)["top1"]
    else:
        selection = _baselines.uniform_selection(teacher, budget)
        info = dict(selection.info)
    small = vc.extract(teacher, selection).eval()
    info["extracted_top1"] = vc.evaluate(small, val_loader)["top1"]
    info["macs_ratio"] = vc.count_macs(small, size) / vc.count_macs(teacher, size)
    vc.save(small, out, extra={"data": norm, "pruning": {k: v for k, v in info.items()
                                                          if not isinstance(v, list)}})
    (out / "selection.json").write_text(json.dumps(selection.to_dict()))
    done = {"config": config, "info": info, "seconds": time.perf_counter() - start}
    stamp.write_text(json.dumps(done, indent=2))
    return done, True


def compare_tp_rankings(args: argparse.Namespace) -> dict[str, Any]:
    """Top-1 before fine-tuning of Torch-Pruning's rankings at every budget (seed 0's Taylor batches), cached.

    The benchmark's Torch-Pruning runs use the best of them (largest mean), unless --tp-ranking names one: the
    baseline gets its strongest configuration without spending fine-tuning runs on the choice.
    """
    import vitcompress as vc
    from vitcompress.export import read_spec

    config = {"teacher_sha256": args.teacher_sha, "budgets": args.budgets, "taylor_batches": args.taylor_batches,
              "rankings": list(_baselines.TP_RANKINGS)}
    cache = args.work / "tp_rankings.json"
    if not args.force and cache.is_file() and json.loads(cache.read_text())["config"] == config:
        return json.loads(cache.read_text())
    print("comparing Torch-Pruning rankings (before fine-tuning, seed 0)", flush=True)
    teacher, norm = vc.load(args.teacher_dir).eval(), read_spec(args.teacher_dir)["extra"]["data"]
    size = tuple(norm["input_size"])
    train_loader, val_loader, _ = vc.build_loaders("digits", input_size=size, seed=0, mean=norm["mean"],
                                                   std=norm["std"])
    batches = [b for _, b in zip(range(args.taylor_batches), train_loader, strict=False)]
    check = next(iter(val_loader))[0]
    top1: dict[str, dict[str, float]] = {}
    for ranking in _baselines.TP_RANKINGS:
        top1[ranking] = {}
        for budget in args.budgets:
            _, selection, info = _baselines.taylor_prune(teacher, batches, budget, size, check, ranking)
            top1[ranking][tag(budget)] = vc.evaluate(vc.extract(teacher, selection), val_loader)["top1"]
    best = max(top1, key=lambda r: statistics.mean(top1[r].values()))
    result = {"config": config, "top1": top1, "best": best}
    args.work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2))
    return result


def compare_slim_modes(args: argparse.Namespace, search: Path) -> dict[str, Any]:
    """Top-1 before fine-tuning of `select(macs=B, mode=...)` on one search, for both modes, and the better one.

    The same rule as for Torch-Pruning's ranking: the method runs in its best configuration as judged without
    fine-tuning, on the first seed; --slim-mode names one instead.
    """
    import vitcompress as vc
    from vitcompress.export import read_spec

    norm = read_spec(args.teacher_dir)["extra"]["data"]
    _, val_loader, _ = vc.build_loaders("digits", input_size=tuple(norm["input_size"]), mean=norm["mean"],
                                        std=norm["std"])
    masked = vc.load(search).eval()
    top1 = {mode: {tag(b): vc.evaluate(vc.extract(masked, vc.select(masked, macs=b, mode=mode)), val_loader)["top1"]
                   for b in args.budgets} for mode in ("share", "joint")}
    return {"top1": top1, "best": max(top1, key=lambda m: statistics.mean(top1[m].values())), "search": str(search)}


def tp_native(args: argparse.Namespace) -> dict[str, Any]:
    """Torch-Pruning's own pruned timm models on timm's fused path (SDPA scale 1/√(new head_dim)), fine-tuned in
    process by `vitcompress.train.fit` with the fine-tune command's objective and settings; cached per run.

    A check on the scale convention: the main table's Torch-Pruning models (like all extracted models) keep the
    original head's scale, which gives a lower top-1 before fine-tuning at 40% MACs than the fused path.
    """
    import vitcompress as vc
    from vitcompress.export import read_spec
    from vitcompress.jobs.slim import logit_kd

    cache = args.work / "tp_native.json"
    done = json.loads(cache.read_text()) if cache.is_file() and not args.force else {}
    norm = read_spec(args.teacher_dir)["extra"]["data"]
    size = tuple(norm["input_size"])
    for budget in args.budgets:
        for seed in args.seeds:
            name = f"tp/{tag(budget)}/seed{seed}"
            config = {"teacher_sha256": args.teacher_sha, "taylor_batches": args.taylor_batches,
                      "ranking": args.tp_ranking, "epochs": args.finetune_epochs, "lr": args.lr,
                      "kd_alpha": args.kd_alpha, "data_order": "as vitcompress finetune"}
            if done.get(name, {}).get("config") == config:
                continue
            print(f"  fit    Torch-Pruning's own model, fused path, {name}", flush=True)
            start = time.perf_counter()
            teacher = vc.load(args.teacher_dir).eval()
            loaders = lambda seed=seed: vc.build_loaders("digits", input_size=size, batch_size=64, seed=seed,
                                                         mean=norm["mean"], std=norm["std"])
            taylor_loader, val_loader, _ = loaders()
            batches = [b for _, b in zip(range(args.taylor_batches), taylor_loader, strict=False)]
            model, _, _ = _baselines.taylor_prune(teacher, batches, budget, size, next(iter(val_loader))[0],
                                                  args.tp_ranking)
            # Fresh loaders: the same data order and augmentation as `vitcompress finetune --seed` gets.
            train_loader, val_loader, _ = loaders()
            for blk in model.blocks:
                blk.attn.fused_attn = True
            before = vc.evaluate(model, val_loader)["top1"]
            objective = logit_kd(model, vc.load(args.teacher_dir).eval(), vc.DistillConfig(alpha=args.kd_alpha))
            vc.fit(model.train(), train_loader, val_loader, objective,
                   vc.TrainConfig(epochs=args.finetune_epochs, lr=args.lr, seed=seed), out_dir=None, progress=False)
            done[name] = {"config": config, "before": before, "after": vc.evaluate(model, val_loader)["top1"],
                          "seconds": time.perf_counter() - start}
            cache.write_text(json.dumps(done, indent=2))
    return done


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Searches, extractions, baseline pruning and every fine-tune; returns what each run was and took."""
    work, force, threads = args.work, args.force, args.train_threads
    logs = work / "logs"
    runs: dict[str, Any] = {"search": {}, "extract": {}, "prune": {}, "finetune": {}}
    prior = work / "teacher_sha256.txt"
    if prior.is_file() and prior.read_text().strip() != args.teacher_sha:
        print("teacher changed since the last invocation: redoing every run", flush=True)
        force = True
    work.mkdir(parents=True, exist_ok=True)
    prior.write_text(args.teacher_sha)

    def finetune(name: str, model: Path, out: Path, seed: int, upstream_ran: bool) -> None:
        argv = finetune_argv(args, model, out, seed)
        seconds, ran = run_cli(argv, out, logs / f"finetune-{name.replace('/', '-')}.log", force or upstream_ran,
                               threads)
        runs["finetune"][name] = {"argv": argv, "seconds": seconds, "ran": ran, "dir": out, "source": model}

    for budget in args.budgets:  # uniform pruning depends on the teacher only: one model per budget
        out = work / "uniform" / tag(budget) / "pruned"
        done, ran = prune_baseline(args, "uniform", budget, None, out, force)
        runs["prune"][f"uniform/{tag(budget)}"] = {**done, "dir": out, "ran": ran}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        search = work / "search" / f"seed{seed}"
        argv = ["slim", "search", "--model", str(args.teacher_dir), "--config", SEARCH_RECIPE, "--epochs",
                str(args.search_epochs), "--seed", str(seed), "-o", str(search), "--no-progress"]
        seconds, searched = run_cli(argv, search, logs / f"search-seed{seed}.log", force, threads)
        runs["search"][seed] = {"argv": argv, "seconds": seconds, "ran": searched, "dir": search}
        if seed == args.seeds[0]:
            args.slim_modes = compare_slim_modes(args, search)
            if args.slim_mode == "auto":
                args.slim_mode = args.slim_modes["best"]
            print(f"ViT-Slim selection mode: {args.slim_mode} ({args.slim_modes['top1']})", flush=True)
        for budget in args.budgets:
            b = tag(budget)
            extracted = work / "slim" / b / f"seed{seed}" / "extracted"
            argv = ["slim", "extract", "--search", str(search), "--macs", str(budget), "--mode", args.slim_mode,
                    "-o", str(extracted)]
            seconds, ran = run_cli(argv, extracted, logs / f"extract-{b}-seed{seed}.log", force or searched, threads)
            runs["extract"][f"{b}/seed{seed}"] = {"argv": argv, "seconds": seconds, "ran": ran, "dir": extracted}
            finetune(f"slim/{b}/seed{seed}", extracted, work / "slim" / b / f"seed{seed}" / "finetuned", seed, ran)

            equal = work / "slim_eq" / b / f"seed{seed}" / "extracted"
            argv = [*argv[:-2], "--equal-heads", "-o", str(equal)]
            seconds, ran = run_cli(argv, equal, logs / f"extract-eq-{b}-seed{seed}.log", force or searched, threads)
            runs["extract"][f"eq/{b}/seed{seed}"] = {"argv": argv, "seconds": seconds, "ran": ran, "dir": equal}
            finetune(f"slim_eq/{b}/seed{seed}", equal, work / "slim_eq" / b / f"seed{seed}" / "finetuned", seed, ran)

            pruned = work / "tp" / b / f"seed{seed}" / "pruned"
            done, ran = prune_baseline(args, "tp", budget, seed, pruned, force)
            runs["prune"][f"tp/{b}/seed{seed}"] = {**done, "dir": pruned, "ran": ran}
            finetune(f"tp/{b}/seed{seed}", pruned, work / "tp" / b / f"seed{seed}" / "finetuned", seed, ran)

            uniform = runs["prune"][f"uniform/{b}"]
            finetune(f"uniform/{b}/seed{seed}", uniform["dir"], work / "uniform" / b / f"seed{seed}" / "finetuned",
                     seed, uniform["ran"])
    return runs


# ------------------------------------------------------------------------------------------------ measurements


def read_accuracy(runs: dict[str, Any], teacher: Path) -> dict[str, dict[str, float]]:
    """top-1 before and after fine-tuning of every run, from the fine-tune reports; the teacher's from its own."""
    acc = {"teacher": {"after": json.loads((teacher / "report.json").read_text())["model"]["top-1 (%)"]}}
    for name, run in runs["finetune"].items():
        report = json.loads((run["dir"] / "report.json").read_text())
        before = next(r for r in report["rows"] if r["model"].endswith("(before)"))
        acc[name] = {"before": before["top-1 (%)"], "after": report["val"]["top1"]}
    return acc


def slim_selections(args: argparse.Namespace, runs: dict[str, Any]) -> list[dict[str, str]]:
    """Diagnostic, no training: each search's selection at every budget in share mode (the runs above) and joint
    mode, with the kept shares per mask type and top-1 before fine-tuning."""
    import vitcompress as vc
    from vitcompress.export import read_spec

    norm = read_spec(args.teacher_dir)["extra"]["data"]
    _, val_loader, _ = vc.build_loaders("digits", input_size=tuple(norm["input_size"]), mean=norm["mean"],
                                        std=norm["std"])
    rows = []
    for seed in args.seeds:
        search = runs["search"][seed]["dir"]
        masked = vc.load(search).eval()
        soft = json.loads((search / "report.json").read_text())["masked_val"]["top1"]
        for budget in args.budgets:
            for mode in ("share", "joint"):
                sel = vc.select(masked, macs=budget, mode=mode)
                shares = sel.info["shares"]
                rows.append({"search": f"seed{seed}", "soft-masked top-1 (%)": f"{soft:.2f}",
                             "budget": f"{budget:.0%}", "mode": mode + (" (used)" if mode == args.slim_mode else ""),
                             **{f"{k} kept": f"{v:.3f}" for k, v in shares.items()},
                             "MACs ratio": f"{sel.info['macs_ratio']:.4f}",
                             "params ratio": f"{sel.info['params_ratio']:.4f}",
                             "top-1 before fine-tuning (%)":
                                 f"{vc.evaluate(vc.extract(masked, sel), val_loader)['top1']:.2f}"})
    return rows


# ------------------------------------------------------------------------------------------------------ report


def names(method: str, budget: float, seeds: list[int]) -> list[str]:
    return [f"{method}/{tag(budget)}/seed{s}" for s in seeds]


def fmt_range(values: list[float], digits: int = 3) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if abs(hi - lo) < 0.5 * 10 ** -digits else f"{lo:.{digits}f}–{hi:.{digits}f}"


def accuracy_rows(args: argparse.Namespace, acc: dict, meas: dict) -> list[dict[str, str]]:
    models, teacher = meas["models"], meas["models"]["teacher"]
    t1 = acc["teacher"]["after"]
    rows = [{"model": "teacher (12 layers, 1 run)", "MACs ratio": "1.000", "MACs (M)": f"{teacher['macs'] / 1e6:.3f}",
             "params (M)": f"{teacher['params'] / 1e6:.3f}", "top-1 pruned (%)": "", "top-1 fine-tuned (%)":
             f"{t1:.2f} (n=1)", "Δ vs teacher": ""}]
    for budget in args.budgets:
        for method, label in METHODS.items():
            ns = names(method, budget, args.seeds)
            after = [acc[n]["after"] for n in ns]
            rows.append({
                "model": f"{label}, {budget:.0%} MACs",
                "MACs ratio": fmt_range([models[n]["macs"] / teacher["macs"] for n in ns]),
                "MACs (M)": fmt_range([models[n]["macs"] / 1e6 for n in ns]),
                "params (M)": fmt_range([models[n]["params"] / 1e6 for n in ns]),
                "top-1 pruned (%)": mean_std([acc[n]["before"] for n in ns]),
                "top-1 fine-tuned (%)": mean_std(after),
                "Δ vs teacher": f"{statistics.mean(after) - t1:+.2f}",
            })
    return rows


def latency_rows(args: argparse.Namespace, meas: dict, threads: int) -> list[dict[str, str]]:
    models, teacher = meas["models"], meas["models"]["teacher"]
    cell = lambda xs: f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"
    rows = [{"model": "teacher", "MACs ratio (teacher/model)": "1.00", "SDPA calls": str(teacher["attn_calls"]),
             **{f"b{b} (ms)": cell(teacher[key(b, threads)]) for b in LATENCY_BATCHES}}]
    columns = ["model", "MACs ratio (teacher/model)", "SDPA calls",
               *(f"b{b}{col}" for b in LATENCY_BATCHES for col in (" (ms)", " speedup", " speedup / MACs ratio"))]
    for budget in args.budgets:
        for method, label in METHODS.items():
            ns = names(method, budget, args.seeds)
            ratio = [teacher["macs"] / models[n]["macs"] for n in ns]
            row = {"model": f"{label}, {budget:.0%}", "MACs ratio (teacher/model)": fmt_range(ratio, 2),
                   "SDPA calls": fmt_range([float(models[n]["attn_calls"]) for n in ns], 0)}
            for b in LATENCY_BATCHES:
                sp = [x for n in ns for x in speedups(meas, n, b, threads)]
                eff = [x / (teacher["macs"] / models[n]["macs"]) for n in ns for x in speedups(meas, n, b, threads)]
                row[f"b{b} (ms)"] = cell([x for n in ns for x in models[n][key(b, threads)]])
                row[f"b{b} speedup"] = f"{statistics.median(sp):.2f}×"
                row[f"b{b} speedup / MACs ratio"] = f"{statistics.median(eff):.2f}"
            rows.append(row)
    return [{c: r.get(c, "") for c in columns} for r in rows]


def efficiency(args: argparse.Namespace, meas: dict, method: str, budget: float, batch: int, threads: int) -> float:
    teacher = meas["models"]["teacher"]
    ns = names(method, budget, args.seeds)
    return statistics.median(x / (teacher["macs"] / meas["models"][n]["macs"]) for n in ns
                             for x in speedups(meas, n, batch, threads))


def targets(args: argparse.Namespace, acc: dict, meas: dict, reselect: dict, steps: dict,
            native: dict[str, Any]) -> list[str]:
    met = lambda ok: "**met**" if ok else "**NOT met**"
    mean = lambda method, budget: statistics.mean(acc[n]["after"] for n in names(method, budget, args.seeds))
    t1, out = acc["teacher"]["after"], []
    variants = {"slim": "ViT-Slim", "slim_eq": "ViT-Slim with equal heads"}
    if 0.6 in args.budgets:
        for method, label in variants.items():
            slim = mean(method, 0.6)
            out.append(f"- {label} ≥ teacher − 0.3 at 60% MACs: {met(slim >= t1 - 0.3)} — {slim:.2f}% (mean of "
                       f"{len(args.seeds)} seed(s)) vs teacher {t1:.2f}% ({slim - t1:+.2f} points).")
    for budget in args.budgets:
        tp = mean("tp", budget)
        own = statistics.mean(native[n]["after"] for n in names("tp", budget, args.seeds))
        for method, label in variants.items():
            slim = mean(method, budget)
            out.append(f"- {label} ≥ Torch-Pruning + 1 point at {budget:.0%} MACs: {met(slim - tp >= 1.0)} — "
                       f"{slim:.2f}% vs {tp:.2f}% ({slim - tp:+.2f} points; {slim - own:+.2f} against "
                       "Torch-Pruning's own fused-path models).")
    main_t = args.threads[0]
    for method, label in variants.items():
        cells = [(b, batch, efficiency(args, meas, method, b, batch, main_t)) for b in args.budgets
                 for batch in LATENCY_BATCHES]
        detail = "; ".join(f"{b:.0%} MACs b{batch}: {e:.2f}" for b, batch, e in cells)
        out.append(f"- Latency speedup ≥ 0.9 × MACs ratio ({label}, {main_t} thread): "
                   f"{met(all(e >= 0.9 for *_, e in cells))} — speedup / MACs ratio {detail}"
                   + (" (met only at: " + ", ".join(f"{b:.0%} b{batch}" for b, batch, e in cells if e >= 0.9) + ")"
                      if any(e >= 0.9 for *_, e in cells) and not all(e >= 0.9 for *_, e in cells) else "") + ".")
    out.append(f"- Re-selecting a new budget + extracting < 2 s: {met(reselect['max_s'] < 2.0)} — median "
               f"{reselect['median_s'] * 1e3:.1f} ms, max {reselect['max_s'] * 1e3:.1f} ms over "
               f"{len(reselect['seconds'])} selections.")
    ratio = steps["ratio"]["masked"]
    out.append(f"- Masked training step ≤ 1.25× a plain step: {met(ratio <= 1.25)} — {ratio:.2f}× "
               f"({steps['median_ms']['masked']:.1f} ms vs {steps['median_ms']['plain']:.1f} ms, batch "
               f"{steps['batch']}, 1 thread; attention + MLP masks only: {steps['ratio']['masked_attn_mlp']:.2f}×).")
    return out


def baseline_notes(args: argparse.Namespace, runs: dict) -> list[str]:
    rows = []
    for budget in args.budgets:
        for seed in args.seeds:
            info = runs["prune"][f"tp/{tag(budget)}/seed{seed}"]["info"]
            rows.append({"run": f"tp/{tag(budget)}/seed{seed}", "pruning ratio": f"{info['pruning_ratio']:.4f}",
                         "trials": str(info["trials"]), "MACs ratio": f"{info['macs_ratio']:.4f}",
                         "head dims per layer": " ".join(map(str, info["head_dims"])),
                         "MLP units per layer": " ".join(map(str, info["mlp_units"])),
                         "top-1 TP fused (%)": f"{info['tp_fused_top1']:.2f}",
                         "top-1 TP manual = extracted (%)": f"{info['tp_manual_top1']:.2f}",
                         "max |fused − manual| logit": f"{info['max_abs_diff_tp_fused_vs_manual']:.3f}",
                         "max |extracted − TP| logit": f"{info['max_abs_diff_extracted_vs_tp']:.1e}"})
    return rows


def per_run_rows(runs: dict, acc: dict, meas: dict, threads: list[int]) -> list[dict[str, str]]:
    rows = []
    for name, run in runs["finetune"].items():
        m = meas["models"][name]
        rows.append({"run": name, "top-1 pruned (%)": f"{acc[name]['before']:.2f}",
                     "top-1 fine-tuned (%)": f"{acc[name]['after']:.2f}",
                     "MACs ratio": f"{m['macs'] / meas['models']['teacher']['macs']:.4f}",
                     **{f"b{b} {t}T per round (ms)": " ".join(f"{x:.2f}" for x in m[key(b, t)])
                        for t in threads for b in LATENCY_BATCHES},
                     "fine-tune wall (s)": f"{run['seconds']:.0f}"})
    return rows


def render(args: argparse.Namespace, command: str, runs: dict, acc: dict, meas: dict, reselect: dict,
           steps: dict, recipe_error: str, selections: list[dict[str, str]], breakdown: list[dict[str, str]],
           native: dict[str, Any], total_s: float) -> str:
    from vitcompress.report import markdown_table

    seeds, lb, la = args.seeds, meas["load_before"], meas["load_after"]
    first = seeds[0]
    main_t = args.threads[0]
    b0 = tag(args.budgets[0])
    all_runs = [*runs["search"].values(), *runs["extract"].values(), *runs["finetune"].values()]
    train_s = sum(r["seconds"] for r in all_runs) + sum(r["seconds"] for r in runs["prune"].values())
    reused = sum(not r["ran"] for r in all_runs) + sum(not r["ran"] for r in runs["prune"].values())
    extract_s = [json.loads((r["dir"] / "report.json").read_text())["select_and_extract_s"]
                 for r in runs["extract"].values()]
    extra_latency = []
    for t in args.threads[1:]:
        ratio = spread(meas, t)
        if ratio >= 3:
            extra_latency += [f"**Caution:** at {t} threads the same model's per-round latency varied up to "
                              f"{ratio:.0f}× between rounds (threads spin-waiting for each other on the loaded "
                              f"machine), so this table times the contention more than the models; the "
                              f"{main_t}-thread table above is the one to compare models with.", ""]
        extra_latency += [f"Latency at {t} threads (secondary; same models and rounds):", "",
                          markdown_table(latency_rows(args, meas, t)), ""]
    teacher_cmd = shlex.join(["vitcompress", *args.teacher_run["argv"]])
    teacher_epochs = args.teacher_epochs or recipe_value(TEACHER_RECIPE, "epochs")
    finetune_cmd = lambda m: shlex.join(runs["finetune"][f"{m}/{b0}/seed{first}"]["argv"])
    commands = [
        f"OMP_NUM_THREADS={args.train_threads} vitcompress {shlex.join(runs['search'][first]['argv'])}",
        f"vitcompress {shlex.join(runs['extract'][f'{b0}/seed{first}']['argv'])}",
        *(f"OMP_NUM_THREADS={args.train_threads} vitcompress {finetune_cmd(m)}" for m in METHODS),
    ]
    return "\n".join([
        *_report.heading("## ViT-Slim vs Torch-Pruning vs uniform pruning on `digits` (60% and 40% MACs)", command,
                         args.quick),
        f"Teacher: `{teacher_cmd}` ({teacher_epochs} epochs, one run, {acc['teacher']['after']:.2f}% top-1). "
        f"Seeds {', '.join(map(str, seeds))}; top-1 on the 360 fixed `digits` val images (1 image = 0.28 points), "
        "mean ± sample std over seeds. Per seed and budget:",
        "",
        f"- **(a) ViT-Slim**: `vitcompress slim search --config {SEARCH_RECIPE}` for {args.search_epochs} epochs "
        "(attention, MLP and token masks trained with the weights, ℓ1 weights 2e-4/5e-5/1e-4, logit KD α = 0.5 as in "
        f"the recipe), one search per seed; then `vitcompress slim extract --macs B --mode {args.slim_mode}`. The "
        "mode (share: the same kept share of every mask type, the CLI default; joint: one threshold over all mask "
        "values) was chosen, like Torch-Pruning's ranking below, by top-1 before fine-tuning on the first seed's "
        f"search ({slim_modes_text(args)}).",
        "- **(a′) ViT-Slim, equal heads**: the same search and mode, extracted with `--equal-heads`: every head of a "
        "layer keeps the same number of dims (the layer's thresholded total over its heads, each head's best), so "
        "each layer runs one attention call instead of one per distinct head width.",
        f"- **(b) Torch-Pruning {_tp_version()}**: `MetaPruner` + `GroupTaylorImportance` on the timm teacher, "
        f"gradients of CE over {args.taylor_batches} train batches of 64 (seed-dependent order), **{args.tp_ranking}** "
        "ranking over attention head dims (the same dims in every head of a layer: Torch-Pruning's head-dim mode) "
        "and MLP units; embedding width, patch embedding and head untouched. The pruning ratio is bisected until "
        "the model's `count_macs` is within 1% below B. The ranking scope was chosen by top-1 before fine-tuning "
        f"on seed 0's batches ({tp_rankings_text(args)}). The dims and units Torch-Pruning kept are read back as a "
        "`Selection` and extracted with `vc.extract`; the extracted model is checked to equal Torch-Pruning's "
        "model (notes below).",
        "- **(c) uniform**: every layer keeps the same k of 16 dims in every head and the same m of 256 MLP units, "
        "the largest-ℓ1 rows (q+k+v rows of a dim; fc1 row of a unit) of the teacher; k and m from one shared "
        "share, then m raised while the MACs stay within B (one step of k moves the MACs by several percent here). "
        "Built with `vc.extract(teacher, Selection)`; one model per budget, the same for every seed.",
        f"- **Fine-tuning** (every method, same command): `vitcompress finetune` {args.finetune_epochs} epochs, "
        f"lr {args.lr}, AdamW wd 0.05, 1 warmup epoch, cosine, batch 64, logit KD from the teacher with "
        f"α = {args.kd_alpha}, T = 1. \"top-1 pruned\" is before fine-tuning.",
        f"- Every training run used {args.train_threads} torch thread(s) (OMP_NUM_THREADS); MACs per image, "
        "attention matmuls included; MACs ratio = model / teacher.",
        "",
        markdown_table(accuracy_rows(args, acc, meas)),
        "",
        f"Latency at **{main_t} thread** (ms per forward of the whole batch; speedup = teacher / model latency in "
        "the same round; speedup / MACs ratio, target ≥ 0.9, with MACs ratio = teacher MACs / model MACs; SDPA "
        "calls = attention kernels per forward: extracted layers run one per group of equal-width heads):",
        "",
        markdown_table(latency_rows(args, meas, main_t)),
        "",
        *extra_latency,
        "Latency: `vitcompress.metrics.measure_latency` on the saved fine-tuned models (`vitcompress.load`), CPU, "
        f"batch 1 and 32, {args.min_run_time} s timed per measurement, after all training, in {args.rounds} rounds "
        f"over all {len(meas['models'])} models in shuffled order; a cell is the median over rounds and seeds, "
        f"[min–max]. Load average (1/5/15 min) {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before the latency runs and "
        f"{la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} after, on {_report.usable_cores()} shared cores; compare rows, not "
        "absolute values.",
        "",
        "Where the time goes at batch 32, 1 thread (torch.profiler self CPU time per forward, seed "
        f"{first} models, 20 forwards per pass, median of 3 round-robin passes). Compare the columns across rows: "
        "the MACs sit in the matmuls (small, odd-sized "
        "GEMMs here), while the attention kernel (CPU flash attention over 17 tokens of head width ≤ 16) and the "
        "rest (LayerNorms, GELU, residual adds, copies, patch embedding) are mostly per-op and per-token costs "
        "that pruning widths does not remove.",
        "",
        markdown_table(breakdown),
        "",
        f"Re-selecting a budget: `vc.select(masked, macs=B)` + `vc.extract` on the seed-{first} search loaded once, "
        f"1 thread, budgets {', '.join(str(b) for b in reselect['budgets'])} × {reselect['repeats']}: median "
        f"{reselect['median_s'] * 1e3:.1f} ms, max {reselect['max_s'] * 1e3:.1f} ms. Inside the `slim extract` runs "
        f"above (each its own process): {min(extract_s) * 1e3:.0f}–{max(extract_s) * 1e3:.0f} ms; the whole "
        f"command, with Python start-up, loading and saving, took "
        f"{min(r['seconds'] for r in runs['extract'].values()):.1f}–"
        f"{max(r['seconds'] for r in runs['extract'].values()):.1f} s.",
        "",
        f"Training step (forward + loss + backward + clip + AdamW, batch {steps['batch']}, the same batch, 1 thread, "
        f"median of {steps['steps']} steps per model, interleaved): plain teacher with CE "
        f"{steps['median_ms']['plain']:.1f} ms; masked (attention + MLP + token masks, CE + ℓ1) "
        f"{steps['median_ms']['masked']:.1f} ms ({steps['ratio']['masked']:.2f}×); attention + MLP masks only "
        f"{steps['median_ms']['masked_attn_mlp']:.1f} ms ({steps['ratio']['masked_attn_mlp']:.2f}×).",
        "",
        "Targets (from the product issue):",
        "",
        *targets(args, acc, meas, reselect, steps, native),
        "",
        "Torch-Pruning on timm 1.0.31: its documented ViT recipe rebinds `Attention.forward(self, x)`, and the "
        f"teacher then fails with `{recipe_error}`; timm's own forward works once `num_heads`, `head_dim` and "
        "`attn_dim` are set after pruning. The stale `scale` remains: timm's fused path (SDPA, 1/√(new head_dim)) "
        "and its manual path (`self.scale`, 1/√(original head_dim)) of the same pruned model disagree "
        "(column \"fused − manual\"). "
        "The manual path is the one that keeps the teacher's function on the kept dims, and is what the extracted "
        "models compute, for every method alike.",
        "",
        markdown_table(baseline_notes(args, runs)),
        "",
        "Check of that convention: Torch-Pruning's own models on timm's fused path, fine-tuned in process by "
        "`vitcompress.train.fit` with the same objective, epochs, seeds and data order as `vitcompress finetune`: "
        + "; ".join(
            f"{b:.0%} MACs: {mean_std([native[n]['after'] for n in names('tp', b, seeds)])} "
            f"(before fine-tuning {mean_std([native[n]['before'] for n in names('tp', b, seeds)])}) vs "
            f"{mean_std([acc[n]['after'] for n in names('tp', b, seeds)])} for the extracted ones in the main table"
            for b in args.budgets) + ".",
        "",
        "ViT-Slim selections (diagnostic, no training): what `select(macs=B)` keeps from each search in both modes "
        "and the extracted model's top-1 before fine-tuning; \"soft-masked\" is the searched model with its "
        "continuous masks.",
        "",
        markdown_table(selections),
        "",
        f"Wall time: {train_s / 60:.1f} min of searching, pruning and fine-tuning over "
        f"{len(all_runs) + len(runs['prune'])} runs, plus {sum(v['seconds'] for v in native.values()) / 60:.1f} "
        f"min for the fused-path Torch-Pruning check; this invocation took {total_s / 60:.1f} min"
        + (f", reusing {reused} finished run(s) from an earlier one." if reused else "."),
        "",
        *_report.details("The commands (first seed, first budget) and every fine-tuned model", commands,
                         markdown_table(per_run_rows(runs, acc, meas, args.threads))),
    ])


def slim_modes_text(args: argparse.Namespace) -> str:
    top1 = args.slim_modes["top1"]
    return "; ".join(f"{m}: " + "/".join(f"{v:.1f}" for v in top1[m].values()) + "%" for m in top1) + \
        " at " + "/".join(f"{b:.0%}" for b in args.budgets) + " MACs"


def tp_rankings_text(args: argparse.Namespace) -> str:
    top1 = args.rankings["top1"]
    return "; ".join(f"{r}: " + "/".join(f"{v:.1f}" for v in top1[r].values()) + "%" for r in top1) + \
        " at " + "/".join(f"{b:.0%}" for b in args.budgets) + " MACs"


def _tp_version() -> str:
    from importlib.metadata import version

    return version("torch-pruning")


# -------------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: 2 epochs, seed 0, 2 latency rounds")
    p.add_argument("--search-epochs", type=int, help="ViT-Slim search epochs (default: 10)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tune epochs, every method (default: 10)")
    p.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER,
                   help=f"finished teacher run to reuse (default: {DEFAULT_TEACHER}); trained into <work>/teacher "
                        "with the digits-teacher recipe when missing")
    p.add_argument("--teacher-epochs", type=int, help="epochs if the teacher must be trained (default: the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.6, 0.4], help="MACs budgets (default: 0.6 0.4)")
    p.add_argument("--kd-alpha", type=float, default=0.5, help="logit KD weight of every fine-tune (default: 0.5)")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tune peak lr (default: 5e-4)")
    p.add_argument("--taylor-batches", type=int, default=10, help="train batches for the Taylor importance")
    p.add_argument("--slim-mode", choices=["auto", "share", "joint"], default="auto",
                   help="`slim extract --mode` (default auto: the better before fine-tuning on the first seed)")
    p.add_argument("--tp-ranking", choices=["auto", *_baselines.TP_RANKINGS], default="auto",
                   help="Torch-Pruning ranking scope (default auto: the best before fine-tuning, see the section)")
    p.add_argument("--work", type=Path, help="run directory (default: out/bench-slim[-quick])")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: <work>/BENCHMARKS.md)")
    p.add_argument("--rounds", type=int, help="latency rounds over all models (default: 5; --quick: 2)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch CPU threads for the latency runs; the first is the main table (default: 1 2)")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads of each training run (default: 1)")
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds timed per latency measurement")
    p.add_argument("--steps", type=int, help="timed training steps per model (default: 100; --quick: 10)")
    p.add_argument("--force", action="store_true", help="redo every run even where an identical finished one exists")
    args = p.parse_args(argv)
    quick = args.quick
    args.search_epochs = args.search_epochs or (2 if quick else 10)
    args.finetune_epochs = args.finetune_epochs or (2 if quick else 10)
    args.seeds = args.seeds or ([0] if quick else [0, 1, 2])
    args.work = args.work or Path("out/bench-slim-quick" if quick else "out/bench-slim")
    args.md = args.md or (args.work / "BENCHMARKS.md" if quick else Path("BENCHMARKS.md"))
    args.rounds = args.rounds or (2 if quick else 5)
    args.steps = args.steps or (10 if quick else 100)
    if quick and args.teacher_epochs is None:
        args.teacher_epochs = 2  # only used if no finished teacher run is there
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["python", "benchmarks/slim_digits.py", *raw])
    import torch

    torch.set_num_threads(args.train_threads)  # in-process pruning and timing, like the training subprocesses
    args.teacher_run = get_teacher(args)
    args.teacher_dir = args.teacher_run["dir"]
    if not args.teacher_run["ran"] and args.teacher_dir == args.teacher:
        args.teacher_epochs = None  # reused: the recipe's epochs
    args.teacher_sha = teacher_sha(args.teacher_dir)
    args.rankings = compare_tp_rankings(args)
    if args.tp_ranking == "auto":
        args.tp_ranking = args.rankings["best"]
    print(f"Torch-Pruning ranking: {args.tp_ranking}", flush=True)
    runs = run_all(args)
    acc = read_accuracy(runs, args.teacher_dir)
    native = tp_native(args)
    selections = slim_selections(args, runs)
    print("timing select + extract and training steps", flush=True)
    reselect = time_reselect(runs["search"][args.seeds[0]]["dir"], RESELECT_BUDGETS, 1 if args.quick else 3)
    steps = time_steps(args.teacher_dir, SEARCH_RECIPE, args.steps)
    import vitcompress as vc

    size = tuple(json.loads((args.teacher_dir / "spec.json").read_text())["extra"]["data"]["input_size"])
    recipe_error = _baselines.documented_recipe_error(vc.load(args.teacher_dir), size)
    dirs = {"teacher": args.teacher_dir, **{n: r["dir"] for n, r in runs["finetune"].items()}}
    meas = measure_models(saved_models(dirs), args.rounds, args.threads, args.min_run_time,
                          warmup=few_warmups_for_big_batches)
    first = args.seeds[0]
    breakdown = op_breakdown({"teacher": args.teacher_dir, **{
        f"{m}/{tag(b)}/seed{first}": runs["finetune"][f"{m}/{tag(b)}/seed{first}"]["dir"]
        for b in args.budgets for m in METHODS}}, batch=32)
    body = render(args, command, runs, acc, meas, reselect, steps, recipe_error, selections, breakdown, native,
                  time.perf_counter() - start)
    (args.work / "results.json").write_text(json.dumps(
        {"accuracy": acc, "measurements": meas, "reselect": reselect, "steps": steps, "runs": runs,
         "slim_selections": selections, "op_breakdown": breakdown, "tp_native": native},
        indent=2, default=str))
    _report.publish(args.md, SECTION, body)


if __name__ == "__main__":
    main()
