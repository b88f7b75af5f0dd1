"""GPU check of the training paths (issue 8, part 8): every job for a few steps at DeiT-S 224 on one CUDA device.

    python benchmarks/gpu_check.py                 # on a CUDA machine: writes BENCHMARKS.md's "GPU check" section
    python benchmarks/gpu_check.py --dry-run       # anywhere: CPU, tiny ViT, same code paths, writes nothing there

What it runs, each through the real CLI on a generated ImageFolder (so decoding, timm's transforms, workers and
pinned memory are in the path):
- `train` (a plain timm fine-tune), `multiplex` with all three distillation terms on all layers, `slim search`
  (masks + sparsity loss) and `finetune` with logit KD, each with bf16 and with fp16 AMP;
- `multiplex` with `--compile`;
- `train` under `torchrun --nproc_per_node 1` (NCCL on CUDA, gloo in the dry run);
- a crash check: `multiplex` SIGKILLed after a mid-epoch checkpoint, `--resume`d, compared with a straight run.
Every run must end with finite losses; the table gives the median images/s of each run's steps after the first
few (compile and cudnn autotuning land there).

The dry run exists so this script is tested on CPU before a GPU is lent (tests/test_benchmarks.py runs it): bf16
only (fp16 needs CUDA), no compile (minutes on CPU), gloo instead of NCCL, a tiny ViT at 32x32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def make_folder(root: Path, per_class: int, size: int) -> Path:
    """A random-image ImageFolder with train/ and val/ (JPEGs, so decoding is part of the path)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", max(2, per_class // 8))):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _cli(args: list[str], torchrun: bool = False) -> list[str]:
    if torchrun:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
                "vitcompress.cli", *args]
    return [sys.executable, "-m", "vitcompress.cli", *args]


def run(name: str, args: list[str], out: Path, log_dir: Path, torchrun: bool = False) -> dict:
    """One CLI run into `out`; returns its row: finite losses, median img/s, wall time."""
    start = time.perf_counter()
    log = log_dir / f"{name}.log"
    with open(log, "w") as f:
        code = subprocess.run(_cli([*args, "-o", str(out)], torchrun), env=_env(), stdout=f, stderr=subprocess.STDOUT,
                              timeout=1800).returncode
    row = {"run": name, "ok": code == 0, "seconds": time.perf_counter() - start}
    if code != 0:
        row["error"] = log.read_text().strip().splitlines()[-1][:200] if log.read_text().strip() else f"exit {code}"
        return row
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    losses = [r["loss"] for r in steps]
    row["finite"] = all(math.isfinite(v) for v in losses)
    speeds = [r["img_s"] for r in steps[3:]] or [r["img_s"] for r in steps]
    row["img_s"] = statistics.median(speeds)
    row["ok"] = row["finite"]
    return row


