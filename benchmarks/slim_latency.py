"""CPU latency of extracted ViT-Slim models at ImageNet size (DeiT-Ti/S, 224²) against their MACs ratio.

The method benchmarks (`methods.py`) measure accuracy, but their 0.3M-parameter models run 17 tokens through
64-wide layers, where per-op overhead, not MACs, sets the time. Here the same extraction runs on real DeiT
shapes. Latency depends on the structure only, not on the weights, so no ImageNet or hub weights are needed:
`pretrained=False` models get masks with seeded random values (uniform in [0, 1) for attention dims and MLP units,
token θ uniform in [0, 3)), which is the hardest case for the extracted layout (every layer ends with heads of many
widths; a real search's masks are at least as regular). For each budget B of the MACs:

    slim        `select(macs=B)` (share mode) over attention + MLP masks, `extract`
    slim_eq     the same with `equal_heads=True`: every head of a layer keeps the same number of dims
    slim_tokens attention + MLP + token masks, `select(macs=B)`, `extract` (tokens gathered where they drop)
    slim_m8     `select(macs=B, multiple_of=8)`: every head width and MLP width a multiple of 8 (hardware-aligned)
    uniform     every layer keeps the same share of dims per head and of MLP units (largest ℓ1 first), as in the
                method benchmarks: a plain timm-shaped model, the reference for what a width cut can gain
    uniform_copy  the uniform cut extracted a second time (noise control: an identical model in its own row)
    tp          Torch-Pruning's Taylor importance (global ranking) at the same MACs, its own pruned timm model
                (gradients of CE on seeded random images: latency depends on the structure only)

and every model is timed with `vitcompress.metrics.measure_latency` at batch 1 and 32, in shuffled rounds, in each
runtime: torch eager, `torch.compile` (compiled once per model) and onnxruntime (exported once per model with
`vc.export_onnx`, which checks the graph against torch). Writes the `slim-latency` section of BENCHMARKS.md and,
per architecture, a figure of measured speedup against the MACs ratio (figures/ beside it).

    python benchmarks/slim_latency.py            # DeiT-Ti and DeiT-S, 3 runtimes, 3 rounds (hours on 2 CPU cores)
    python benchmarks/slim_latency.py --quick    # DeiT-Ti, 1 round: checks the script, not the numbers
    python benchmarks/slim_latency.py --device cuda --dtype fp16   # GPU, eager: does multiple_of=8 pay off there?

On a GPU the models run in the given dtype (fp16 Tensor Cores and flash attention want widths that are multiples
of 8, which is what `multiple_of=8` is for); onnxruntime runs on CPU here, so `--device cuda` times torch eager
(default) and, if asked, `torch.compile`, and writes its own section (`slim-latency-gpu-<dtype>`).
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
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --dtype -> torch's name
VARIANTS = {
    "slim": "ViT-Slim (attention + MLP)",
    "slim_eq": "ViT-Slim (attention + MLP), equal heads",
    "slim_m8": "ViT-Slim (attention + MLP), multiple_of=8",
    "slim_tokens": "ViT-Slim (attention + MLP + tokens)",
    "uniform": "uniform ℓ1 magnitude",
    "uniform_copy": "uniform ℓ1 magnitude, second copy (noise control)",
    "tp": "Torch-Pruning (Taylor)",
}
SLIM_VARIANTS = ("slim", "slim_eq", "slim_m8", "slim_tokens")
RUNTIMES = ("eager", "compile", "onnxruntime")


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


def build_models(arch: str, budgets: list[float], seed: int, variants: list[str]
                 ) -> tuple[dict[str, Any], dict[str, dict]]:
    """The teacher and every variant at every budget, with each selection's info."""
    import timm
    import torch

    import vitcompress as vc

    torch.manual_seed(seed)
    teacher = timm.create_model(arch, pretrained=False).eval()
    size = (3, *teacher.patch_embed.img_size)
    dims = random_masks(vc.attach_masks(teacher, vc.SlimConfig(attn=True, mlp=True, tokens=False)), seed)
    tokens = random_masks(vc.attach_masks(teacher, vc.SlimConfig(attn=True, mlp=True, tokens=True)), seed)
    makers = {
        "slim": lambda b: (dims, vc.select(dims, macs=b)),
        "slim_eq": lambda b: (dims, vc.select(dims, macs=b, equal_heads=True)),
        "slim_m8": lambda b: (dims, vc.select(dims, macs=b, multiple_of=8)),
        "slim_tokens": lambda b: (tokens, vc.select(tokens, macs=b)),
        "uniform": lambda b: (teacher, _baselines.uniform_selection(teacher, b)),
        # The same model extracted again: an independent instance timed as its own row, so the report can say how
        # often noise alone makes a model "slower" than an identical one.
        "uniform_copy": lambda b: (teacher, _baselines.uniform_selection(teacher, b)),
        "tp": lambda b: torch_pruning(teacher, b, size, seed),
    }
    models, infos = {"teacher": (teacher, size)}, {}
    for budget in budgets:
        for variant in variants:
            name = f"{variant}/{budget:.0%}"
            source, sel = makers[variant](budget)
            models[name] = (vc.extract(source, sel).eval() if variant != "tp" else source, size)
            infos[name] = {k: v for k, v in sel.info.items() if k in ("macs_ratio", "shares", "attn_share",
                                                                       "mlp_share", "pruning_ratio")}
    return models, infos


