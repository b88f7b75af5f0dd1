"""The GPU check script is prepared on CPU: its dry run exercises the same CLI paths at tiny size."""

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
