"""`vitcompress multiplex`: build a weight-multiplexed student, train it by weight distillation, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitcompress.errors import VitCompressError
from vitcompress.export import save
from vitcompress.jobs.common import check_classes, data_extra, describe_row, loaders_for, start_job
from vitcompress.metrics import evaluate
from vitcompress.models.resolve import resolve_model
from vitcompress.multiplexing import MultiplexConfig, multiplex
from vitcompress.multiplexing.distill_config import DistillConfig
from vitcompress.multiplexing.objective import DistillationObjective
from vitcompress.report import markdown_table, write_report
from vitcompress.train import TrainConfig, fit
from vitcompress.train.distributed import cleanup

LOSS_KEYS = ("loss", "ce", "kd_logits", "kd_attn", "kd_hidden")


def multiplex_job(
    teacher: str,
    data: str,
    out: str | Path,
    config: MultiplexConfig,
    distill: DistillConfig,
    train: TrainConfig,
    kd_teacher: str | None = None,
    arch: str | None = None,
    pretrained: bool = False,
    model_args: dict[str, Any] | None = None,
    batch_size: int = 64,
    workers: int = 0,
    resume: bool = False,
    latency: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Multiplex `teacher`, distil the student on `data`, save it to `out` with a teacher-vs-student report.

    The student is distilled from `teacher`, or from `kd_teacher` when given (any timm ViT/DeiT with the same
    patch grid; its width may differ).
    """
    dist = start_job(train.seed)
    try:
        source, extra = resolve_model(teacher, arch=arch, pretrained=pretrained, model_args=model_args)
        train_loader, val_loader, info = loaders_for(
            source, data, extra, batch_size, workers, train.seed, distributed=dist.world_size > 1
        )
        check_classes(source, info, teacher, can_reset=False)
        student = multiplex(source, config)
        kd_model = source
        if kd_teacher is not None:
            kd_model, _ = resolve_model(kd_teacher)
            if kd_model.num_classes != info.num_classes:
                raise VitCompressError(
                    f"--kd-teacher {kd_teacher} predicts {kd_model.num_classes} classes, the data has "
                    f"{info.num_classes}; distil from a teacher trained on this data"
                )
        kd_model = kd_model.to(dist.device)
        objective = DistillationObjective(student, kd_model if distill.uses_teacher else None, distill)
        teacher_metrics = evaluate(source.to(dist.device), val_loader, device=dist.device)
        history = fit(
            student, train_loader, val_loader, objective, train, out_dir=out, resume=resume,
            device=dist.device, progress=progress,
        )
        student_metrics = evaluate(student, val_loader, device=dist.device)
        report: dict[str, Any] = {}
        if dist.rank == 0:
            extra_out = {**extra, **data_extra(info), "multiplex": config.to_dict(), "distill": distill.to_dict(),
                         "train": train.to_dict()}
            save(student, out, extra=extra_out)
            rows = [
                describe_row(f"teacher ({teacher})", source.cpu(), teacher_metrics, latency),
                describe_row(f"student (share={config.share if config.groups is None else 'groups'})",
                             student.cpu(), student_metrics, latency),
            ]
            losses = [{"epoch": r["epoch"], **{k: r[k] for k in LOSS_KEYS if k in r},
                       **({"val top-1": r["val_top1"]} if "val_top1" in r else {})} for r in history.records]
            report = {"teacher": rows[0], "student": rows[1], "epochs": history.records,
                      "multiplex": config.to_dict(), "distill": distill.to_dict(), "train": train.to_dict()}
            write_report(out, report, f"multiplex {teacher} on {info.name}",
                         {"teacher vs student": markdown_table(rows), "per-epoch losses": markdown_table(losses)})
        return report
    finally:
        cleanup()
