"""`render_run`: the figures and per-layer structure of any run directory, added to its report.md.

A run directory is what a job writes (`train`, `multiplex`, `slim search`, `slim extract`, `finetune`): its
metrics.jsonl gives the loss components and val accuracy per epoch; its saved model (spec.json) tells what kind
of model it holds. A search (masked model) gets mask histograms and the kept fraction of every layer at each
budget of its curve; an extracted model gets its kept widths per layer, as a table and a heat map. The jobs call
this after writing their report; `vitcompress report DIR` calls it on any finished run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitcompress.errors import VitCompressError
from vitcompress.export.io import atomic_write
from vitcompress.report.plots import (
    PLOT_INSTALL,
    plot_accuracy,
    plot_histograms,
    plot_kept_heatmap,
    plot_losses,
    pyplot,
)
from vitcompress.report.tables import markdown_table

PLOTS_HEADING = "## Plots"
NOT_LOSSES = {"kind", "epoch", "step", "lr", "grad_norm", "img_s", "epoch_time_s"}
KINDS = ("attn", "mlp", "tokens")


def epoch_records(run: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's metrics.jsonl (empty without one)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "epoch"]


def loss_keys(epochs: list[dict[str, Any]]) -> list[str]:
    """The loss components logged every epoch (mask means `mask_*` are averages, not losses; val_* are scores)."""
    keys = [k for k in epochs[0] if k not in NOT_LOSSES and not k.startswith(("val_", "mask_"))]
    return [k for k in keys if all(isinstance(r.get(k), int | float) for r in epochs)]


def kept_fractions(selection: Any, structure: Any, kinds: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Per mask type, the fraction of each layer's attention dims / MLP units / patch tokens a selection keeps;
    the `kinds` it leaves whole (None) count as 1.0 in every layer."""
    out: dict[str, list[float]] = {k: [1.0] * structure.depth for k in kinds}
    owner = structure.owner
    if selection.attn is not None:
        out["attn"] = [sum(map(len, heads)) / (structure.heads_of(owner[i]) * structure.head_dim_of(owner[i]))
                       for i, heads in enumerate(selection.attn)]
    if selection.mlp is not None:
        out["mlp"] = [len(units) / structure.hidden_of(owner[i]) for i, units in enumerate(selection.mlp)]
    if selection.tokens is not None:
        out["tokens"] = [len(kept) / structure.num_patches for kept in selection.tokens]
    return out


def layer_table(selection: Any, structure: Any) -> str:
    """Kept heads, attention dims, MLP units and patch tokens of every layer, against the full widths."""
    rows = []
    for i, o in enumerate(structure.owner):
        row: dict[str, Any] = {"layer": i}
        if selection.attn is not None:
            heads = selection.attn[i]
            row["heads"] = f"{sum(1 for h in heads if h)}/{structure.heads_of(o)}"
            row["attn dims"] = f"{sum(map(len, heads))}/{structure.heads_of(o) * structure.head_dim_of(o)}"
        if selection.mlp is not None:
            row["MLP units"] = f"{len(selection.mlp[i])}/{structure.hidden_of(o)}"
        if selection.tokens is not None:
            row["patch tokens"] = f"{len(selection.tokens[i])}/{structure.num_patches}"
        rows.append(row)
    return markdown_table(rows)


def _saved_kind(run: Path) -> tuple[str | None, dict[str, Any] | None]:
    """("masked" | "extracted" | "plain", spec) of the model saved in `run`, (None, None) without one."""
    if not (run / "spec.json").is_file():
        return None, None
    from vitcompress.export.io import read_spec

    spec = read_spec(run)["spec"]
    kinds = {step["kind"] for step in spec["steps"]}
    return ("masked" if "slim_masks" in kinds else "extracted" if "slim" in kinds else "plain"), spec


