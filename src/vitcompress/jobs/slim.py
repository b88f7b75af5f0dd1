"""`vitcompress slim search|extract`: ViT-Slim from a search to any budget (`finetune` retrains the result)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from torch import nn

from vitcompress.cli_args import Arg, Flags
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.errors import VitCompressError
from vitcompress.export import save
from vitcompress.export.io import load, read_spec
from vitcompress.jobs.common import describe_row, input_size_of, loss_rows
from vitcompress.jobs.skeleton import Context, Outcome, Plan, Summary, run_training
from vitcompress.jobs.source import ModelSource, source_of
from vitcompress.metrics import count_macs, count_params, measure_latency
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.multiplexing.objective import DistillationObjective
from vitcompress.report import markdown_table, plots, write_report
from vitcompress.report.run import render_run
from vitcompress.slim import SlimConfig, SlimObjective, SparsityConfig, attach_masks, binarize, extract, select
from vitcompress.slim.attach import mask_tensors
from vitcompress.slim.selection import Selection
from vitcompress.slim.solver import budget_curve
from vitcompress.slim.sparsity import slim_param_groups
from vitcompress.train import CrossEntropyObjective, TrainConfig

LOSS_KEYS = ("loss", "task", "ce", "kd_logits", "sparsity", "mask_attn", "mask_mlp", "mask_tokens")
LOGIT_KD = ("alpha", "temperature", "distillation_type", "logits_loss")
"""The DistillConfig fields of logit-only KD, the flags of `slim search` and `finetune`."""
KD_FLAGS = Flags(only=LOGIT_KD, aliases={"alpha": ("kd_alpha",)})
SPARSITY_FLAGS = Flags(aliases={"l1_attn": ("attn_weight",), "l1_mlp": ("mlp_weight",),
                                "l1_tokens": ("tokens_weight",)})  # SparsityConfig version 1 names


def logit_kd(student: nn.Module, teacher: nn.Module, kd: DistillConfig, label_smoothing: float = 0.0):
    """CE + logit KD only: MiniViT's distillation objective with its relation terms off."""
    config = dataclasses.replace(kd, attn_weight=0.0, hidden_weight=0.0)
    return DistillationObjective(student, teacher.eval(), config, label_smoothing=label_smoothing)


