"""Training-step cost of weight distillation and of the ViT-Slim search at DeiT-S 224 on CPU, against a plain step.

One step is forward + backward + AdamW step + zero_grad on a seeded random batch (the cost depends on shapes, not on
data or weights, so `pretrained=False` models and no ImageNet are needed). Rows, side by side in one run:

    plain        timm `deit_small_patch16_224`, cross-entropy
    plain_teacher  the plain step plus a no-grad forward of the teacher: the floor under every KD row
    mux_ce       `vc.multiplex(teacher, MultiplexConfig(share=2))`, `DistillConfig.off()` (CE only)
    mux_logits   + logit KD from the teacher (attn_weight=0, hidden_weight=0)
    mux_attn     + Q/K/V relations on all layers (attn_layers="all", hidden_weight=0)
    mux_all      + hidden relations on all layers (all three terms)
    slim_search  `vc.attach_masks(model, SlimConfig(attn=True, mlp=True, tokens=True))` + `vc.SlimObjective`

Timing runs in rounds; in each round every (threads, batch) setting times every row in shuffled order (one untimed
step first, then `--steps` timed steps, median), so load from other processes spreads over all rows. A ratio is
row / plain of the same round, median over rounds. Writes the `train-step-cost` section of BENCHMARKS.md.

    python benchmarks/train_step_cost.py            # batch 8 and 16, 1 and 2 threads, 2 rounds (~10 min, 2 cores)
    python benchmarks/train_step_cost.py --quick    # batch 8, 2 threads, 1 round, 1 timed step: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _measure
import _report

SECTION = "train-step-cost"
ARCH = "deit_small_patch16_224"
ROWS = {
    "plain": "plain timm step (CE)",
    "plain_teacher": "plain timm step + a no-grad teacher forward (what any KD step pays)",
    "mux_ce": "multiplex share=2, CE only",
    "mux_logits": "+ logit KD",
    "mux_attn": "+ Q/K/V relations, all layers",
    "mux_all": "+ hidden relations, all layers (all three terms)",
    "slim_search": "masked search (attn + MLP + tokens masks, ℓ1)",
}
# Targets of issue 8 (ratio to the plain step, at most); rows without one are reported only.
TARGETS = {"mux_all": 1.6, "slim_search": 1.2}


def build_rows(num_classes: int, seed: int) -> dict[str, Callable[[Any, Any], float]]:
    """One closure per row: `step(images, targets)` runs a full training step and returns the loss."""
    import timm
    import torch
    import torch.nn.functional as F

    import vitcompress as vc

    def fresh() -> Any:
        torch.manual_seed(seed)
        return timm.create_model(ARCH, pretrained=False, num_classes=num_classes)

    def stepper(model: Any, objective: Callable) -> Callable[[Any, Any], float]:
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(images: Any, targets: Any) -> float:
            loss, _ = objective(model, images, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())

        return step

    teacher = fresh().eval()
    def plain_with_teacher(m: Any, x: Any, y: Any) -> tuple[Any, dict]:
        with torch.no_grad():
            teacher(x)
        return F.cross_entropy(m(x), y), {}

    rows = {"plain": stepper(fresh(), lambda m, x, y: (F.cross_entropy(m(x), y), {})),
            "plain_teacher": stepper(fresh(), plain_with_teacher)}
    configs = {
        "mux_ce": vc.DistillConfig.off(),
        "mux_logits": vc.DistillConfig(attn_weight=0.0, hidden_weight=0.0),
        "mux_attn": vc.DistillConfig(attn_layers="all", hidden_weight=0.0),
        "mux_all": vc.DistillConfig(attn_layers="all", hidden_layers="all"),
    }
    for name, config in configs.items():
        student = vc.multiplex(teacher, vc.MultiplexConfig(share=2))
        rows[name] = stepper(student, vc.DistillationObjective(student, teacher, config))
    masked = vc.attach_masks(fresh(), vc.SlimConfig(attn=True, mlp=True, tokens=True))
    rows["slim_search"] = stepper(masked, vc.SlimObjective(masked))
    return rows


def time_row(step: Callable[[Any, Any], float], images: Any, targets: Any, steps: int) -> float:
    """Median seconds of `steps` timed training steps after one untimed one (allocator, optimizer state)."""
    step(images, targets)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, targets)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per step of every row, per setting `b{batch}t{threads}`, one sample per round."""
    import torch

    keep_memory = _measure.keep_freed_memory()
    rows = build_rows(args.num_classes, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    batches = {b: (torch.randn(b, 3, 224, 224, generator=gen), torch.randint(0, args.num_classes, (b,), generator=gen))
               for b in args.batches}
    settings = [(t, b) for t in args.threads for b in args.batches]
    seconds: dict[str, dict[str, list[float]]] = {f"b{b}t{t}": {r: [] for r in rows} for t, b in settings}
    # Before any timing, every row runs two steps at the largest batch: the heap grows to its high-water mark
    # once, so no timed step pays first-touch page faults (with keep_freed_memory nothing is handed back later).
    torch.set_num_threads(max(args.threads))
    for step in rows.values():
        for _ in range(2):
            step(*batches[max(args.batches)])
    load_before = os.getloadavg()
    order, rng = list(rows), random.Random(args.seed)
    for r in range(args.rounds):
        for t, b in settings:
            torch.set_num_threads(t)
            rng.shuffle(order)
            print(f"round {r + 1}/{args.rounds}, batch {b}, {t} thread(s) (load {os.getloadavg()[0]:.2f})",
                  flush=True)
            for name in order:
                s = time_row(rows[name], *batches[b], args.steps)
                seconds[f"b{b}t{t}"][name].append(s)
                print(f"  {name:12s} {s:6.3f} s", flush=True)
    return {"seconds": seconds, "load_before": load_before, "load_after": os.getloadavg(),
            "keep_freed_memory": keep_memory}


def ratios(samples: dict[str, list[float]], name: str) -> list[float]:
    """Row / plain step, round by round (both timed in the same round)."""
    return [s / p for s, p in zip(samples[name], samples["plain"], strict=True)]


def table(args: argparse.Namespace, meas: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, label in ROWS.items():
        row = {"step": label}
        for t in args.threads:
            for b in args.batches:
                samples = meas["seconds"][f"b{b}t{t}"]
                row[f"b{b} t{t} (s)"] = f"{statistics.median(samples[name]):.3f}"
                ratio = 1.0 if name == "plain" else statistics.median(ratios(samples, name))
                row[f"b{b} t{t} ×plain"] = f"{ratio:.2f}×"
        rows.append(row)
    return rows


def target_lines(args: argparse.Namespace, meas: dict[str, Any]) -> list[str]:
    out = []
    for name, limit in TARGETS.items():
        cells = [(b, t, statistics.median(ratios(meas["seconds"][f"b{b}t{t}"], name)))
                 for t in args.threads for b in args.batches]
        verdict = "**met**" if all(r <= limit for *_, r in cells) else "**NOT met**"
        detail = "; ".join(f"b{b} t{t}: {r:.2f}×" for b, t, r in cells)
        out.append(f"- {ROWS[name]} ≤ {limit}× a plain step: {verdict} — {detail}.")
    return out


def render(args: argparse.Namespace, command: str, meas: dict[str, Any], total_s: float) -> str:
    from vitcompress.report import markdown_table

    lb, la = meas["load_before"], meas["load_after"]
    lines = [
        *_report.heading("## Training-step cost at DeiT-S 224 (CPU)", command, args.quick),
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "",
        f"Seconds per training step (forward + backward + AdamW step) of `{ARCH}` (`pretrained=False`, "
        f"{args.num_classes} classes) on a seeded random batch, and the ratio to the plain timm step. Multiplexed "
        "students use `MultiplexConfig(share=2)` (attention and MLP transformations on) with the plain model as "
        "teacher; relation rows use the default `DistillConfig` terms (Q-Q, K-K, V-V; relation heads = student "
        "heads; hidden chunk 1024 ≥ 197 tokens). A cell is the median over "
        f"{args.rounds} round(s) of the median of {args.steps} timed steps after one untimed step; ×plain pairs each "
        "row with the plain step of the same round (rows run in shuffled order per round), median over rounds. "
        "Before timing, every row ran two steps at the largest batch, and "
        + ("glibc was told to keep freed memory (`_measure.keep_freed_memory`), so rows sharing the process "
           "do not page-fault each other's activations back in (the steady state of a single-model run)."
           if meas.get("keep_freed_memory") else "the allocator was left as is (not glibc): rows sharing the "
           "process may page-fault each other's activations back in."),
        "",
        markdown_table(table(args, meas)),
        "",
        f"Load average (1/5/15 min) {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f} before and {la[0]:.2f}/{la[1]:.2f}/"
        f"{la[2]:.2f} after.",
        "",
        "Targets (issue 8):",
        "",
        *target_lines(args, meas),
        "",
        f"This invocation took {total_s / 60:.1f} min.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test the script: batch 8, 2 threads, 1 round, 1 step")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: 8 16; --quick: 8)")
    p.add_argument("--threads", type=int, nargs="+", help="torch CPU threads (default: 1 2; --quick: 2)")
    p.add_argument("--rounds", type=int, help="rounds over all rows and settings (default: 2; --quick: 1)")
    p.add_argument("--steps", type=int, help="timed steps per row and round (default: 2; --quick: 1)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier width (default: 1000, ImageNet)")
    p.add_argument("--seed", type=int, default=0, help="seed of the models, the batch and the row order")
    p.add_argument("--md", type=Path, help="Markdown file to write the section into (default: BENCHMARKS.md; "
                                           "with --quick: out/bench-train-step-cost-quick/BENCHMARKS.md)")
    args = p.parse_args(argv)
    args.batches = args.batches or ([8] if args.quick else [8, 16])
    args.threads = args.threads or ([2] if args.quick else [1, 2])
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.steps = args.steps or (1 if args.quick else 2)
    args.md = args.md or (Path("out/bench-train-step-cost-quick/BENCHMARKS.md") if args.quick
                          else Path("BENCHMARKS.md"))
    return args


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    # OpenMP sizes its pool from OMP_NUM_THREADS when torch is imported; a pool wider than the largest setting
    # (or than the free cores) makes idle threads spin-wait (README), so cap it before torch loads.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(args.threads)))
    command = shlex.join(["python", "benchmarks/train_step_cost.py", *raw])
    meas = measure(args)
    body = render(args, command, meas, time.perf_counter() - start)
    out = args.md.parent / "train_step_cost.json" if args.quick else Path("out/bench-train-step-cost/results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meas, indent=2))
    _report.publish(args.md, SECTION, body)


if __name__ == "__main__":
    main()
