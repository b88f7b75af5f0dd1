"""Training runs of the benchmark scripts: a `vitcompress` CLI command run into its own directory, reused when an
identical finished run is there."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def finished(out_dir: Path, record: dict[str, Any], force: bool) -> dict[str, Any] | None:
    """The bench.json of a finished run in `out_dir` made by the same `record`, else None.

    A run is finished when it has report.json (written last, atomically) and bench.json.
    """
    stamp = out_dir / "bench.json"
    if force or not (out_dir / "report.json").is_file() or not stamp.is_file():
        return None
    done = json.loads(stamp.read_text())
    return done if all(done.get(k) == v for k, v in record.items()) else None


def run_cli(argv: list[str], out_dir: Path, log: Path, force: bool, threads: int,
            recoverable: bool = False) -> tuple[float, bool]:
    """Run `python -m vitcompress.cli *argv` into `out_dir` unless an identical finished run is there.

    The run gets `threads` torch CPU threads (via OMP_NUM_THREADS). Returns (wall seconds, whether it ran now).
    A finished run with the same argv and threads is reused; anything else in `out_dir` is deleted first, so a
    stale checkpoint is never resumed by accident. A failed command ends the benchmark (SystemExit), or with
    `recoverable` raises RuntimeError naming the log's last line, for callers that can report the failure and go on.
    """
    record = {"argv": argv, "threads": threads}
    done = finished(out_dir, record, force)
    if done:
        print(f"  reuse  {out_dir} (same command, {done['seconds']:.0f} s)", flush=True)
        return done["seconds"], False
    shutil.rmtree(out_dir, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  run    vitcompress {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        proc = subprocess.run([sys.executable, "-m", "vitcompress.cli", *argv], stdout=f, stderr=subprocess.STDOUT,
                              env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        if not recoverable:
            raise SystemExit(f"vitcompress {shlex.join(argv)} failed (exit {proc.returncode}); see {log}")
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"vitcompress {shlex.join(argv)} failed (exit {proc.returncode}): {tail[0]} (see {log})")
    (out_dir / "bench.json").write_text(json.dumps({**record, "seconds": seconds}, indent=2))
    print(f"         done in {seconds:.0f} s", flush=True)
    return seconds, True