def search_job(
    model: ModelSource | str,
    out: str | Path,
    slim: SlimConfig | None = None,
    sparsity: Annotated[SparsityConfig | None, SPARSITY_FLAGS] = None,
    kd: Annotated[DistillConfig | None, dataclasses.replace(KD_FLAGS, optional=True)] = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    aug: AugmentConfig | None = None,
    curve_points: int = 21,
    curve_eval: bool = True,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Attach masks to `model`, train masks and weights with the sparsity loss, save the masked model and the
    budget curve (params/MACs of the extracted model over the whole range) to `out`.

    Args:
        model: The model to slim; a timm name built here gets a head for the data's classes.
        out: Output directory (masked model, curve, report, metrics, checkpoint).
        slim: Masks.
        sparsity: Sparsity loss.
        kd: Logit distillation from the unmasked original, (1 - alpha)·CE + alpha·KD; on only when one of its
            options is given (flag or recipe).
        train: Training.
        data: Data.
        aug: Augmentation and regularisation.
        curve_points: Budget-curve points from share 1 to 0.
        curve_eval: Score the thresholded model of every curve point on the val split, without fine-tuning (the
            paper's zero-cost subnet selection: accuracy vs MACs before choosing a budget); one val pass a point.
        resume: Continue the run in <out>/checkpoint.
        progress: Show a progress bar.
    """
    source, slim, sparsity, train = source_of(model), slim or SlimConfig(), sparsity or SparsityConfig(), \
        train or TrainConfig()

    def prepare(ctx: Context) -> Plan:
        masked = attach_masks(ctx.model, slim)
        base = CrossEntropyObjective(ctx.smoothing)
        if kd is not None and kd.alpha > 0:
            base = logit_kd(masked, ctx.model.to(ctx.dist.device), kd, ctx.smoothing)
        configs = {"slim": slim.to_dict(), "sparsity": sparsity.to_dict(), "kd": kd.to_dict() if kd else None}
        return Plan(masked, SlimObjective(masked, base, sparsity), before={"original": ctx.model},
                    param_groups=slim_param_groups(masked, train, sparsity), configs=configs,
                    score_more=lambda score: scored_curve(masked, curve_points, score if curve_eval else None))

    def summarize(o: Outcome) -> Summary:
        curve = o.more
        write_curve(out, curve)
        source_row = describe_row(f"original ({source.model})", o.plan.before["original"].cpu(),
                                  o.before["original"], latency=False)
        report = {"original": source_row, "masked_val": o.after, "curve": curve, "epochs": o.history.records}
        columns = ["share", "params_ratio", "macs_ratio", *[k for k in curve[0] if k.endswith("_kept")],
                   *(["top1"] if curve_eval else [])]
        tables = {
            "original": markdown_table([source_row]),
            "masked model (soft masks)": markdown_table([{"top-1 (%)": o.after.get("top1", float("nan"))}]),
            "budget curve (extracted params/MACs vs kept share)": markdown_table(curve, columns),
            "per-epoch losses": markdown_table(loss_rows(o.history.records, LOSS_KEYS)),
        }
        return report, f"ViT-Slim search of {source.model} on {o.info.name}", tables

    return run_training(source, out, train, data or DataConfig(), aug or AugmentConfig(), prepare, summarize,
                        resume=resume, progress=progress)


def scored_curve(masked: nn.Module, points: int, score: Callable[[nn.Module], dict[str, float]] | None
                 ) -> list[dict[str, float | None]]:
    """The budget curve (`budget_curve`) with, when `score` is given, the top-1 of each point's thresholded model
    (`binarize` of the `select(dims=share)` it describes; None at share 0, which keeps no dims)."""
    curve = budget_curve(masked, points)
    if score is None:
        return curve
    kinds = list(mask_tensors(masked))
    for row in curve:
        row["top1"] = None
        if row["share"] > 0:
            selection = select(masked, dims=dict.fromkeys(kinds, row["share"]))
            row["top1"] = score(binarize(masked, selection))["top1"]
    return curve


def expected_top1(curve: list[dict[str, Any]], macs_ratio: float) -> float | None:
    """Top-1 before fine-tuning at `macs_ratio`, linearly interpolated between the scored curve points around it
    (None for a curve without scores or a ratio outside them)."""
    scored = sorted((r["macs_ratio"], r["top1"]) for r in curve if r.get("top1") is not None)
    for (x0, y0), (x1, y1) in itertools.pairwise(scored):
        if x0 <= macs_ratio <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (macs_ratio - x0) / (x1 - x0)
    return None


def write_curve(out: str | Path, curve: list[dict[str, float]]) -> None:
    """curve.json, curve.csv and, with matplotlib installed, curve.png."""
    out = Path(out)
    (out / "curve.json").write_text(json.dumps(curve, indent=2))
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    if plots.pyplot() is not None:
        plots.plot_budget_curves({"search": curve}, out / "curve.png")


BUDGET = Arg(one_of="budget")
"""The targets of `extract_job`: exactly one of macs, params and dims."""


def extract_job(
    search: str | Path,
    out: str | Path,
    macs: Annotated[float | None, BUDGET] = None,
    params: Annotated[float | None, BUDGET] = None,
    dims: Annotated[dict[str, float] | None,
                    dataclasses.replace(BUDGET, metavar="TYPE=SHARE", example="attn=0.7 mlp=0.7")] = None,
    mode: Literal["share", "joint"] = "share",
    equal_heads: bool = False,
    multiple_of: int = 1,
    multiple_of_tokens: int = 1,
    latency: bool = False,
) -> dict[str, Any]:
    """Pick a budget from a search directory and save the physically smaller model (no re-search, seconds).

    Args:
        search: Output directory of `vitcompress slim search` (the masked model).
        out: Output directory for the extracted model (model, selection.json, report).
        macs: Target MACs as a fraction of the original, e.g. 0.6.
        params: Target params as a fraction of the original, e.g. 0.6.
        dims: Share each mask type keeps, e.g. attn=0.7 mlp=0.7 tokens=0.9.
        mode: For macs/params: "share" (the same share for every mask type) or "joint" (one threshold).
        equal_heads: Every head of a layer keeps the same number of dims: one attention call per layer, faster
            on small models.
        multiple_of: Round every head width and MLP width to a multiple of this (e.g. 8 for fp16 Tensor Cores and
            flash attention), each keeping its best units; the budget is met on the rounded widths.
        multiple_of_tokens: Round every layer's sequence length (prefix + kept patch tokens) to a multiple of this.
        latency: Also time original and extracted on CPU (batch 1, 32).
    """
    masked = load(search)
    extra = read_spec(search).get("extra", {})
    if not any(step["kind"] == "slim_masks" for step in masked.vitcompress_spec["steps"]):
        raise VitCompressError(f"{search} holds no masked model; pass the -o directory of `vitcompress slim search`")
    start = time.perf_counter()
    selection = select(masked, macs=macs, params=params, dims=dims, mode=mode, equal_heads=equal_heads,
                       multiple_of=multiple_of, multiple_of_tokens=multiple_of_tokens)
    small = extract(masked, selection).eval()
    elapsed = time.perf_counter() - start
    keep = {k: v for k, v in extra.items() if k in ("data", "slim", "sparsity")}
    save(small, out, extra={**keep, "search": str(search), "selection": selection.info})
    (Path(out) / "selection.json").write_text(json.dumps(selection.to_dict()))
    original = extract(masked, Selection()).eval()  # the unmasked model, as a plain module
    size = input_size_of(small)
    rows = []
    for name, net in (("original", original), (f"slim {selection.info['target']}", small)):
        row = {"model": name, "params (M)": count_params(net) / 1e6, "MACs (M)": count_macs(net, size) / 1e6}
        if latency:
            for batch in (1, 32):
                row[f"CPU latency b{batch} (ms)"] = measure_latency(net, size, batch_size=batch).median_ms
        rows.append(row)
    report = {"rows": rows, "selection": selection.info, "select_and_extract_s": elapsed}
    curve_file = Path(search) / "curve.json"
    expected = expected_top1(json.loads(curve_file.read_text()), selection.info["macs_ratio"]) \
        if curve_file.is_file() else None
    tables = {"original vs extracted": markdown_table(rows)}
    if expected is not None:
        report["expected_top1_before_finetune"] = expected
        tables["expected accuracy"] = (
            f"Top-1 before fine-tuning ≈ {expected:.2f}% (zero-cost: interpolated at MACs ratio "
            f"{selection.info['macs_ratio']:.3f} from the search's scored budget curve, {curve_file}).")
    write_report(out, report, f"ViT-Slim extract from {search}", tables)
    render_run(out)
    return report