def crash_check(args: list[str], work: Path, log_dir: Path) -> dict:
    """SIGKILL a run after its first mid-epoch checkpoint, resume it, and compare with a straight run."""
    import torch
    from safetensors.torch import load_file

    straight, crashed = work / "resume-straight", work / "resume-crashed"
    base = run("resume-straight", args, straight, log_dir)
    proc = subprocess.Popen(_cli([*args, "-o", str(crashed)]), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1200
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        metas = [json.loads(p.read_text()) for p in (crashed / "checkpoint").glob("step-*/meta.json")]
        if any(m.get("batches_done", 0) > 0 for m in metas):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    resumed = run("resume-resumed", [*args, "--resume"], crashed, log_dir)
    row = {"run": "SIGKILL + --resume vs straight", "ok": False, "killed_mid_epoch": killed}
    if base["ok"] and resumed["ok"]:
        a, b = load_file(straight / "model.safetensors"), load_file(crashed / "model.safetensors")
        row["max_abs_weight_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        row["ok"] = killed and row["max_abs_weight_diff"] == 0.0
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return row


def plan(dry: bool, data: Path, teacher: Path) -> list[tuple[str, list[str], bool]]:
    """(name, CLI args without -o, under torchrun) of every run after the teacher."""
    common = ["--data", str(data), "--no-progress", "--log-every", "1", "--workers", "2" if dry else "8",
              "--warmup-epochs", "0", "--epochs", "1", "--batch-size", "16" if dry else "64"]
    kd = ["--attn-layers", "all", "--hidden-layers", "all"]
    runs = []
    for amp in ["bf16"] if dry else ["bf16", "fp16"]:
        tag = ["--amp", amp]
        runs += [
            (f"train {amp}", ["train", "--model", str(teacher), *common, *tag], False),
            (f"multiplex+KD {amp}", ["multiplex", "--teacher", str(teacher), "--share", "2", *kd, *common, *tag],
             False),
            (f"slim search {amp}", ["slim", "search", "--model", str(teacher), *common, *tag], False),
            (f"finetune+KD {amp}", ["finetune", "--model", str(teacher), "--kd-teacher", str(teacher), *common, *tag],
             False),
        ]
    if not dry:
        runs.append(("multiplex+KD bf16 --compile",
                     ["multiplex", "--teacher", str(teacher), "--share", "2", *kd, *common, "--amp", "bf16",
                      "--compile"], False))
    runs.append(("train bf16, torchrun DDP (1 process)", ["train", "--model", str(teacher), *common, "--amp", "bf16"],
                 True))
    return runs


def teacher_args(dry: bool, data: Path) -> list[str]:
    if dry:
        model = ["--model", "vit_tiny_patch16_224", "--model-args", "img_size=32", "patch_size=8", "embed_dim=32",
                 "depth=2", "num_heads=2", f"num_classes={CLASSES}"]
    else:
        model = ["--model", "deit_small_patch16_224", "--model-args", f"num_classes={CLASSES}"]
    return ["train", *model, "--data", str(data), "--epochs", "1", "--warmup-epochs", "0", "--no-progress",
            "--batch-size", "16" if dry else "64", "--log-every", "1"]


def table(rows: list[dict]) -> str:
    lines = ["| run | ok | img/s (median) | wall (s) | note |", "|---|---|---|---|---|"]
    for r in rows:
        note = r.get("error") or (f"max |Δw| {r['max_abs_weight_diff']:.3g}" if "max_abs_weight_diff" in r else "")
        speed = f"{r['img_s']:.0f}" if "img_s" in r else ""
        seconds = f"{r['seconds']:.0f}" if "seconds" in r else ""
        lines.append(f"| {r['run']} | {'yes' if r['ok'] else 'NO'} | {speed} | {seconds} | {note} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model: check the script, not the GPU")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "gpu_check", help="scratch directory")
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    work, logs = args.work, args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    data = make_folder(work / "data", per_class=8 if args.dry_run else 160, size=32 if args.dry_run else 256)
    teacher_dir = work / "teacher"
    rows = [run("teacher (train, fp32)", teacher_args(args.dry_run, data), teacher_dir, logs)]
    if not rows[0]["ok"]:
        print(table(rows))
        return 1
    for name, cli_args, torchrun in plan(args.dry_run, data, teacher_dir):
        rows.append(run(name, cli_args, work / name.split()[0].replace("+", "_") / name.replace(" ", "_"), logs,
                        torchrun))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    multiplex = ["multiplex", "--teacher", str(teacher_dir), "--share", "2", "--data", str(data), "--no-progress",
                 "--epochs", "2", "--warmup-epochs", "0", "--batch-size", "16" if args.dry_run else "64",
                 "--checkpoint-every-steps", "2", "--log-every", "1", "--workers", "2"]
    rows.append(crash_check(multiplex, work, logs))
    report = table(rows)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    print(f"\n{device}, torch {torch.__version__}\n{report}")
    (work / "gpu_check.md").write_text(report + "\n")
    if not args.dry_run:
        _write_section(report, device)
    return 0 if all(r["ok"] for r in rows) else 1


def _write_section(report: str, device: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _report import heading, publish

    lines = heading("## GPU check: every job at DeiT-S 224 with AMP, compile, DDP, crash + resume",
                    "python benchmarks/gpu_check.py", quick=False)
    publish(ROOT / "BENCHMARKS.md", "gpu-check", "\n".join([*lines, f"Device: {device}", "", report]))


if __name__ == "__main__":
    raise SystemExit(main())
