"""The benchmark scripts run end to end at tiny size (quick modes, dry runs): structure, never accuracy or speed."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_cpu(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--work", str(tmp_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    table = (tmp_path / "gpu_check.md").read_text()
    for run in ("train bf16", "multiplex+KD bf16", "slim search bf16", "finetune+KD bf16", "torchrun DDP",
                "SIGKILL + --resume"):
        assert run in table
    assert "| NO |" not in table


def test_gpu_check_refuses_to_run_without_cuda_unless_dry(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run([sys.executable, str(SCRIPT), "--work", str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--dry-run" in result.stderr


LATENCY = Path(__file__).resolve().parents[1] / "benchmarks" / "slim_latency.py"


@pytest.mark.slow
def test_slim_latency_quick_runs_every_runtime(tmp_path):
    # Structure only: every runtime's table has the teacher and each variant, and the target lines are written.
    md = tmp_path / "BENCHMARKS.md"
    args = ["--quick", "--batches", "1", "--threads", "1", "--min-run-time", "0.02", "--variants", "slim_m8", "tp",
            "--md", str(md)]
    result = subprocess.run([sys.executable, str(LATENCY), *args], capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    text = md.read_text()
    for runtime in ("eager", "compile", "onnxruntime"):
        section = text.split(f"**deit_tiny_patch16_224**, {runtime}, 1 thread(s):", 1)[1].split("Load average")[0]
        for row in ("| teacher", "multiple_of=8, 60% MACs", "Torch-Pruning (Taylor), 60% MACs"):
            assert row in section
        assert f"deit_tiny_patch16_224, {runtime}, ViT-Slim (attention + MLP), multiple_of=8, 1 thread(s)" in text
    assert len(list((tmp_path / "onnx" / "deit_tiny_patch16_224").glob("*.onnx"))) == 3
    assert (tmp_path / "figures" / "slim-latency-deit_tiny_patch16_224.png").stat().st_size > 0


def load_slim_latency(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(LATENCY.parent))  # its own imports (_measure, _report) live beside it
    spec = importlib.util.spec_from_file_location("slim_latency", LATENCY)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_slim_latency_times_another_dtype_in_its_own_section(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    args = ["--quick", "--dtype", "bf16", "--runtimes", "eager", "--batches", "1", "--threads", "1",
            "--min-run-time", "0.02", "--variants", "slim_m8", "--md", str(md)]
    result = subprocess.run([sys.executable, str(LATENCY), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    section = md.read_text().split("<!-- begin:slim-latency-bf16 -->", 1)[1]
    assert "(DeiT-Ti/S, 224², CPU bf16)" in section and "multiple_of=8, 60% MACs" in section


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device tpu: this machine has no such device"),
    (["--dtype", "fp16", "--runtimes", "onnxruntime"], "--dtype fp16 is timed in torch only"),
])
def test_slim_latency_refuses_a_setting_it_cannot_time(monkeypatch, capsys, argv, message):
    bench = load_slim_latency(monkeypatch)
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_slim_latency_counts_cells_slower_than_uniform_and_the_noise_control(monkeypatch):
    # Synthetic per-round latencies: the rule compares each round with the uniform cut's in the same round.
    bench = load_slim_latency(monkeypatch)
    args = bench.parse_args(["--archs", "a", "--budgets", "0.6", "--batches", "32", "--threads", "1",
                             "--variants", "slim", "slim_m8", "uniform", "uniform_copy"])
    rounds = {"teacher": [10.0, 10.0, 10.0], "uniform/60%": [6.0, 6.0, 6.0],
              "slim/60%": [6.6, 5.4, 6.3],          # paired ratios 1.1, 0.9, 1.05: median 1.05, slower
              "slim_m8/60%": [5.7, 6.6, 5.4],       # 0.95, 1.1, 0.9: median 0.95, not slower
              "uniform_copy/60%": [6.3, 6.6, 5.7]}  # 1.05, 1.1, 0.95: median 1.05, the control reads slower
    meas = {"models": {n: {"macs": 6e9 if n != "teacher" else 1e10, "lat32t1": r} for n, r in rounds.items()}}
    lines = bench.best_runtime_lines(args, "a", {"eager": meas})
    never_slower = next(ln for ln in lines if "never slower" in ln)
    assert "**NOT met** — slower in 1 cell(s): eager b32 t1 slim 60%: 1.05×." in never_slower
    assert "ViT-Slim (attention + MLP) 1.05; ViT-Slim (attention + MLP), multiple_of=8 0.95" in "\n".join(lines)
    control = next(ln for ln in lines if "noise control —" in ln)
    assert "in 1 of 1 cells (ratios 1.05–1.05)" in control


METHODS = Path(__file__).resolve().parents[1] / "benchmarks" / "methods.py"


@pytest.mark.slow
def test_method_suites_quick_write_every_table_and_figure(tmp_path):
    # Structure only (tiny budgets, one seed): every suite's section with each of its rows, a target line per
    # target, finite scores, and the PNGs linked from the Markdown exist. Accuracy is not asserted.
    md = tmp_path / "BENCHMARKS.md"
    result = subprocess.run([sys.executable, str(METHODS), "--quick", "--work", str(tmp_path / "work"), "--md",
                             str(md)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    text = md.read_text()
    expected = {"multiplex": ["ViT teacher (1 run)", "naive sharing", "transforms, no KD", "MiniViT (transforms"],
                "slim": ["ViT-Slim, 60% MACs", "Torch-Pruning (Taylor), 60% MACs", "uniform ℓ1 cut, 60% MACs"],
                "swin": ["Swin teacher", "Mini-Swin", "Swin-Slim, 60% MACs"],
                "combined": ["multiplex (share 2) + ViT-Slim 60%", "Torch-Pruning (Taylor), 60% MACs"]}
    for suite, rows in expected.items():
        section = text.split(f"<!-- begin:methods-{suite} -->", 1)[1].split(f"<!-- end:methods-{suite} -->")[0]
        assert "QUICK SMOKE RUN" in section and "Targets:" in section
        assert all(f"| {row}" in section for row in rows), section
        assert section.count("**met**") + section.count("**NOT met**") >= 1
        for png in re.findall(r"\]\((figures/[^)]+\.png)\)", section):
            assert (tmp_path / png).stat().st_size > 0
        summary = json.loads((tmp_path / "work" / f"{suite}.json").read_text())
        assert all(math.isfinite(t) and 0 <= t <= 100 for row in summary for t in row["top1"])
    for png in ("multiplex-pareto", "slim-pareto", "slim-budget-curve", "slim-kept", "swin-kept"):
        assert (tmp_path / "figures" / f"{png}.png").is_file()