def _search_figures(run: Path, plots: list[tuple[str, Path]]) -> None:
    import vitcompress as vc
    from vitcompress.slim.attach import mask_tensors
    from vitcompress.slim.cost import structure_of

    masked = vc.load(run)
    masks = mask_tensors(masked)
    values = {k: [float(v) for t in ts for v in t.detach().flatten()] for k, ts in masks.items() if k != "tokens"}
    if "tokens" in masks:
        values["tokens"] = [float(v) for blk in _token_layers(masked) for v in blk.token_value().detach()]
    plots.append(("mask values after the search", plot_histograms(values, run / "masks.png")))
    curve_file = run / "curve.json"
    shares = ([r["share"] for r in json.loads(curve_file.read_text())] if curve_file.is_file()
              else [0.8, 0.6, 0.4, 0.2])
    shares = [s for s in shares if 0 < s < 1]
    structure = structure_of(masked)
    grids: dict[str, list[list[float]]] = {}
    for share in shares:
        fractions = kept_fractions(vc.select(masked, dims=dict.fromkeys(masks, share)), structure, tuple(masks))
        for kind, row in fractions.items():
            grids.setdefault(kind, []).append(row)
    if grids:
        path = plot_kept_heatmap(grids, [f"{s:.2f}" for s in shares], run / "kept_per_layer.png", "share kept")
        plots.append(("kept fraction per layer at each budget of the curve (select(dims=share))", path))


def _token_layers(masked: Any) -> list[Any]:
    from vitcompress.models.layers import transformer_layers

    return [blk for blk in transformer_layers(masked) if getattr(blk, "token_mask", None) is not None]


def extracted_structure(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(Selection, structure of the unslimmed model) of an extracted model's spec: the base rebuilt on meta."""
    import torch

    from vitcompress.models.spec import build_from_spec
    from vitcompress.slim.cost import structure_of
    from vitcompress.slim.selection import Selection

    step = next(s for s in spec["steps"] if s["kind"] == "slim")
    base = {"base": spec["base"], "steps": [s for s in spec["steps"] if s["kind"] != "slim"]}
    with torch.device("meta"):
        model = build_from_spec(base)
    return Selection.from_dict(step["selection"]), structure_of(model)


def render_run(run: str | Path) -> list[Path]:
    """Draw the figures of a run directory and add them (and, for an extracted model, its per-layer widths) to
    its report.md under "Plots", replacing an earlier such section. Returns the PNGs written.

    Without matplotlib no figure is drawn and the section says, in one line, how to get them.

    Raises:
        VitCompressError: If `run` is not a directory holding a run (no metrics.jsonl and no saved model).
    """
    run = Path(run)
    epochs = epoch_records(run)
    kind, spec = _saved_kind(run) if run.is_dir() else (None, None)
    if not run.is_dir() or (not epochs and kind is None):
        raise VitCompressError(f"{run} is not a run directory (no metrics.jsonl, no saved model); pass the -o "
                               "directory of a vitcompress job")
    section: list[str] = []
    if kind == "extracted":
        selection, structure = extracted_structure(spec)
        section += ["### kept widths per layer", "", layer_table(selection, structure), ""]
    plots: list[tuple[str, Path]] = []
    if pyplot() is None:
        section += [f"Plots not drawn: matplotlib is not installed ({PLOT_INSTALL}; then `vitcompress report "
                    f"{run}`).", ""]
    else:
        if epochs and loss_keys(epochs):
            plots.append(("loss components per epoch", plot_losses(epochs, loss_keys(epochs), run / "losses.png")))
        if any("val_top1" in r for r in epochs):
            plots.append(("val accuracy per epoch", plot_accuracy(epochs, run / "accuracy.png")))
        if kind == "masked":
            _search_figures(run, plots)
        if kind == "extracted":
            grids = {k: [v] for k, v in kept_fractions(selection, structure).items()}
            if grids:
                plots.append(("kept fraction per layer", plot_kept_heatmap(grids, ["kept"], run / "kept_per_layer.png",
                                                                           "")))
        section += [f"### {title}\n\n![{title}]({path.name})\n" for title, path in plots]
    _write_section(run / "report.md", section, default_title=f"# Run {run.name}")
    return [path for _, path in plots]


def _write_section(report: Path, section: list[str], default_title: str) -> None:
    """Replace (or add) the plots section at the end of report.md, atomically."""
    text = report.read_text() if report.is_file() else default_title + "\n"
    text = text.split("\n" + PLOTS_HEADING + "\n", 1)[0].rstrip("\n")
    text = "\n".join([text, "", PLOTS_HEADING, "", *section]).rstrip("\n") + "\n"
    atomic_write(report, lambda tmp: tmp.write_text(text))
