"""CPU latency of extracted ViT-Slim models at ImageNet size (DeiT-Ti/S, 224²) against their MACs ratio.

The digits benchmark (`slim_digits.py`) measures accuracy, but its 0.6M-parameter model runs 17 tokens through
64-wide layers, where per-op overhead, not MACs, sets the time. Here the same extraction runs on real DeiT
shapes. Latency depends on the structure only, not on the weights, so no ImageNet or hub weights are needed:
`pretrained=False` models get masks with seeded random values (uniform in [0, 1) for attention dims and MLP units,
token θ uniform in [0, 3)), which is the hardest case for the extracted layout (every layer ends with heads of many
widths; a real search's masks are at least as regular). For each budget B of the MACs:

    slim        `select(macs=B)` (share mode) over attention + MLP masks, `extract`
    slim_eq     the same with `equal_heads=True`: every head of a layer keeps the same number of dims
    slim_tokens attention + MLP + token masks, `select(macs=B)`, `extract` (tokens gathered where they drop)
    uniform     every layer keeps the same k dims per head and m MLP units (largest ℓ1 first), as in the digits
                benchmark: a plain timm-shaped model, the reference for what a width cut can gain

and every model is timed with `vitcompress.metrics.measure_latency` at batch 1 and 32, in shuffled rounds.
Writes the `slim-latency` section of BENCHMARKS.md.

    python benchmarks/slim_latency.py            # DeiT-Ti and DeiT-S, 5 rounds (about 25 min on 2 CPU cores)
    python benchmarks/slim_latency.py --quick    # DeiT-Ti, 1 round: checks the script, not the numbers
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
from _measure import few_warmups_for_big_batches, key, measure_models, speedups

SECTION = "slim-latency"
VARIANTS = {
    "slim": "ViT-Slim (attention + MLP)",
    "slim_eq": "ViT-Slim (attention + MLP), equal heads",
    "slim_tokens": "ViT-Slim (attention + MLP + tokens)",
    "uniform": "uniform ℓ1 magnitude",
}


def random_masks(masked: Any, seed: int) -> Any:
    """Seeded mask values: attention/MLP uniform in [0, 1), token θ uniform in [0, 3)."""
    import torch

    from vitcompress.slim.attach import mask_tensors

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for kind, tensors in mask_tensors(masked).items():
            for t in tensors:
                t.copy_(torch.rand(t.shape, generator=gen) * (3.0 if kind == "tokens" else 1.0))
    return masked


def build_models(arch: str, budgets: list[float], seed: int) -> tuple[dict[str, Any], dict[str, dict]]:
    """The teacher and every variant at every budget, with each selection's info."""
    import timm
    import torch

    import vitcompress as vc

    torch.manual_seed(seed)
    teacher = timm.create_model(arch, pretrained=False).eval()
    size = (3, *teacher.patch_embed.img_size)
    dims = random_masks(vc.attach_masks(teacher, vc.SlimConfig(attn=True, mlp=True, tokens=False)), seed)
    tokens = random_masks(vc.attach_masks(teacher, vc.SlimConfig(attn=True, mlp=True, tokens=True)), seed)
    models, infos = {"teacher": (teacher, size)}, {}
    for budget in budgets:
        selections = {
            "slim": (dims, vc.select(dims, macs=budget)),
            "slim_eq": (dims, vc.select(dims, macs=budget, equal_heads=True)),
            "slim_tokens": (tokens, vc.select(tokens, macs=budget)),
            "uniform": (teacher, _baselines.uniform_selection(teacher, budget)),
        }
        for variant, (source, sel) in selections.items():
            name = f"{variant}/{budget:.0%}"
            models[name] = (vc.extract(source, sel).eval(), size)
            infos[name] = {k: v for k, v in sel.info.items() if k in ("macs_ratio", "shares", "attn_share",
                                                                       "mlp_share")}
    return models, infos


def table(args: argparse.Namespace, meas: dict, threads: int) -> list[dict[str, str]]:
    models = meas["models"]
    full = models["teacher"]["macs"]
    rows = []
    for name, m in models.items():
        variant, _, budget = name.partition("/")
        ratio = full / m["macs"]
        row = {"model": "teacher" if name == "teacher" else f"{VARIANTS[variant]}, {budget} MACs",
               "GMACs": f"{m['macs'] / 1e9:.3f}", "params (M)": f"{m['params'] / 1e6:.2f}",
               "MACs ratio (teacher/model)": f"{ratio:.2f}", "SDPA calls": str(m["attn_calls"])}
        for b in args.batches:
            times = m[key(b, threads)]
            row[f"b{b} (ms)"] = f"{statistics.median(times):.1f} [{min(times):.1f}–{max(times):.1f}]"
            if name != "teacher":
                sp = statistics.median(speedups(meas, name, b, threads))
                row[f"b{b} speedup"] = f"{sp:.2f}×"
                row[f"b{b} speedup / MACs ratio"] = f"{sp / ratio:.2f}"
        rows.append(row)
    columns = ["model", "GMACs", "params (M)", "MACs ratio (teacher/model)", "SDPA calls",
               *(f"b{b}{c}" for b in args.batches for c in (" (ms)", " speedup", " speedup / MACs ratio"))]
    return [{c: r.get(c, "") for c in columns} for r in rows]


