"""`vitcompress slim search|extract` and `vitcompress finetune`: ViT-Slim from search to a retrained model."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.export import save
from vitcompress.export.io import load, read_spec
from vitcompress.jobs.common import check_classes, data_extra, describe_row, input_size_of, loaders_for, start_job
from vitcompress.metrics import count_macs, count_params, evaluate, measure_latency
from vitcompress.models.resolve import resolve_model
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.multiplexing.objective import DistillationObjective
from vitcompress.report import markdown_table, write_report
from vitcompress.slim import SlimConfig, SlimObjective, SparsityConfig, attach_masks, extract, select
from vitcompress.slim.selection import Selection
from vitcompress.slim.solver import budget_curve
from vitcompress.slim.sparsity import slim_param_groups
from vitcompress.train import CrossEntropyObjective, TrainConfig, fit
from vitcompress.train.distributed import cleanup

LOSS_KEYS = ("loss", "task", "ce", "kd_logits", "sparsity", "mask_attn", "mask_mlp", "mask_tokens")


def _logit_kd(student: nn.Module, teacher: nn.Module, alpha: float, temperature: float) -> DistillationObjective:
    """CE + logit KD only: MiniViT's distillation objective with its attention and hidden terms off."""
    config = DistillConfig(alpha=alpha, temperature=temperature, attn_weight=0.0, hidden_weight=0.0)
    return DistillationObjective(student, teacher.eval(), config)


def search_job(
    model: str,
    data: str,
    out: str | Path,
    slim: SlimConfig,
    sparsity: SparsityConfig,
    train: TrainConfig,
    kd_alpha: float = 0.0,
    temperature: float = 1.0,
    arch: str | None = None,
    pretrained: bool = False,
    model_args: dict[str, Any] | None = None,
    batch_size: int = 64,
    workers: int = 0,
    resume: bool = False,
    curve_points: int = 21,
    progress: bool = True,
) -> dict[str, Any]:
    """Attach masks to `model`, train masks and weights with the sparsity loss, save the masked model and the
    budget curve (params/MACs of the extracted model over the whole range) to `out`.

    `kd_alpha` > 0 adds logit distillation from the unmasked original: (1 - α)·CE + α·KL.
    """
    dist = start_job(train.seed)
    try:
        source, extra = resolve_model(model, arch=arch, pretrained=pretrained, model_args=model_args)
        train_loader, val_loader, info = loaders_for(
            source, data, extra, batch_size, workers, train.seed, distributed=dist.world_size > 1
        )
        check_classes(source, info, model, can_reset=not extra)
        masked = attach_masks(source, slim)
        source_metrics = evaluate(source.to(dist.device), val_loader, device=dist.device)
        base = CrossEntropyObjective() if kd_alpha <= 0 else _logit_kd(masked, source.to(dist.device), kd_alpha,
                                                                        temperature)
        objective = SlimObjective(masked, base, sparsity)
        history = fit(
            masked, train_loader, val_loader, objective, train, out_dir=out, resume=resume, device=dist.device,
            param_groups=slim_param_groups(masked, train, sparsity), progress=progress,
        )
        masked_metrics = evaluate(masked, val_loader, device=dist.device)
        report: dict[str, Any] = {}
        if dist.rank == 0:
            extra_out = {**extra, **data_extra(info), "slim": slim.to_dict(), "sparsity": sparsity.to_dict(),
                         "train": train.to_dict(), "kd_alpha": kd_alpha}
            save(masked, out, extra=extra_out)
            curve = budget_curve(masked, curve_points)
            write_curve(out, curve)
            source_row = describe_row(f"original ({model})", source.cpu(), source_metrics, latency=False)
            losses = [{"epoch": r["epoch"], **{k: r[k] for k in LOSS_KEYS if k in r},
                       **({"val top-1": r["val_top1"]} if "val_top1" in r else {})} for r in history.records]
            report = {"original": source_row, "masked_val": masked_metrics, "curve": curve, "epochs": history.records,
                      "slim": slim.to_dict(), "sparsity": sparsity.to_dict(), "train": train.to_dict()}
            columns = ["share", "params_ratio", "macs_ratio", *[k for k in curve[0] if k.endswith("_kept")]]
            write_report(out, report, f"ViT-Slim search of {model} on {info.name}", {
                "original": markdown_table([source_row]),
                "masked model (soft masks)": markdown_table([{"top-1 (%)": masked_metrics.get("top1", float("nan"))}]),
                "budget curve (extracted params/MACs vs kept share)": markdown_table(curve, columns),
                "per-epoch losses": markdown_table(losses),
            })
        return report
    finally:
        cleanup()


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


def finetune_job(
    model: str,
    data: str,
    out: str | Path,
    train: TrainConfig,
    kd_teacher: str | None = None,
    kd_alpha: float = 0.5,
    temperature: float = 1.0,
    batch_size: int = 64,
    workers: int = 0,
    resume: bool = False,
    latency: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrain a saved (e.g. extracted) model with CE, plus logit KD from `kd_teacher` when given."""
    dist = start_job(train.seed)
    try:
        net, extra = resolve_model(model)
        train_loader, val_loader, info = loaders_for(
            net, data, extra, batch_size, workers, train.seed, distributed=dist.world_size > 1
        )
        check_classes(net, info, model, can_reset=False)
        teacher = None
        objective: Any = CrossEntropyObjective()
        if kd_teacher is not None:
            teacher, _ = resolve_model(kd_teacher)
            if teacher.num_classes != info.num_classes:
                raise VitCompressError(
                    f"--kd-teacher {kd_teacher} predicts {teacher.num_classes} classes, the data has "
                    f"{info.num_classes}; distil from a teacher trained on this data"
                )
            objective = _logit_kd(net, teacher.to(dist.device), kd_alpha, temperature)
        before = evaluate(net.to(dist.device), val_loader, device=dist.device)
        history = fit(net, train_loader, val_loader, objective, train, out_dir=out, resume=resume,
                      device=dist.device, progress=progress)
        after = evaluate(net, val_loader, device=dist.device)
        teacher_metrics = evaluate(teacher, val_loader, device=dist.device) if teacher is not None else {}
        report: dict[str, Any] = {}
        if dist.rank == 0:
            keep = {k: v for k, v in extra.items() if k != "train"}
            save(net, out, extra={**keep, **data_extra(info), "train": train.to_dict(), "kd_teacher": kd_teacher})
            rows = [describe_row(f"{model} (before)", net.cpu(), before, latency=False),
                    describe_row("fine-tuned", net, after, latency)]
            if teacher is not None:
                rows.insert(0, describe_row(f"teacher ({kd_teacher})", teacher.cpu(), teacher_metrics, latency))
            report = {"rows": rows, "val": after, "epochs": history.records, "train": train.to_dict(),
                      "kd_teacher": kd_teacher, "kd_alpha": kd_alpha if kd_teacher else 0.0}
            write_report(out, report, f"fine-tune {model} on {info.name}", {"models": markdown_table(rows)})
        return report
    finally:
        cleanup()
