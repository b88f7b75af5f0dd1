"""The CLI jobs under torchrun: 2 gloo ranks run multiplexing and the slimming search end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import vitcompress as vc

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "64", "--no-progress"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vitcompress.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.distributed
def test_multiplex_and_slim_search_under_torchrun(tmp_path):
    from vitcompress.cli import main

    teacher = tmp_path / "teacher"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(teacher), *FAST]) == 0

    student = tmp_path / "student"
    result = torchrun("multiplex", "--teacher", str(teacher), "--share", "2", "--kernel-size", "3",
                      "--attn-layers", "all", "--hidden-layers", "all", "-o", str(student), *FAST)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((student / "report.json").read_text())
    assert report["epochs"][-1]["val_n"] == 360  # the sharded val set is counted once over both ranks
    assert vc.count_params(vc.load(student)) < vc.count_params(vc.load(teacher))

    search = tmp_path / "search"
    result = torchrun("slim", "search", "--model", str(teacher), "--attn", "--mlp", "-o", str(search), *FAST)
    assert result.returncode == 0, result.stderr[-4000:]
    slim = tmp_path / "slim"
    assert main(["slim", "extract", "--search", str(search), "--macs", "0.6", "-o", str(slim)]) == 0
    ratio = vc.count_macs(vc.load(slim), (3, 16, 16)) / vc.count_macs(vc.load(teacher), (3, 16, 16))
    assert abs(ratio - 0.6) <= 0.006
