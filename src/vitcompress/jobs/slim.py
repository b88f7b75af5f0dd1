"""`vitcompress slim search|extract`: ViT-Slim from a search to any budget (`finetune` retrains the result)."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

from torch import nn

from vitcompress.cli_args import Flags
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
from vitcompress.report import markdown_table, write_report
from vitcompress.slim import SlimConfig, SlimObjective, SparsityConfig, attach_masks, extract, select
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
                    param_groups=slim_param_groups(masked, train, sparsity), configs=configs)

    def summarize(o: Outcome) -> Summary:
        curve = budget_curve(o.plan.model, curve_points)
        write_curve(out, curve)
        source_row = describe_row(f"original ({source.model})", o.plan.before["original"].cpu(),
                                  o.before["original"], latency=False)
        report = {"original": source_row, "masked_val": o.after, "curve": curve, "epochs": o.history.records}
        columns = ["share", "params_ratio", "macs_ratio", *[k for k in curve[0] if k.endswith("_kept")]]
        tables = {
            "original": markdown_table([source_row]),
            "masked model (soft masks)": markdown_table([{"top-1 (%)": o.after.get("top1", float("nan"))}]),
            "budget curve (extracted params/MACs vs kept share)": markdown_table(curve, columns),
            "per-epoch losses": markdown_table(loss_rows(o.history.records, LOSS_KEYS)),
        }
        return report, f"ViT-Slim search of {source.model} on {o.info.name}", tables

    return run_training(source, out, train, data or DataConfig(), aug or AugmentConfig(), prepare, summarize,
                        resume=resume, progress=progress)


def write_curve(out: str | Path, curve: list[dict[str, float]]) -> None:
    """curve.json, curve.csv and, with matplotlib installed, curve.png."""
    out = Path(out)
    (out / "curve.json").write_text(json.dumps(curve, indent=2))
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[0]))
        writer.writeheader()
        writer.writerows(curve)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    shares = [r["share"] for r in curve]
    ax.plot(shares, [r["macs_ratio"] for r in curve], marker="o", label="MACs")
    ax.plot(shares, [r["params_ratio"] for r in curve], marker="s", label="params")
    ax.set_xlabel("share of mask elements kept")
    ax.set_ylabel("fraction of the original")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)


def extract_job(
    search: str | Path,
    out: str | Path,
    macs: float | None = None,
    params: float | None = None,
    dims: dict[str, float] | None = None,
    mode: str = "share",
    equal_heads: bool = False,
    latency: bool = False,
) -> dict[str, Any]:
    """Pick a budget from a search directory and save the physically smaller model (no re-search, seconds)."""
    masked = load(search)
    extra = read_spec(search).get("extra", {})
    if not any(step["kind"] == "slim_masks" for step in masked.vitcompress_spec["steps"]):
        raise VitCompressError(f"{search} holds no masked model; pass the -o directory of `vitcompress slim search`")
    start = time.perf_counter()
    selection = select(masked, macs=macs, params=params, dims=dims, mode=mode, equal_heads=equal_heads)
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
    write_report(out, report, f"ViT-Slim extract from {search}", {"original vs extracted": markdown_table(rows)})
    return report
