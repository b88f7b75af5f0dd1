"""`vitcompress finetune`: retrain a saved (e.g. extracted) model with CE, plus logit KD from a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.jobs.common import describe_row, loss_rows, resolve_teacher
from vitcompress.jobs.skeleton import Context, Outcome, Plan, Summary, run_training
from vitcompress.jobs.slim import KD_FLAGS, LOSS_KEYS, logit_kd
from vitcompress.jobs.source import ModelSource, source_of, teacher_flags
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.report import markdown_table
from vitcompress.train import CrossEntropyObjective, TrainConfig


def finetune_job(
    model: ModelSource | str,
    out: str | Path,
    kd: Annotated[DistillConfig | None, KD_FLAGS] = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    aug: AugmentConfig | None = None,
    kd_teacher: Annotated[ModelSource | str | None, teacher_flags("kd_teacher")] = None,
    resume: bool = False,
    latency: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrain a trained model (e.g. from `vitcompress slim extract`) with CE, plus logit KD from `kd_teacher`.

    Args:
        model: The model to retrain; its head must already fit the data.
        out: Output directory (model, report, metrics, checkpoint).
        kd: Logit distillation from kd_teacher, (1 - alpha)·CE + alpha·KD; used only with kd_teacher.
        train: Training.
        data: Data.
        aug: Augmentation and regularisation.
        kd_teacher: Distil logits from this model (e.g. the original): any timm classifier of the data's classes,
            as a timm name (--kd-teacher-pretrained for hub weights), saved directory or checkpoint (with
            --kd-teacher-arch).
        resume: Continue the run in <out>/checkpoint.
        latency: Also time the models on CPU for the report.
        progress: Show a progress bar.
    """
    source, kd, kd_teacher = source_of(model), kd or DistillConfig(), source_of(kd_teacher)

    def prepare(ctx: Context) -> Plan:
        if kd_teacher is None:
            return Plan(ctx.model, CrossEntropyObjective(ctx.smoothing), before={"before": ctx.model},
                        configs={"kd_teacher": None, "kd": None})
        teacher = resolve_teacher(kd_teacher, ctx.info, "--kd-teacher").to(ctx.dist.device)
        return Plan(ctx.model, logit_kd(ctx.model, teacher, kd, ctx.smoothing),
                    before={"before": ctx.model, "teacher": teacher},
                    configs={"kd_teacher": kd_teacher.to_dict(), "kd": kd.to_dict()})

    def summarize(o: Outcome) -> Summary:
        # "before" is the trained model itself, so its row is described from the scores taken before training.
        net = o.plan.model.cpu()
        rows = [describe_row(f"{source.model} (before)", net, o.before["before"], latency=False),
                describe_row("fine-tuned", net, o.after, latency)]
        if "teacher" in o.plan.before:
            rows.insert(0, describe_row(f"teacher ({kd_teacher.model})", o.plan.before["teacher"].cpu(),
                                        o.before["teacher"], latency))
        report = {"rows": rows, "val": o.after, "epochs": o.history.records,
                  "kd_alpha": kd.alpha if kd_teacher else 0.0}
        tables = {"models": markdown_table(rows),
                  "per-epoch losses": markdown_table(loss_rows(o.history.records, LOSS_KEYS))}
        return report, f"fine-tune {source.model} on {o.info.name}", tables

    return run_training(source, out, train or TrainConfig(), data or DataConfig(), aug or AugmentConfig(),
                        prepare, summarize, can_reset=lambda extra: False, resume=resume, progress=progress)
