"""Timings for the slimming benchmark beyond model latency (that is `_measure.py`): where a forward's time goes, a
new budget selected and extracted from a saved search, and a masked training step against a plain one."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any


def op_breakdown(dirs: dict[str, Path], batch: int, iters: int = 20, passes: int = 3) -> list[dict[str, str]]:
    """Where a forward's CPU time goes (torch.profiler self time, ms per forward, 1 thread): matmuls, the attention
    kernel, everything else (norms, GELU, adds, copies, convolution, Python-level ops).

    Each part is the median over `passes` round-robin passes over the models, after one throwaway profiling
    session: the profiler's first session in a process pays its own start-up, which would land on one model.
    """
    import statistics

    import torch
    from torch.profiler import profile

    import vitcompress as vc
    from vitcompress.export import read_spec

    torch.set_num_threads(1)
    models = {name: (vc.load(d).eval(), torch.randn(batch, *read_spec(d)["extra"]["data"]["input_size"]))
              for name, d in dirs.items()}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    with torch.no_grad():
        with profile():
            model, x = next(iter(models.values()))
            model(x)
        for _ in range(passes):
            for name, (model, x) in models.items():
                for _ in range(3):
                    model(x)
                with profile() as prof:
                    for _ in range(iters):
                        model(x)
                parts = {"matmul": 0.0, "attention kernel": 0.0, "other": 0.0}
                for ev in prof.key_averages():
                    kind = ("attention kernel" if "scaled_dot_product" in ev.key else
                            "matmul" if ev.key in ("aten::addmm", "aten::mm", "aten::bmm") else "other")
                    parts[kind] += ev.self_cpu_time_total / 1e3 / iters
                samples[name].append(parts)
    rows = []
    for name, runs in samples.items():
        parts = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append({"model": name, "total (ms)": f"{statistics.median(sum(r.values()) for r in runs):.2f}",
                     **{f"{k} (ms)": f"{v:.2f}" for k, v in parts.items()}})
    return rows


def time_reselect(search: Path, budgets: tuple[float, ...], repeats: int) -> dict[str, Any]:
    """Seconds to select a new budget and extract it from a search loaded once (1 thread)."""
    import torch

    import vitcompress as vc

    torch.set_num_threads(1)
    masked = vc.load(search)
    vc.extract(masked, vc.select(masked, macs=0.5))  # first call pays one-off imports and allocations
    samples = []
    for _ in range(repeats):
        for budget in budgets:
            start = time.perf_counter()
            vc.extract(masked, vc.select(masked, macs=budget))
            samples.append(time.perf_counter() - start)
    return {"seconds": samples, "median_s": statistics.median(samples), "max_s": max(samples),
            "budgets": list(budgets), "repeats": repeats}


def time_steps(teacher: Path, recipe_name: str, steps: int) -> dict[str, Any]:
    """Median seconds of a training step (forward, loss, backward, clip, AdamW) plain vs masked, 1 thread.

    The same batch of 64 train images for all; plain = CE on the teacher, masked = CE + the ℓ1 sparsity loss on
    `attach_masks(teacher)` with the recipe's masks (digits-slim: attention, MLP, tokens) and, apart, attention +
    MLP only.
    Steps alternate between the models so that load from other processes hits them alike.
    """
    import torch

    import vitcompress as vc
    from vitcompress.cli_args import load_recipe
    from vitcompress.export import read_spec
    from vitcompress.slim import SlimObjective, SparsityConfig, slim_param_groups
    from vitcompress.train import CrossEntropyObjective, TrainConfig
    from vitcompress.train.optim import make_param_groups

    torch.set_num_threads(1)
    torch.manual_seed(0)
    norm = read_spec(teacher)["extra"]["data"]
    loader, _, _ = vc.build_loaders("digits", input_size=tuple(norm["input_size"]), seed=0, mean=norm["mean"],
                                    std=norm["std"])
    images, targets = next(iter(loader))
    recipe = load_recipe(recipe_name)
    sparsity = SparsityConfig(**{k: recipe[k] for k in ("l1_attn", "l1_mlp", "l1_tokens",
                                                           "macs_weighted", "mask_lr")})
    train = TrainConfig(lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    plain = vc.load(teacher).train()
    variants: dict[str, Any] = {
        "plain": (plain, CrossEntropyObjective(), make_param_groups(plain, train.weight_decay))}
    for name, cfg in (("masked", vc.SlimConfig(attn=recipe["attn"], mlp=recipe["mlp"], tokens=recipe["tokens"])),
                      ("masked_attn_mlp", vc.SlimConfig(attn=True, mlp=True, tokens=False))):
        m = vc.attach_masks(vc.load(teacher), cfg).train()
        variants[name] = (m, SlimObjective(m, CrossEntropyObjective(), sparsity), slim_param_groups(m, train,
                                                                                                     sparsity))
    optims = {n: torch.optim.AdamW(groups, lr=train.lr) for n, (_, _, groups) in variants.items()}

    def step(name: str) -> float:
        model, objective, _ = variants[name]
        start = time.perf_counter()
        optims[name].zero_grad(set_to_none=True)
        loss, _ = objective(model, images, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optims[name].step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {n: [] for n in variants}
    for i in range(steps + 10):
        for name in variants:
            t = step(name)
            if i >= 10:  # warmup steps excluded
                times[name].append(t)
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"median_ms": {n: v * 1e3 for n, v in med.items()}, "steps": steps,
            "ratio": {n: med[n] / med["plain"] for n in variants if n != "plain"},
            "batch": int(images.shape[0])}
