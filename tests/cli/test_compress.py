"""`vitcompress compress`: teacher + target -> multiplex + distil, slim search + extract, KD fine-tune, one report;
targets checked before training; resumable after a real crash (SIGKILL) in any stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from torch.testing import assert_close

import vitcompress as vc
from vitcompress.cli import main

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=4", "num_heads=2", "num_classes=10"]
FAST = ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "64", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compress") / "teacher"
    assert main(["train", "--model", "vit_tiny_patch16_224", *TINY, "-o", str(out), *FAST]) == 0
    return out


@pytest.fixture(scope="module")
def compressed(teacher) -> Path:
    out = teacher.parent / "compressed"
    assert main(["compress", "--teacher", str(teacher), "--params", "0.6", "--macs", "0.6", "-o", str(out),
                 "--checkpoint-every-steps", "4", *FAST]) == 0
    return out


def test_compress_meets_both_targets_and_reports_every_stage(teacher, compressed):
    report = json.loads((compressed / "report.json").read_text())
    assert [r["model"] for r in report["rows"]][1:] == ["1-multiplex", "3-extract", "4-finetune"]
    full = vc.load(teacher)
    fits = [k for k in range(2, 5)
            if vc.count_params(vc.multiplex(full, vc.MultiplexConfig(share=k))) <= 0.6 * vc.count_params(full)]
    assert report["plan"]["share"] == fits[0]  # the smallest sharing whose params meet the target
    final = vc.load(compressed / "4-finetune")
    assert vc.count_params(final) <= 0.6 * vc.count_params(full)
    macs_ratio = vc.count_macs(final, (3, 16, 16)) / vc.count_macs(full, (3, 16, 16))
    assert 0.55 < macs_ratio <= 0.6
    assert report["rows"][-1]["MACs ratio"] == pytest.approx(macs_ratio)
    assert "## teacher and each stage" in (compressed / "report.md").read_text()


@pytest.mark.parametrize(("target", "message"), [
    (["--params", "0.01"], "--params 0.01 is out of reach: sharing every layer keeps"),
    (["--macs", "0.01"], "--macs 0.01 is out of reach"),
    (["--macs", "1.5"], "must be a fraction of the teacher's in (0, 1]"),
    ([], "compress needs a target"),
])
def test_a_target_out_of_reach_is_one_line_before_anything_is_written(teacher, tmp_path, capsys, target, message):
    out = tmp_path / "never"
    assert main(["compress", "--teacher", str(teacher), *target, "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not out.exists()


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


@pytest.mark.slow
def test_compress_killed_in_the_search_resumes_to_the_same_model(teacher, compressed, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vitcompress.cli", "compress", "--teacher", str(teacher), "--params", "0.6",
           "--macs", "0.6", "-o", str(out), "--checkpoint-every-steps", "4", *FAST]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    try:  # SIGKILL the whole process group once the search stage has written a mid-epoch checkpoint
        while not list((out / "2-search" / "checkpoint").glob("step-*/meta.json")):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the search stage never wrote a checkpoint"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode != 0 and not (out / "2-search" / "report.json").exists()
    result = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("1-multiplex", "2-search", "4-finetune"):
        resumed, reference = load_file(out / stage / "model.safetensors"), load_file(
            compressed / stage / "model.safetensors")
        assert resumed.keys() == reference.keys()
        for name in reference:
            assert_close(resumed[name], reference[name], rtol=0, atol=0, msg=f"{stage}: {name}")
