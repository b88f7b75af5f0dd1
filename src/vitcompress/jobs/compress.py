"""`vitcompress compress`: one command from a teacher and a target to a compressed, fine-tuned model.

MiniViT for parameters, ViT-Slim for MACs, in that order, each stage a job of its own in its own directory:

    1-multiplex   share weights (the smallest sharing that meets --params, or --share) + weight distillation
    2-search      ViT-Slim masks on that model (attention dims and MLP units), searched with the sparsity loss
    3-extract     the budget that meets --macs, cut out physically
    4-finetune    the extracted model retrained with logit KD from the teacher

Stages whose target is not asked for are skipped. The plan (the share, the MACs fraction of the multiplexed model
that the search must reach) is made and checked before anything is trained or written: a target out of reach
is a one-line error. A stage that finished (its report.json exists) is not run again; with `resume`, a stage
that was interrupted continues from its checkpoint, so the whole pipeline resumes after a crash at any point.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from torch import nn

from vitcompress.cli_args import Flags
from vitcompress.data.config import AugmentConfig, DataConfig
from vitcompress.errors import VitCompressError
from vitcompress.jobs.common import input_size_of, loaders_for
from vitcompress.jobs.finetune import finetune_job
from vitcompress.jobs.multiplex import multiplex_job
from vitcompress.jobs.slim import extract_job, search_job
from vitcompress.jobs.source import ModelSource, source_of
from vitcompress.metrics import count_macs, count_params, evaluate
from vitcompress.models.layers import transformer_layers
from vitcompress.multiplexing import MultiplexConfig, multiplex
from vitcompress.report import markdown_table, write_report
from vitcompress.slim import SlimConfig, attach_masks
from vitcompress.slim.solver import budget_curve
from vitcompress.train import TrainConfig

STAGES = ("1-multiplex", "2-search", "3-extract", "4-finetune")
SLIM = SlimConfig(attn=True, mlp=True, tokens=False)  # token masks do not combine with the multiplexed MLP conv


@dataclasses.dataclass(frozen=True)
class CompressPlan:
    """What the pipeline will do, decided before any training."""

    share: int | None
    """Layers per shared group (None: no multiplexing)."""
    slim_macs: float | None
    """MACs target of the search, as a fraction of the (multiplexed) model it slims (None: no slimming)."""
    teacher_params: int
    teacher_macs: int
    multiplexed_params: int | None


def plan_compression(net: nn.Module, params: float | None, macs: float | None, share: int | None) -> CompressPlan:
    """Choose the share that meets `params` (the smallest sharing that does) and the MACs fraction the search
    must reach for `macs` (both relative to the teacher); a target out of reach is a one-line error."""
    for name, value in (("params", params), ("macs", macs)):
        if value is not None and not 0 < value <= 1:
            raise VitCompressError(f"--{name} {value} must be a fraction of the teacher's in (0, 1], e.g. 0.6")
    if params is None and macs is None and share is None:
        raise VitCompressError("compress needs a target: --params 0.5 and/or --macs 0.6 (or --share k)")
    size = input_size_of(net)
    teacher_params, teacher_macs = count_params(net), count_macs(net, size)
    student, chosen = net, None
    if share is not None or params is not None:
        candidates = [share] if share is not None else range(2, len(transformer_layers(net)) + 1)
        for k in candidates:
            student = multiplex(net, MultiplexConfig(share=k))  # groups never span stages: k may exceed one
            if params is None or count_params(student) <= params * teacher_params:
                chosen = k
                break
        if chosen is None:
            least = count_params(student) / teacher_params
            raise VitCompressError(
                f"--params {params} is out of reach: sharing {'every layer' if share is None else f'{share} layers'} "
                f"keeps {least:.3f} of the teacher's parameters; ask for at least {least:.2f}"
            )
    slim_macs = None
    if macs is not None:
        own_macs = count_macs(student, size)
        slim_macs = macs * teacher_macs / own_macs
        reachable = budget_curve(attach_masks(student, SLIM), 2)[-1]["macs_ratio"]
        if slim_macs < reachable:
            raise VitCompressError(
                f"--macs {macs} is out of reach: slimming every attention dim and MLP unit leaves "
                f"{reachable * own_macs / teacher_macs:.3f} of the teacher's MACs; ask for more"
            )
        slim_macs = min(slim_macs, 1.0)
    return CompressPlan(chosen, slim_macs, teacher_params, teacher_macs,
                        count_params(student) if chosen is not None else None)


def _done(stage: Path) -> bool:
    return (stage / "report.json").is_file()


def _resume(stage: Path, resume: bool) -> bool:
    return resume and (stage / "checkpoint").is_dir()


def compress_job(
    teacher: Annotated[ModelSource | str, Flags(rename={"model": "teacher"})],
    out: str | Path,
    params: float | None = None,
    macs: float | None = None,
    share: int | None = None,
    train: TrainConfig | None = None,
    data: DataConfig | None = None,
    aug: AugmentConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Compress `teacher` to a parameter and/or MACs target: multiplex + distil (params), slim search + extract
    (MACs), KD fine-tune; one directory per stage under `out` and one report comparing them.

    Args:
        teacher: The trained model to compress (and to distil from); its head must fit the data.
        out: Output directory: one sub-directory per stage, report.md/json.
        params: Target parameters as a fraction of the teacher's, e.g. 0.5 (met by weight multiplexing).
        macs: Target MACs as a fraction of the teacher's, e.g. 0.6 (met by ViT-Slim).
        share: Layers per shared group instead of the one `params` implies.
        train: Training of every stage (each runs its epochs).
        data: Data.
        aug: Augmentation and regularisation.
        resume: Continue an interrupted stage from its checkpoint (finished stages are never rerun).
        progress: Show progress bars.
    """
    source, train, data, aug = source_of(teacher), train or TrainConfig(), data or DataConfig(), aug or AugmentConfig()
    net, extra = source.resolve()
    plan = plan_compression(net, params, macs, share)
    out = Path(out)
    stages = {name: out / name for name in STAGES}
    common = {"train": train, "data": data, "aug": aug, "progress": progress}
    current: ModelSource | str = source
    if plan.share is not None:
        stage = stages["1-multiplex"]
        if not _done(stage):
            multiplex_job(source, stage, config=MultiplexConfig(share=plan.share), resume=_resume(stage, resume),
                          latency=False, **common)
        current = str(stage)
    if plan.slim_macs is not None:
        search, extracted, tuned = stages["2-search"], stages["3-extract"], stages["4-finetune"]
        if not _done(search):
            search_job(current, search, slim=SLIM, resume=_resume(search, resume), **common)
        if not _done(extracted):
            extract_job(search, extracted, macs=plan.slim_macs)
        if not _done(tuned):
            finetune_job(str(extracted), tuned, kd_teacher=source, resume=_resume(tuned, resume), **common)
    return _report(out, source, net, extra, plan, stages, data)


