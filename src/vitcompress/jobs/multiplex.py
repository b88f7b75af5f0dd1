"""`vitcompress multiplex`: build a weight-multiplexed student, train it by weight distillation, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from vitcompress.cli_args import Flags
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.jobs.common import describe_row, loss_rows, resolve_teacher
from vitcompress.jobs.skeleton import Context, Outcome, Plan, Summary, run_training
from vitcompress.jobs.source import ModelSource, source_of, teacher_flags
from vitcompress.multiplexing import MultiplexConfig, multiplex
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.multiplexing.objective import DistillationObjective
from vitcompress.report import markdown_table
from vitcompress.train import TrainConfig

LOSS_KEYS = ("loss", "ce", "kd_logits", "kd_attn", "kd_hidden")


def multiplex_job(
    teacher: Annotated[ModelSource | str, Flags(rename={"model": "teacher"})],
    out: str | Path,
    config: MultiplexConfig | None = None,
    distill: DistillConfig | None = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    aug: AugmentConfig | None = None,
    kd_teacher: Annotated[ModelSource | str | None, teacher_flags("kd_teacher")] = None,
    relation_teacher: Annotated[ModelSource | str | None, teacher_flags("relation_teacher")] = None,
    no_kd: bool = False,
    resume: bool = False,
    latency: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Multiplex `teacher`, distil the student, save it to `out` with a teacher-vs-student report.

    Args:
        teacher: The model to multiplex (and, by default, to distil from).
        out: Output directory (model, report, metrics, checkpoint).
        config: Multiplexing.
        distill: Distillation.
        train: Training.
        data: Data.
        aug: Augmentation and regularisation.
        kd_teacher: Logit teacher instead of the multiplexed model: any timm classifier of the data's classes
            (a CNN too), as a timm name (--kd-teacher-pretrained for hub weights), saved directory or checkpoint
            (with --kd-teacher-arch).
        relation_teacher: Teacher of the Q/K/V and hidden-state relation terms (a ViT/Swin with the same patch
            grid; its width may differ), given like kd_teacher; default: the kd teacher if given, else the
            multiplexed model.
        no_kd: No distillation at all, ground-truth CE only (the plain weight-sharing ablation).
        resume: Continue the run in <out>/checkpoint.
        latency: Time teacher and student on CPU for the report.
        progress: Show a progress bar.
    """
    source, config = source_of(teacher), config or MultiplexConfig()
    kd_teacher, relation_teacher = source_of(kd_teacher), source_of(relation_teacher)
    distill = DistillConfig.off() if no_kd else distill or DistillConfig()

    def prepare(ctx: Context) -> Plan:
        student = multiplex(ctx.model, config)
        logit = resolve_teacher(kd_teacher, ctx.info, "--kd-teacher") if kd_teacher else ctx.model
        relation = resolve_teacher(relation_teacher, ctx.info, "--relation-teacher") if relation_teacher else logit
        device = ctx.dist.device
        objective = DistillationObjective(student, logit.to(device), distill, relation_teacher=relation.to(device),
                                          label_smoothing=ctx.smoothing)
        configs = {"multiplex": config.to_dict(), "distill": distill.to_dict(),
                   "kd_teacher": kd_teacher.to_dict() if kd_teacher else None,
                   "relation_teacher": relation_teacher.to_dict() if relation_teacher else None}
        return Plan(student, objective, before={"teacher": ctx.model}, configs=configs)

    def summarize(o: Outcome) -> Summary:
        share = config.share if config.groups is None else "groups"
        rows = [describe_row(f"teacher ({source.model})", o.plan.before["teacher"].cpu(), o.before["teacher"],
                             latency),
                describe_row(f"student (share={share})", o.plan.model.cpu(), o.after, latency)]
        report = {"teacher": rows[0], "student": rows[1], "epochs": o.history.records}
        tables = {"teacher vs student": markdown_table(rows),
                  "per-epoch losses": markdown_table(loss_rows(o.history.records, LOSS_KEYS))}
        return report, f"multiplex {source.model} on {o.info.name}", tables

    return run_training(source, out, train or TrainConfig(), data or DataConfig(), aug or AugmentConfig(),
                        prepare, summarize, can_reset=lambda extra: False, resume=resume, progress=progress)
