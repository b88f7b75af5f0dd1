import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import CFG, loaders
from safetensors.torch import load_file
from torch.testing import assert_close
from train_toys import tiny_vit, toy_dataset

from vitcompress.train import CrossEntropyObjective, fit
from vitcompress.train.loop import TIMING_KEYS

WORKER = Path(__file__).with_name("ddp_worker.py")
ACCUM_WORKER = Path(__file__).with_name("accum_worker.py")


def _torchrun(script: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.distributed
def test_two_gloo_ranks_stay_in_sync_and_match_one_process(tmp_path):
    _torchrun(WORKER, str(tmp_path))

    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert_close(rank0, rank1, rtol=0, atol=0)
    histories = [json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1)]
    for h in histories:
        for record in h:
            for key in TIMING_KEYS:
                record.pop(key)
    assert histories[0] == histories[1]  # epoch losses and val metrics are reduced over ranks
    assert histories[0][-1]["val_n"] == 64  # the sharded val set, counted once
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint",
        "metrics.csv",
        "metrics.jsonl",
    ]

    # Two ranks of 8 are one process with batch 16: same data per step, same averaged gradient.
    single = tiny_vit(seed=0)
    train, val = loaders(world_size=1, rank=0)
    history = fit(single, train, val, CrossEntropyObjective(), CFG, None, progress=False)
    # Compared as functions: the key bias has no effect on attention, so its gradient is rounding noise that
    # Adam normalises into arbitrary, implementation-dependent steps.
    ddp = tiny_vit().eval()
    ddp.load_state_dict(rank0)
    images = toy_dataset(n=64).tensors[0]
    with torch.no_grad():
        assert_close(ddp(images), single.eval()(images), rtol=1e-4, atol=1e-4)
    assert history[-1]["loss"] == pytest.approx(histories[0][-1]["loss"], rel=1e-4)


@pytest.mark.distributed
def test_two_ranks_with_accumulation_match_one_process_with_the_global_batch(tmp_path):
    from accum_worker import ACCUM, ACCUM_CFG, MICRO_BATCH, accum_loader

    _torchrun(ACCUM_WORKER, str(tmp_path))
    single = tiny_vit(seed=0)
    fit(single, accum_loader(1, 0, 2 * ACCUM * MICRO_BATCH), None, CrossEntropyObjective(), ACCUM_CFG, None,
        progress=False)
    # Same images per update and the same mean gradient; only float summation order differs (4 partial means
    # averaged vs one mean of 16), so weights agree to rounding, amplified a little by 8 Adam steps.
    assert_close(load_file(tmp_path / "accum.safetensors"), single.state_dict(), rtol=1e-4, atol=1e-5)