def _report(out: Path, source: ModelSource, net: nn.Module, extra: dict[str, Any], plan: CompressPlan,
            stages: dict[str, Path], data: DataConfig) -> dict[str, Any]:
    """Teacher and each stage's model side by side: params, MACs (also as fractions of the teacher's), top-1.

    One val loader serves every model: each stage saved the teacher's data normalisation with it."""
    from vitcompress.export.io import load

    size = input_size_of(net)
    _, val_loader, _ = loaders_for(net, data, extra, seed=0)
    rows = []
    for name, model in [("teacher", net), *((n, load(d)) for n, d in stages.items() if _done(d)
                                             and n != "2-search")]:
        p, m = count_params(model), count_macs(model, size)
        rows.append({"model": f"teacher ({source.model})" if name == "teacher" else name,
                     "params (M)": p / 1e6, "params ratio": p / plan.teacher_params,
                     "MACs (M)": m / 1e6, "MACs ratio": m / plan.teacher_macs,
                     "top-1 (%)": evaluate(model, val_loader)["top1"]})
    report = {"plan": dataclasses.asdict(plan), "rows": rows, "stages": {n: str(d) for n, d in stages.items()}}
    write_report(out, report, f"compress {source.model}", {"teacher and each stage": markdown_table(rows)})
    return report


compress = compress_job
"""The library name: `vc.compress(teacher, out, params=0.5, macs=0.6)` runs the same pipeline as the command."""
