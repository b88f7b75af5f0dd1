"""Shared by the benchmark scripts: the machine they ran on, the head, cells and foot of a section, and writing one
named section of BENCHMARKS.md.

Each benchmark owns one section between `<!-- begin:NAME -->` and `<!-- end:NAME -->`; rewriting it leaves the
other sections untouched, so benchmarks (multiplexing, slimming, Swin, ...) can be rerun independently.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import platform
import re
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

HEADER = (
    "# Benchmarks\n\n"
    "Every section below is written by a script in `benchmarks/`, with the command that reproduces it at its top.\n"
    "Numbers are measured, never edited by hand: rerun the script to refresh a section.\n"
)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def commit() -> str:
    """The checkout's short commit, marked when its code (src/, benchmarks/) differs from it; "unknown" outside a
    git checkout. BENCHMARKS.md and figures/ are left out: an earlier section written in this checkout is no code
    change."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks"],
                               cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, str]:
    """What a reader needs to compare timings: CPU, cores, OS, Python/torch/timm versions, the date and the code."""
    import timm
    import torch

    gpu = {"GPU": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}
    return {
        "CPU": cpu_model(),
        "cores": str(usable_cores()),
        **gpu,
        "OS": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
    }


def machine_markdown(info: dict[str, str] | None = None) -> str:
    """`machine()` as one Markdown line."""
    info = info or machine()
    return "Machine: " + " | ".join(f"{k} {v}" for k, v in info.items())


def heading(title: str, command: str, quick: bool) -> list[str]:
    """The lines every section starts with: its title, the command that reproduces it, and the machine."""
    return [
        title + (" — QUICK SMOKE RUN, not a result" if quick else ""),
        "",
        "```bash",
        command,
        "```",
        "",
        machine_markdown(),
        "",
    ]


def details(summary: str, commands: list[str], table: str) -> list[str]:
    """The lines every section ends with: a folded block with the commands it ran and its per-run table."""
    return [f"<details><summary>{summary}</summary>", "", "```bash", *commands, "```", "", table, "", "</details>"]


def mean_std(values: list[float]) -> str:
    """Mean ± sample std over seeds; a single run says n=1 instead, as it has no spread."""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def publish(path: str | Path, name: str, body: str) -> Path:
    """`write_section`, then the body and where it went on stdout."""
    written = write_section(path, name, body)
    print(body)
    print(f"\nwrote section {name!r} of {written}", flush=True)
    return written


def write_section(path: str | Path, name: str, body: str) -> Path:
    """Write `body` as section `name` of the Markdown file `path`, replacing that section if it is there.

    The file is created (with a short header) if missing; the new section is appended if the file has no
    section of that name. The write is atomic, so an interrupted benchmark never leaves half a file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"section name {name!r} must be letters, digits, '.', '_' or '-'")
    path = Path(path)
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.DOTALL)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):  # benchmarks finishing together must not drop each other's sections
        text = path.read_text() if path.exists() else HEADER
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for read-modify-write of `path`, held on a file in the temp dir (not in the repo)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"vitcompress-bench-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
