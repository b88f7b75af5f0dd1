"""Latency, params and MACs of saved or in-memory models, shared by the benchmark scripts.

Latency is timed in rounds over all models in shuffled order, one sample per (model, batch, threads) and round,
so that load from other processes spreads over every model rather than hitting one; speedups pair the teacher's
and a model's samples of the same round.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys
from collections.abc import Callable
from typing import Any

LATENCY_BATCHES = (1, 32)


def key(batch: int, threads: int) -> str:
    """Where the per-round latencies of one (batch, threads) setting are stored in a model's measurements."""
    return f"lat{batch}t{threads}"


def attention_calls(model: Any) -> int | None:
    """Attention kernels (SDPA calls) per forward: one per layer, or one per group of equal-width heads.

    None for models without a flat `blocks` list (Swin nests its blocks in stages).
    """
    if not hasattr(model, "blocks"):
        return None
    return sum(len(getattr(blk.attn, "groups", [None])) for blk in model.blocks)


def keep_freed_memory() -> bool:
    """Stop glibc from handing freed memory back to the OS (returns whether it applied: glibc on Linux only).

    A benchmark that alternates between models in one process pays page faults a long single-model run does not:
    glibc trims the heap one model freed and the next zero-fills those pages again. (A distillation step at DeiT-S
    224, batch 8, faults ~0.5 M pages in its first step, ~0.2 M in its second and none after; alternating the rows
    of `train_step_cost.py` for 4 rounds took 1.47 M faults, 0.86 M with this, and the rows' median steps got 7%
    (plain) to 17% (Q/K/V relations) faster.) Fixing the mmap threshold at its 64-bit maximum (32 MiB) and trimming only
    past 2 GiB lets every row run at the steady state it stands for.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    return mallopt(m_mmap_threshold, 32 * 2**20) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1


def few_warmups_for_big_batches(batch: int) -> int:
    """Untimed forwards before a measurement: one pass of a large batch already sizes the allocator and thread
    pools, and at ImageNet size each extra pass costs seconds."""
    return 1 if batch >= 8 else 3


def measure_models(models: dict[str, tuple[Any, tuple[int, ...]]], rounds: int, threads: list[int],
                   min_run_time: float, batches: tuple[int, ...] = LATENCY_BATCHES,
                   warmup: Callable[[int], int] | None = None,
                   runners: dict[str, Any] | None = None, runtime: str | None = None,
                   device: str = "cpu") -> dict[str, Any]:
    """Params, MACs, attention calls and latency of every (model, input size); latency in `rounds` shuffled passes
    over all of them, stored under `key(batch, threads)`, one sample per round (that measurement's median).

    `warmup(batch)` gives the untimed forwards before each measurement; None keeps `measure_latency`'s default.
    `runners` (name -> what to time: a compiled module, an .onnx path) replace the models in the timing only, run
    by `measure_latency(runtime=runtime)`; params and MACs are always the models'. The models must be on `device`.
    """
    import vitcompress as vc

    out: dict[str, Any] = {}
    for name, (m, size) in models.items():
        calls = attention_calls(m)
        out[name] = {"params": vc.count_params(m), "macs": vc.count_macs(m, size),
                     **({} if calls is None else {"attn_calls": calls}),
                     **{key(b, t): [] for b in batches for t in threads}}
    runtime_kwargs = {} if runtime is None else {"runtime": runtime}
    load_before = os.getloadavg()
    order = list(models)
    rng = random.Random(0)
    for r in range(rounds):
        rng.shuffle(order)
        print(f"latency round {r + 1}/{rounds} (load {os.getloadavg()[0]:.2f})", flush=True)
        for name in order:
            model, size = models[name]
            timed = model if runners is None else runners[name]
            for t in threads:
                for batch in batches:
                    extra = {} if warmup is None else {"warmup": warmup(batch)}
                    result = vc.measure_latency(timed, size, batch_size=batch, threads=t, min_run_time=min_run_time,
                                                device=device, **extra, **runtime_kwargs)
                    out[name][key(batch, t)].append(result.median_ms)
    return {"models": out, "load_before": load_before, "load_after": os.getloadavg()}


def speedups(meas: dict[str, Any], name: str, batch: int, threads: int) -> list[float]:
    """Teacher latency / model latency, round by round (both timed in the same round)."""
    teacher = meas["models"]["teacher"][key(batch, threads)]
    return [t / m for t, m in zip(teacher, meas["models"][name][key(batch, threads)], strict=True)]
