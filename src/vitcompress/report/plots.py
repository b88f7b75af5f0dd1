"""The figures of a run's report, drawn with matplotlib (an optional dependency: `pip install -e ".[plot]"`).

Each function takes plain data (lists and dicts, not models or files), writes one PNG and returns its path, so the
same figures serve the jobs, `vitcompress report` and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT_INSTALL = 'pip install matplotlib (or pip install -e ".[plot]")'


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_losses(epochs: Sequence[dict[str, Any]], keys: Sequence[str], path: Path) -> Path:
    """Every loss component per epoch, one line each (log scale when they span decades)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r["epoch"] for r in epochs]
    positive = True
    for k in keys:
        y = [r.get(k) for r in epochs]
        ax.plot(x, y, marker="o", markersize=3, label=k)
        positive &= all(v is not None and v > 0 for v in y)
    if positive and keys:
        values = [r[k] for r in epochs for k in keys]
        if max(values) / min(values) > 100:
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_accuracy(epochs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Validation top-1 and top-5 per epoch."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r["epoch"] for r in epochs]
    for k, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        if any(k in r for r in epochs):
            ax.plot(x, [r.get(k) for r in epochs], marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_histograms(values: dict[str, Sequence[float]], path: Path) -> Path:
    """One histogram per mask type of its values (for tokens: the keep value in [0, 1])."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.2), squeeze=False)
    for ax, (kind, vals) in zip(axes[0], values.items(), strict=True):
        ax.hist(list(vals), bins=40, color="tab:blue", alpha=0.8)
        ax.set_title(f"{kind} masks ({len(vals)} values)")
        ax.set_xlabel("mask value")
        ax.set_ylabel("count")
    return _save(fig, path)


def plot_kept_heatmap(kept: dict[str, list[list[float]]], rows: Sequence[str], path: Path,
                      row_label: str) -> Path:
    """One heat map per mask type: the kept fraction of each layer (columns) for each of `rows` (e.g. budgets)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(kept), 1, figsize=(max(5.0, 0.4 * max(len(v[0]) for v in kept.values()) + 2),
                                                    1.2 + 0.35 * len(rows) * len(kept) + 0.6 * len(kept)),
                             squeeze=False)
    for ax, (kind, grid) in zip(axes[:, 0], kept.items(), strict=True):
        image = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"{kind}: kept fraction per layer")
        ax.set_yticks(range(len(rows)), list(rows))
        ax.set_ylabel(row_label)
        ax.set_xticks(range(len(grid[0])))
        ax.set_xlabel("layer")
        fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, path)


def plot_budget_curves(curves: dict[str, Sequence[dict[str, Any]]], path: Path) -> Path:
    """ViT-Slim budget curves (`slim.solver.budget_curve` rows): MACs and params kept vs the share of mask elements
    kept, and, where the curve was scored, top-1 before any fine-tuning vs MACs kept (zero-cost selection)."""
    plt = pyplot()
    scored = any(r.get("top1") is not None for curve in curves.values() for r in curve)
    fig, axes = plt.subplots(1, 2 if scored else 1, figsize=(10 if scored else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    for i, (name, curve) in enumerate(curves.items()):
        shares = [r["share"] for r in curve]
        prefix = f"{name}: " if len(curves) > 1 else ""
        ax.plot(shares, [r["macs_ratio"] for r in curve], marker="o", markersize=3, color=f"C{i}",
                label=f"{prefix}MACs")
        ax.plot(shares, [r["params_ratio"] for r in curve], marker="s", markersize=3, color=f"C{i}", linestyle="--",
                label=f"{prefix}params")
    ax.set_xlabel("share of mask elements kept")
    ax.set_ylabel("fraction of the original")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if scored:
        ax = axes[0, 1]
        for i, (name, curve) in enumerate(curves.items()):
            points = [r for r in curve if r.get("top1") is not None]
            ax.plot([r["macs_ratio"] for r in points], [r["top1"] for r in points], marker="o", markersize=3,
                    color=f"C{i}", label=name)
        ax.set_xlabel("MACs (fraction of the original)")
        ax.set_ylabel("val top-1 before fine-tuning (%)")
        ax.grid(alpha=0.3)
        if len(curves) > 1:
            ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pareto(points: Sequence[dict[str, Any]], path: Path) -> Path:
    """Top-1 vs MACs and vs params (fractions of the teacher's), one marker per row, one colour per method; each
    point is the mean over its `top1` list, with ± its sample std as an error bar when there are several."""
    import statistics

    plt = pyplot()
    methods = list(dict.fromkeys(p["method"] for p in points))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, x_key, x_label in ((axes[0], "macs_ratio", "MACs"), (axes[1], "params_ratio", "params")):
        for i, method in enumerate(methods):
            mine = sorted((p for p in points if p["method"] == method), key=lambda p: p[x_key])
            xs = [p[x_key] for p in mine]
            ys = [statistics.mean(p["top1"]) for p in mine]
            errs = [statistics.stdev(p["top1"]) if len(p["top1"]) > 1 else 0.0 for p in mine]
            ax.errorbar(xs, ys, yerr=errs, marker="o", markersize=5, capsize=3, linestyle="none", color=f"C{i}",
                        label=method)
        ax.set_xlabel(f"{x_label} (fraction of the teacher's)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("val top-1 (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_speedup(points: Sequence[dict[str, Any]], path: Path) -> Path:
    """Measured speedup (the original's latency ÷ the model's) vs the MACs ratio, one marker per model and
    setting, coloured by method, with the ideal line speedup = 1 / MACs ratio."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, method in enumerate(methods):
        mine = [p for p in points if p["method"] == method]
        ax.scatter([p["macs_ratio"] for p in mine], [p["speedup"] for p in mine], s=18, color=f"C{i}", label=method)
    lo = min([p["macs_ratio"] for p in points] + [1.0]) * 0.95
    xs = [lo + (1.0 - lo) * k / 50 for k in range(51)]
    ax.plot(xs, [1 / x for x in xs], color="gray", linestyle="--", label="ideal: 1 / MACs ratio")
    ax.set_xlabel("MACs (fraction of the original)")
    ax.set_ylabel("measured speedup (×)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