def target_lines(args: argparse.Namespace, arch: str, meas: dict, threads: int) -> list[str]:
    full = meas["models"]["teacher"]["macs"]
    out = []
    for variant in VARIANTS:
        cells = []
        for budget in args.budgets:
            name = f"{variant}/{budget:.0%}"
            ratio = full / meas["models"][name]["macs"]
            cells += [(budget, b, statistics.median(speedups(meas, name, b, threads)) / ratio) for b in args.batches]
        met = all(e >= 0.9 for *_, e in cells)
        detail = "; ".join(f"{budget:.0%} b{b}: {e:.3f}" for budget, b, e in cells)
        verdict = ("(reference, not a target: a timm-shaped cut of the same MACs)" if variant == "uniform" else
                   "**met**" if met else "**NOT met**")
        out.append(f"- {arch}, {VARIANTS[variant]}, {threads} thread(s): speedup ≥ 0.9 × MACs ratio "
                   f"{verdict} — {detail}.")
    return out


def render(args: argparse.Namespace, command: str, results: dict[str, dict], total_s: float) -> str:
    from vitcompress.report import markdown_table

    lines = [
        *_report.heading("## ViT-Slim latency at ImageNet size (DeiT-Ti/S, 224², CPU)", command, args.quick),
        "What an extracted model gains in CPU latency against its MACs ratio, at real DeiT shapes (197 tokens). "
        "`pretrained=False` models with seeded random mask values (latency depends on the structure, not the "
        "weights); random masks leave every layer with heads of many widths, the hardest case for the extracted "
        "layout. Per budget: ViT-Slim `select(macs=B)` (share mode) + `extract` over attention + MLP masks "
        "(ragged heads: one SDPA call per distinct head width in a layer); the same with `equal_heads=True` (one "
        "SDPA call per layer); with token masks too (the kept tokens are gathered where they drop); and the "
        "uniform ℓ1 cut (same k dims per head and m MLP units in every layer, as in the digits benchmark). "
        f"`vitcompress.metrics.measure_latency`, {args.min_run_time} s timed per cell, {args.rounds} rounds over all "
        "models of an architecture in shuffled order; a cell is the median over rounds [min–max]; speedup = "
        "teacher / model latency in the same round, median over rounds.",
        "",
    ]
    for arch, res in results.items():
        meas = res["measurements"]
        lb, la = meas["load_before"], meas["load_after"]
        for t in args.threads:
            lines += [f"**{arch}**, {t} thread(s):", "", markdown_table(table(args, meas, t)), ""]
        lines += [f"Load average (1/5/15 min) {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before and "
                  f"{la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} after the {arch} rounds.", ""]
    lines += ["Targets (from the product issue: latency speedup ≥ 0.9 × MACs ratio):", ""]
    for arch, res in results.items():
        for t in args.threads:
            lines += target_lines(args, arch, res["measurements"], t)
    lines += ["", f"This invocation took {total_s / 60:.1f} min."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: DeiT-Ti, 1 round, budget 0.6")
    p.add_argument("--archs", nargs="+", help="timm architectures (default: deit_tiny_patch16_224 "
                                              "deit_small_patch16_224)")
    p.add_argument("--budgets", type=float, nargs="+", help="MACs budgets (default: 0.8 0.6 0.4)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default: 1 32)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU threads (default: 1 2)")
    p.add_argument("--rounds", type=int, help="latency rounds over all models (default: 5; --quick: 1)")
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds timed per latency cell")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask values")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: out/bench-slim-latency-quick/BENCHMARKS.md)")
    args = p.parse_args(argv)
    args.archs = args.archs or (["deit_tiny_patch16_224"] if args.quick else
                                ["deit_tiny_patch16_224", "deit_small_patch16_224"])
    args.budgets = args.budgets or ([0.6] if args.quick else [0.8, 0.6, 0.4])
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.md = args.md or (Path("out/bench-slim-latency-quick/BENCHMARKS.md") if args.quick else Path("BENCHMARKS.md"))
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["python", "benchmarks/slim_latency.py", *raw])
    results = {}
    for arch in args.archs:
        print(f"{arch}: building", flush=True)
        models, infos = build_models(arch, args.budgets, args.seed)
        meas = measure_models(models, args.rounds, args.threads, args.min_run_time, tuple(args.batches),
                              warmup=few_warmups_for_big_batches)
        results[arch] = {"measurements": meas, "selections": infos}
    body = render(args, command, results, time.perf_counter() - start)
    out = args.md.parent / "slim_latency.json" if args.quick else Path("out/bench-slim-latency/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    _report.publish(args.md, SECTION, body)


if __name__ == "__main__":
    main()