def torch_pruning(teacher: Any, budget: float, size: tuple[int, ...], seed: int) -> tuple[Any, Any]:
    """Torch-Pruning's own model at `budget` of the MACs (Taylor importance on CE gradients of seeded random
    images: the structure, not the accuracy, is what latency measures) and the selection read off it."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(4, *size, generator=gen), torch.randint(0, teacher.num_classes, (4,), generator=gen))
               for _ in range(2)]
    model, selection, _ = _baselines.taylor_prune(teacher, batches, budget, size, batches[0][0][:2])
    return model, selection


def runners_for(models: dict[str, Any], runtime: str, work: Path) -> dict[str, Any] | None:
    """What `measure_latency` times in `runtime`: the models themselves (eager), each compiled once, or each
    exported once to ONNX (checked against torch by `export_onnx`)."""
    import torch

    import vitcompress as vc

    if runtime == "eager":
        return None
    if runtime == "compile":
        return {name: torch.compile(m) for name, (m, _) in models.items()}
    work.mkdir(parents=True, exist_ok=True)
    return {name: str(vc.export_onnx(m, work / (name.replace("/", "_").replace("%", "") + ".onnx"),
                                     input_size=size).path)
            for name, (m, size) in models.items()}


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


def target_lines(args: argparse.Namespace, arch: str, meas: dict, threads: int, runtime: str) -> list[str]:
    full = meas["models"]["teacher"]["macs"]
    out = []
    for variant in args.variants:
        cells = []
        for budget in args.budgets:
            name = f"{variant}/{budget:.0%}"
            ratio = full / meas["models"][name]["macs"]
            cells += [(budget, b, statistics.median(speedups(meas, name, b, threads)) / ratio) for b in args.batches]
        met = all(e >= 0.9 for *_, e in cells)
        detail = "; ".join(f"{budget:.0%} b{b}: {e:.3f}" for budget, b, e in cells)
        verdict = ("(reference, not a target)" if variant not in SLIM_VARIANTS else
                   "**met**" if met else "**NOT met**")
        out.append(f"- {arch}, {runtime}, {VARIANTS[variant]}, {threads} thread(s): speedup ≥ 0.9 × MACs ratio "
                   f"{verdict} — {detail}.")
    return out


def best_runtime_lines(args: argparse.Namespace, arch: str, by_runtime: dict[str, dict], batch: int = 32
                       ) -> list[str]:
    """Issue 10's targets: at batch 32, speedup ≥ 0.9 × MACs ratio in the best runtime (speedup against the
    teacher in that runtime), and ViT-Slim never slower than the uniform cut at equal MACs (same runtime)."""
    if batch not in args.batches:
        return []
    out = []
    for t in args.threads:
        for variant in [v for v in args.variants if v in SLIM_VARIANTS]:
            best = {}  # budget -> (speedup / MACs ratio, runtime) of the runtime where it is highest
            for budget in args.budgets:
                name = f"{variant}/{budget:.0%}"
                best[budget] = max((statistics.median(speedups(m, name, batch, t))
                                    * m["models"][name]["macs"] / m["models"]["teacher"]["macs"], rt)
                                   for rt, m in by_runtime.items())
            met = all(e >= 0.9 for e, _ in best.values())
            detail = "; ".join(f"{b:.0%}: {e:.2f} ({rt})" for b, (e, rt) in best.items())
            scope = "the best runtime" if len(by_runtime) > 1 else f"{next(iter(by_runtime))} (the one runtime timed)"
            out.append(f"- {arch}, b{batch}, {t} thread(s), {VARIANTS[variant]}: speedup ≥ 0.9 × MACs ratio in "
                       f"{scope} {'**met**' if met else '**NOT met**'} — {detail}.")
    if "uniform" not in args.variants:
        return out
    slim = [v for v in args.variants if v in SLIM_VARIANTS]
    ratios = {v: ratios_to_uniform(args, by_runtime, v) for v in [*slim, "uniform_copy"] if v in args.variants}
    slower = [f"{cell}: {r:.2f}×" for v in slim for cell, r in ratios[v] if r > 1]
    out.append(f"- {arch}: ViT-Slim never slower than the uniform cut at equal MACs (latency / the uniform cut's "
               "latency in the same round, median over rounds) "
               f"{'**met**' if not slower else '**NOT met**'}"
               + (f" — slower in {len(slower)} cell(s): {'; '.join(slower)}." if slower else "."))
    out.append(f"- {arch}: latency / the uniform cut's, median over each variant's cells: "
               + "; ".join(f"{VARIANTS[v]} {statistics.median(r for _, r in cells):.2f}"
                           for v, cells in ratios.items()) + ".")
    if "uniform_copy" in ratios:
        rs = [r for _, r in ratios["uniform_copy"]]
        out.append(f"- {arch}: noise control — the uniform cut's second copy (the same model) reads as slower than "
                   f"the uniform cut in {sum(r > 1 for r in rs)} of {len(rs)} cells (ratios {min(rs):.2f}–"
                   f"{max(rs):.2f}): how often a per-cell comparison calls an equally fast model slower here.")
    return out


def ratios_to_uniform(args: argparse.Namespace, by_runtime: dict[str, dict], variant: str
                      ) -> list[tuple[str, float]]:
    """Per cell (runtime, batch, threads, budget): the variant's latency over the uniform cut's, each round paired
    with the same round (like the speedups), median over rounds."""
    out = []
    for rt, m in by_runtime.items():
        for t in args.threads:
            for b in args.batches:
                for budget in args.budgets:
                    uniform = m["models"][f"uniform/{budget:.0%}"][key(b, t)]
                    own = m["models"][f"{variant}/{budget:.0%}"][key(b, t)]
                    ratio = statistics.median(x / u for x, u in zip(own, uniform, strict=True))
                    out.append((f"{rt} b{b} t{t} {variant} {budget:.0%}", ratio))
    return out


def render(args: argparse.Namespace, command: str, results: dict[str, dict], total_s: float) -> str:
    from vitcompress.report import markdown_table

    lines = [
        *_report.heading(f"## ViT-Slim latency at ImageNet size (DeiT-Ti/S, 224², {where(args)})"
                         + ("" if args.section == SECTION else f": {', '.join(args.runtimes)}"), command, args.quick),
        f"What an extracted model gains in {where(args)} latency against its MACs ratio, at real DeiT shapes "
        "(197 tokens). "
        "`pretrained=False` models with seeded random mask values (latency depends on the structure, not the "
        "weights); random masks leave every layer with heads of many widths, the hardest case for the extracted "
        "layout. Per budget: ViT-Slim `select(macs=B)` (share mode) + `extract` over attention + MLP masks "
        "(ragged heads: one SDPA call per distinct head width in a layer); the same with `equal_heads=True` (one "
        "SDPA call per layer); with token masks too (the kept tokens are gathered where they drop); and the "
        "uniform ℓ1 cut (same dims share per head and MLP share in every layer, as in the method benchmarks); "
        "`select(macs=B, multiple_of=8)` (every head and MLP width a multiple of 8); and Torch-Pruning's own "
        "Taylor-pruned model at the same MACs; the uniform cut extracted a second time is timed as its own row, "
        "a noise control (an identical model: how far two equally fast models read apart here). "
        "Runtimes: torch eager, `torch.compile` (one compilation per model, "
        "untimed warm-up) and onnxruntime (one `vc.export_onnx` per model, checked against torch). "
        f"`vitcompress.metrics.measure_latency`, {args.min_run_time} s timed per cell, {args.rounds} rounds over all "
        "models of an architecture in shuffled order, per runtime; a cell is the median over rounds [min–max]; "
        "speedup = teacher / model latency in the same round and runtime, median over rounds.",
        "",
    ]
    for arch, res in results.items():
        for runtime, meas in res["measurements"].items():
            lb, la = meas["load_before"], meas["load_after"]
            for t in args.threads:
                lines += [f"**{arch}**, {runtime}, {t} thread(s):", "", markdown_table(table(args, meas, t)), ""]
            lines += [f"Load average (1/5/15 min) {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before and "
                      f"{la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} after the {arch} {runtime} rounds.", ""]
    lines += ["Targets (issue 10: at batch 32, speedup ≥ 0.9 × MACs ratio in the best runtime; ViT-Slim never "
              "slower than the uniform cut at equal MACs):", ""]
    for arch, res in results.items():
        lines += best_runtime_lines(args, arch, res["measurements"])
    lines += ["", "Per runtime and batch size (speedup ≥ 0.9 × MACs ratio):", ""]
    for arch, res in results.items():
        for runtime, meas in res["measurements"].items():
            for t in args.threads:
                lines += target_lines(args, arch, meas, t, runtime)
    for arch, res in results.items():
        png = speedup_figure(args, arch, res["measurements"])
        if png is not None:
            caption = f"{arch}: measured speedup vs MACs ratio, every variant, runtime, batch and thread count"
            lines += ["", f"![{caption}]({png.relative_to(args.md.parent).as_posix()})", "", f"*{caption}*"]
    lines += ["", f"This invocation took {total_s / 60:.1f} min."]
    return "\n".join(lines)


def where(args: argparse.Namespace) -> str:
    """The device and dtype the models ran in, as the title says it: "CPU", "CUDA fp16", ..."""
    device = "CPU" if args.device == "cpu" else args.device.upper()
    return device + ("" if args.dtype == "fp32" else f" {args.dtype}")


def speedup_figure(args: argparse.Namespace, arch: str, by_runtime: dict[str, dict]) -> Path | None:
    """Speedup (median over rounds) against MACs ratio, one point per model and setting, with the ideal line."""
    from vitcompress.report import plots

    if plots.pyplot() is None:
        print(f"no figure: {plots.PLOT_INSTALL}", flush=True)
        return None
    points = []
    for meas in by_runtime.values():
        full = meas["models"]["teacher"]["macs"]
        for name, m in meas["models"].items():
            if name == "teacher" or name.startswith("uniform_copy/"):  # the control would hide the uniform cut
                continue
            for t in args.threads:
                for b in args.batches:
                    points.append({"method": VARIANTS[name.partition("/")[0]], "macs_ratio": m["macs"] / full,
                                   "speedup": statistics.median(speedups(meas, name, b, t))})
    out = args.md.parent / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return plots.plot_speedup(points, out / f"{args.section}-{arch}.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: DeiT-Ti, 1 round, budget 0.6")
    p.add_argument("--archs", nargs="+", help="timm architectures (default: deit_tiny_patch16_224 "
                                              "deit_small_patch16_224)")
    p.add_argument("--budgets", type=float, nargs="+", help="MACs budgets (default: 0.8 0.6 0.4)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default: 1 32)")
    p.add_argument("--threads", type=int, nargs="+", help="torch CPU threads (default: 1 2; with --device cuda: 1)")
    p.add_argument("--rounds", type=int, help="latency rounds over all models (default: 3; --quick: 1)")
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES,
                   help="runtimes to time in (default: all three; with --device cuda: eager)")
    p.add_argument("--device", default="cpu", help="torch device the models run on: cpu (default) or cuda[:N]")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="model and input dtype (default: fp32)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="pruned variants to build (the teacher is always timed)")
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds timed per latency cell")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask values")
    p.add_argument("--section",
                   help=f"BENCHMARKS.md section to write (default: {SECTION}; slim-latency-[gpu-]<dtype> for "
                        "another device or dtype); "
                        "another name keeps a partial grid, e.g. one runtime timed later, beside the main one")
    p.add_argument("--work", type=Path, help="where the exported ONNX files go (default: out/bench-slim-latency; "
                                             "with --quick: beside --md)")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: out/bench-slim-latency-quick/BENCHMARKS.md)")
    args = p.parse_args(argv)
    gpu = args.device != "cpu"
    if gpu:
        import torch

        if not args.device.startswith("cuda") or not torch.cuda.is_available():
            p.error(f"--device {args.device}: this machine has no such device; use --device cpu, or cuda on a "
                    "machine with a CUDA GPU")
    args.runtimes = args.runtimes or (["eager"] if gpu else list(RUNTIMES))
    if gpu and "onnxruntime" in args.runtimes:
        p.error("--runtimes onnxruntime runs on CPU only here; drop it with --device cuda (or time it with "
                "--device cpu)")
    if args.dtype != "fp32" and "onnxruntime" in args.runtimes:
        p.error(f"--dtype {args.dtype} is timed in torch only; drop onnxruntime from --runtimes or use --dtype fp32")
    args.threads = args.threads or ([1] if gpu else [1, 2])
    default_setting = not gpu and args.dtype == "fp32"
    args.section = args.section or (SECTION if default_setting else f"slim-latency-{'gpu-' * gpu}{args.dtype}")
    args.archs = args.archs or (["deit_tiny_patch16_224"] if args.quick else
                                ["deit_tiny_patch16_224", "deit_small_patch16_224"])
    args.budgets = args.budgets or ([0.6] if args.quick else [0.8, 0.6, 0.4])
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.md = args.md or (Path("out/bench-slim-latency-quick/BENCHMARKS.md") if args.quick else Path("BENCHMARKS.md"))
    # Exports of DeiT-S size are ~20 MB each: under out/ (git-ignored), never beside BENCHMARKS.md in the repo root.
    args.work = args.work or (args.md.parent if args.quick else Path("out/bench-slim-latency"))
    return args


def main(argv: list[str] | None = None) -> None:
    import torch

    start = time.perf_counter()
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    command = shlex.join(["python", "benchmarks/slim_latency.py", *raw])
    # A GPU pass costs milliseconds: enough untimed ones to settle cuBLAS/SDPA kernel choice and clocks.
    warmup = few_warmups_for_big_batches if args.device == "cpu" else (lambda batch: 10)
    results = {}
    dtype = getattr(torch, DTYPES[args.dtype])
    for arch in args.archs:
        print(f"{arch}: building", flush=True)
        models, infos = build_models(arch, args.budgets, args.seed, args.variants)
        models = {name: (m.to(device=args.device, dtype=dtype), size)
                  for name, (m, size) in models.items()}
        by_runtime = {}
        for runtime in args.runtimes:
            print(f"{arch}: {runtime}", flush=True)
            runners = runners_for(models, runtime, args.work / "onnx" / arch)
            by_runtime[runtime] = measure_models(models, args.rounds, args.threads, args.min_run_time,
                                                 tuple(args.batches), warmup=warmup, runners=runners,
                                                 runtime=None if runners is None else
                                                 ("onnxruntime" if runtime == "onnxruntime" else "eager"),
                                                 device=args.device)
        results[arch] = {"measurements": by_runtime, "selections": infos}
    body = render(args, command, results, time.perf_counter() - start)
    out = (args.md.parent / "slim_latency.json" if args.quick else
           args.work / ("results.json" if args.section == SECTION else f"{args.section}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    _report.publish(args.md, args.section, body)


if __name__ == "__main__":
    main()
