"""A real crash: the CLI runs in its own process, is SIGKILLed mid-epoch, and `--resume` must finish the run
exactly as an uninterrupted one (weights and metrics.jsonl identical, rtol=0 atol=0).

The kill lands wherever the run happens to be once a mid-epoch checkpoint exists, as a preemption would; the
resumed process then starts from the newest complete checkpoint, not from where the first one died.
"""

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
from train_toys import untimed_records

TINY = ["--model-args", "img_size=16", "patch_size=4", "embed_dim=32", "depth=2", "num_heads=2", "num_classes=10"]
RUN = ["--data", "digits", "--batch-size", "32", "--seed", "1", "--no-progress", "--log-every", "1",
       "--checkpoint-every-steps", "4", "--warmup-epochs", "0.5"]
STEPS_PER_EPOCH = 45  # 1437 digits train images in batches of 32
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vitcompress.cli", *args]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            "vitcompress.cli", *args]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _mid_epoch_checkpoint(out: Path, after_step: int) -> bool:
    for meta in (out / "checkpoint").glob("step-*/meta.json"):
        try:
            m = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m["step"] >= after_step and m.get("batches_done", 0) > 0:
            return True
    return False


def _kill_mid_epoch(cmd: list[str], out: Path, after_step: int) -> None:
    """Start `cmd`, SIGKILL its whole process group once a mid-epoch checkpoint past `after_step` exists."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not _mid_epoch_checkpoint(out, after_step):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # every process of the job at once, torchrun's workers too
        proc.wait()
    assert proc.returncode != 0
    assert not (out / "model.safetensors").exists()


def _assert_same_run(a: Path, b: Path) -> None:
    assert_close(load_file(b / "model.safetensors"), load_file(a / "model.safetensors"), rtol=0, atol=0)
    assert untimed_records(b) == untimed_records(a)


def _crash_and_resume(tmp_path: Path, args: list[str], launcher=_cli, after_step: int = STEPS_PER_EPOCH + 4):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    _run(launcher(*args, "-o", str(straight)))
    _kill_mid_epoch(launcher(*args, "-o", str(crashed)), crashed, after_step)
    _run(launcher(*args, "-o", str(crashed), "--resume"))
    _assert_same_run(straight, crashed)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    _run(_cli("train", "--model", "vit_tiny_patch16_224", *TINY, "--data", "digits", "--epochs", "1",
              "--no-progress", "-o", str(out)))
    return out


def test_train_resumes_exactly_after_sigkill(tmp_path):
    _crash_and_resume(tmp_path, ["train", "--model", "vit_tiny_patch16_224", *TINY, *RUN, "--epochs", "2"])


def test_multiplex_resumes_exactly_after_sigkill(tmp_path, teacher):
    _crash_and_resume(tmp_path, ["multiplex", "--teacher", str(teacher), "--share", "2", "--kernel-size", "3",
                                 "--attn-layers", "all", "--hidden-layers", "all", *RUN, "--epochs", "2"])


def test_slim_search_resumes_exactly_after_sigkill(tmp_path, teacher):
    _crash_and_resume(tmp_path, ["slim", "search", "--model", str(teacher), *RUN, "--epochs", "2",
                                 "--mask-lr", "0.01"])


def test_finetune_resumes_exactly_after_sigkill(tmp_path, teacher):
    _crash_and_resume(tmp_path, ["finetune", "--model", str(teacher), "--kd-teacher", str(teacher), *RUN,
                                 "--epochs", "2"])


def test_mixup_and_repeated_augmentation_resume_exactly_after_sigkill(tmp_path, teacher):
    # The Mixup/CutMix RNG and timm's RepeatAugSampler order are part of what a checkpoint must carry.
    _crash_and_resume(tmp_path, ["multiplex", "--teacher", str(teacher), "--share", "2", "--kernel-size", "3", *RUN,
                                 "--epochs", "2", "--mixup", "0.8", "--cutmix", "1.0", "--mixup-switch-prob", "0.5",
                                 "--aug-repeats", "3", "--smoothing", "0.1"])


@pytest.mark.distributed
def test_two_gloo_ranks_resume_exactly_after_sigkill(tmp_path):
    args = ["train", "--model", "vit_tiny_patch16_224", *TINY, *RUN, "--epochs", "2"]
    _crash_and_resume(tmp_path, args, launcher=_torchrun, after_step=STEPS_PER_EPOCH // 2 + 4)
