"""Zoo coverage (issue 9): which timm ViT/DeiT/Swin/EVA architectures `vc.multiplex` and ViT-Slim handle exactly.

Every name timm registers in the modules `vision_transformer`, `deit`, `swin_transformer`, `swin_transformer_v2`
and `eva` is built with `pretrained=False` at depth 2 and a small image, its parameters perturbed with seeded
noise (so layer-scale and zero-initialised parts matter), and two checks run on a seeded batch of 2, eval mode:

    multiplex   `vc.multiplex(m, MultiplexConfig(share=1))(x) == m(x)`
    slim        `attach_masks(m, SlimConfig(attn=True, mlp=True))`, mask values made seeded-random in [-0.5, 1.5),
                `sel = select(masked, dims={"attn": 0.6, "mlp": 0.6})`, `extract(masked, sel)(x) == binarize(...)(x)`

"==" is `torch.testing.assert_close` at its float32 defaults. Each check ends as `exact`, `mismatch` (max abs
error), `refused` (a `VitCompressError`: the library says it does not support the model), `raw error` (any other
exception: a bug to turn into support or a one-line refusal) or `timeout`. A name timm cannot build (or run) at
that size is `not buildable` and one above `--max-params` at that size is `too big`: both are left out of the
denominator. Sizes (recorded per name): ViT-like (`depth=2`, `img_size` = 4 patches a side); Swin-like
(`depths=(2, 2)`, the first two stages' heads, the model's own window, `img_size` = 2 windows a side at stage 1,
so block 2 of stage 1 is shifted and stage 2 follows a patch merging). Parameters are counted on the meta device.

Names run in `--jobs` worker processes (one torch thread each); a worker that hangs past `--timeout` seconds on a
name or dies is killed and replaced, so one name cannot stop the scan. Writes `docs/zoo.md`.

    python benchmarks/zoo_coverage.py                       # every name of the five modules (~10 min, 2 cores)
    python benchmarks/zoo_coverage.py --quick               # a handful of names per module: checks the script
    python benchmarks/zoo_coverage.py --names vit_tiny_patch16_224 swin_tiny_patch4_window7_224   # just these
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `_report` also when imported from the tests
import _report  # noqa: E402

MODULES = ("vision_transformer", "deit", "swin_transformer", "swin_transformer_v2", "eva")
SWIN_MODULES = ("swin_transformer", "swin_transformer_v2")
CHECKS = ("multiplex", "slim")
# Per-check outcomes; a name that was not scanned has the same status for both checks.
EXACT, MISMATCH, REFUSED, RAW, TIMEOUT = "exact", "mismatch", "refused", "raw error", "timeout"
NOT_BUILDABLE, TOO_BIG = "not buildable", "too big"
STATUSES = (EXACT, MISMATCH, REFUSED, RAW, TIMEOUT, NOT_BUILDABLE, TOO_BIG)
UNSCANNED = (NOT_BUILDABLE, TOO_BIG)
# --quick: these names where registered (else the module's first two), chosen to hit different code paths.
QUICK = {
    "vision_transformer": ["vit_tiny_patch16_224", "vit_base_patch16_siglip_224"],
    "deit": ["deit_tiny_distilled_patch16_224", "deit3_small_patch16_224"],
    "swin_transformer": ["swin_tiny_patch4_window7_224"],
    "swin_transformer_v2": ["swinv2_tiny_window8_256"],
    "eva": ["eva02_tiny_patch14_224"],
}
GRID = 4  # ViT-like: patches per image side
WINDOWS = 2  # Swin-like: windows per image side at stage 1
SUMMARY_LINE = "Both methods exact on"


# ----------------------------------------------------------------------------------------------------- worker side


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _where(exc: BaseException) -> str:
    """The innermost traceback frame in vitcompress (else the innermost one), as `file:line in function`."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/vitcompress/" in "/" + f.filename.replace("\\", "/").split("/site-packages/")[-1]]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return ""
    path = frame.filename.replace("\\", "/")
    for anchor in ("/src/", "/site-packages/"):
        if anchor in path:
            path = path.split(anchor, 1)[1]
            break
    return f"{path}:{frame.lineno} in {frame.name}"


def _kwargs(module: str, probe: Any, extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Constructor overrides for the small build, read off a meta-device probe of the model; and their summary."""
    if module in SWIN_MODULES:
        heads = tuple(int(stage.blocks[0].attn.num_heads) for stage in probe.layers)[:2]
        # Per-stage (h, w) windows of the first two stages: a model with one window per stage of its own (Swin-S3)
        # must not keep its 4-stage tuple.
        windows = tuple(tuple(int(w) for w in stage.blocks[0].attn.window_size) for stage in probe.layers[:2])
        patch = tuple(int(p) for p in probe.patch_embed.patch_size)
        img = (patch[0] * windows[0][0] * WINDOWS, patch[1] * windows[0][1] * WINDOWS)
        kw = {"depths": (2, 2), "num_heads": heads, "window_size": windows, "img_size": img}
        shown = _size(windows[0]) if windows[0] == windows[1] else " and ".join(_size(w) for w in windows)
        return kw, f"depths=(2, 2), num_heads={heads}, window {shown}, img {_size(img)}"
    patch = tuple(int(p) for p in probe.patch_embed.patch_size)
    img = (patch[0] * GRID, patch[1] * GRID)
    extra = extra or {}
    shown = "".join(f", {k}={v}" for k, v in extra.items())
    return {"depth": 2, **extra, "img_size": img}, f"depth=2{shown}, img {_size(img)}"


def _per_block_kwargs(name: str) -> dict[str, Any]:
    """Per-block constructor sequences cut to 2 blocks, read off the full model (sapiens2: `num_kv_heads`, with
    full attention at the ends and grouped-query in between: keep the first block and the first that differs)."""
    blocks = list(_build(name, {}, meta=True).blocks)
    kv = [getattr(b.attn, "num_kv_heads", None) for b in blocks]
    if any(k is not None for k in kv):
        return {"num_kv_heads": (kv[0], next((k for k in kv if k != kv[0]), kv[-1]))}
    return {}


def _size(img: tuple[int, int]) -> str:
    return str(img[0]) if img[0] == img[1] else f"{img[0]}x{img[1]}"


def _build(name: str, kwargs: dict[str, Any], meta: bool) -> Any:
    import timm
    import torch

    if meta:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, **kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def _build_anywhere(name: str, kwargs: dict[str, Any]) -> Any:
    """On the meta device, else (constructors that compute on real tensors) on the CPU."""
    try:
        return _build(name, kwargs, meta=True)
    except Exception:  # noqa: BLE001
        return _build(name, kwargs, meta=False)


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize_masks(masked: Any, seed: int) -> None:
    """Seeded mask values in [-0.5, 1.5), as a search might leave them (the tests' `randomize_masks`)."""
    import torch

    try:
        from vitcompress.slim.attach import mask_tensors

        tensors = [t for ts in mask_tensors(masked).values() for t in ts]
    except (ImportError, AttributeError):  # moved by a refactoring: mask parameters carry "mask" in their names
        tensors = [p for n, p in masked.named_parameters() if "mask" in n.rsplit(".", 1)[-1]]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.rand(t.shape, generator=gen) * 2 - 0.5)


def _compare(out: Any, ref: Any) -> tuple[str, str]:
    import torch

    try:
        torch.testing.assert_close(out, ref)
    except AssertionError as exc:
        if isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor) and out.shape == ref.shape:
            err = (out - ref).abs().max().item()
            return MISMATCH, f"max abs err {err:.3g} (max |ref| {ref.abs().max().item():.3g})"
        return MISMATCH, _one_line(exc)
    return EXACT, ""


def _check(fn: Any) -> dict[str, str]:
    """Run one check; its outcome as {status, detail, where}."""
    from vitcompress.errors import VitCompressError

    try:
        status, detail = fn()
        return {"status": status, "detail": detail, "where": ""}
    except VitCompressError as exc:
        return {"status": REFUSED, "detail": _one_line(exc), "where": _where(exc)}
    except Exception as exc:  # noqa: BLE001 - every other exception is the finding
        return {"status": RAW, "detail": f"{type(exc).__name__}: {_one_line(exc)}", "where": _where(exc)}


def scan_one(name: str, module: str, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Events for one name: `built` (or `unscanned`), then one `check` per check."""
    import torch

    seed = opts["seed"]
    try:
        start_kw = {} if module in SWIN_MODULES else {"depth": 2}
        extra: dict[str, Any] = {}
        try:
            probe = _build_anywhere(name, start_kw)
        except Exception:  # noqa: BLE001 - per-block sequences (sapiens2) cannot take depth=2 alone
            extra = {} if module in SWIN_MODULES else _per_block_kwargs(name)
            if not extra:
                raise
            probe = _build_anywhere(name, {**start_kw, **extra})
        kwargs, override = _kwargs(module, probe, extra)
        del probe
        note = ""
        try:
            params = _count(_build_anywhere(name, kwargs))
        except Exception as exc:  # noqa: BLE001 - not at this image size: the model's own size then
            kwargs.pop("img_size")
            override = override.rsplit(", img", 1)[0] + ", default img"
            note = f"img_size override refused ({type(exc).__name__}: {_one_line(exc, 120)})"
            params = _count(_build_anywhere(name, kwargs))
    except Exception as exc:  # noqa: BLE001
        yield {"event": "unscanned", "status": NOT_BUILDABLE, "detail": f"{type(exc).__name__}: {_one_line(exc)}"}
        return
    info = {"params": params, "override": override, "note": note}
    if params > opts["max_params"]:
        yield {"event": "unscanned", "status": TOO_BIG, **info,
               "detail": f"more than {opts['max_params'] / 1e6:.0f} M params at this size"}
        return
    try:
        case = _prepare(name, kwargs, seed, torch.float32)
    except Exception as exc:  # noqa: BLE001
        yield {"event": "unscanned", "status": NOT_BUILDABLE, **info,
               "detail": f"timm build/forward: {type(exc).__name__}: {_one_line(exc)}"}
        return
    yield {"event": "built", **info}
    for check, fn in CHECK_FNS.items():
        outcome = _check(lambda fn=fn: fn(*case, seed))
        if outcome["status"] == MISMATCH:
            outcome["detail"] += "; " + _float64_rerun(name, kwargs, seed, fn)
        yield {"event": "check", "check": check, **outcome}


def _prepare(name: str, kwargs: dict[str, Any], seed: int, dtype: Any) -> tuple[Any, Any, Any]:
    """The seeded, perturbed model in eval mode (built in `dtype`), the seeded batch, and the model's output."""
    import torch

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        model = _build(name, kwargs, meta=False).eval()
        gen = torch.Generator().manual_seed(seed + 2)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        size = tuple(model.patch_embed.img_size)
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
        with torch.no_grad():
            ref = model(x)
    finally:
        torch.set_default_dtype(default)
    return model, x, ref


def _float64_rerun(name: str, kwargs: dict[str, Any], seed: int, fn: Any) -> str:
    """The same check on the model built in float64 (masks and all), to tell float32 round-off from a bug."""
    import torch

    default = torch.get_default_dtype()
    try:
        case = _prepare(name, kwargs, seed, torch.float64)
        torch.set_default_dtype(torch.float64)  # masks and new layers made by the check: float64 too
        status, detail = fn(*case, seed)
    except Exception as exc:  # noqa: BLE001
        return f"float64 rerun failed: {type(exc).__name__}: {_one_line(exc, 120)}"
    finally:
        torch.set_default_dtype(default)
    if status == EXACT:
        return "float64: exact (float32 round-off)"
    return "float64: " + (detail.split(" (")[0] if detail.startswith("max abs err") else detail)


def _check_multiplex(model: Any, x: Any, ref: Any, seed: int) -> tuple[str, str]:
    import torch

    import vitcompress as vc

    student = vc.multiplex(model, vc.MultiplexConfig(share=1)).eval()
    with torch.no_grad():
        return _compare(student(x), ref)


def _check_slim(model: Any, x: Any, ref: Any, seed: int) -> tuple[str, str]:
    import torch

    import vitcompress as vc

    masked = vc.attach_masks(model, vc.SlimConfig(attn=True, mlp=True, tokens=False))
    _randomize_masks(masked, seed)
    masked.eval()
    sel = vc.select(masked, dims={"attn": 0.6, "mlp": 0.6})
    expected_model = vc.binarize(masked, sel).eval()
    small = vc.extract(masked, sel).eval()
    with torch.no_grad():
        expected = expected_model(x)
        status, detail = _compare(small(x), expected)
        if status == EXACT and torch.allclose(expected, ref):
            detail = "the selection left the output unchanged (vacuous)"
    return status, detail


CHECK_FNS = {"multiplex": _check_multiplex, "slim": _check_slim}


def worker_main() -> None:
    """Scan the names sent as JSON lines on stdin; reply with JSON event lines on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a model prints goes to the log, not into the protocol
    sys.stdout = sys.stderr
    import warnings

    warnings.filterwarnings("ignore")
    import timm  # noqa: F401 - import cost paid once, before "ready"
    import torch

    import vitcompress

    torch.set_num_threads(1)

    def send(event: dict[str, Any]) -> None:
        proto.write(json.dumps(event) + "\n")
        proto.flush()

    send({"event": "ready", "vitcompress": str(Path(vitcompress.__file__).resolve())})
    for line in sys.stdin:
        job = json.loads(line)
        print(f"--- {job['name']}", file=sys.stderr, flush=True)
        try:
            for event in scan_one(job["name"], job["module"], job["opts"]):
                send(event)
        except Exception as exc:  # noqa: BLE001 - a bug of this script: report it with the name, carry on
            send({"event": "harness", "detail": f"{type(exc).__name__}: {_one_line(exc)}", "where": _where(exc)})
        send({"event": "done"})


# ----------------------------------------------------------------------------------------------------- parent side


def list_names(modules: list[str], quick: bool) -> list[tuple[str, str]]:
    """(name, module) for every registered architecture of `modules` (--quick: QUICK's, where registered)."""
    import timm

    out = []
    for module in modules:
        names = timm.list_models(module=module)
        if quick:
            picked = [n for n in QUICK.get(module, []) if n in names]
            names = picked or names[:2]
        out += [(n, module) for n in names]
    return out


def module_of(name: str) -> str:
    from timm.models import get_arch_name, is_model
    from timm.models._registry import _model_to_module

    if not is_model(name):
        raise SystemExit(f"{name!r} is not a timm architecture name")
    return _model_to_module[get_arch_name(name)]


class Worker:
    """One `--worker` subprocess; restarted by its slot after a timeout or a crash."""

    def __init__(self, slot: int, log_dir: Path, pythonpath: Path) -> None:
        self.log = log_dir / f"worker{slot}.log"
        path = os.pathsep.join(p for p in (str(pythonpath), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": path}
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()  # filled by a reader thread: reads never block the slot
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of file: the worker exited

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The worker's next event, or None when it sends none within `timeout` seconds or exits."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(end - time.monotonic(), 0.001))
            except queue.Empty:
                return None
            if line is None:
                self.lines.put(None)
                return None
            try:
                return json.loads(line)
            except json.JSONDecodeError:  # not ours; keep reading
                continue

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()

    def log_tail(self, chars: int = 400) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        last = text.rsplit("--- ", 1)[-1].splitlines()[1:]  # what the current name wrote
        return " ".join(" ".join(last).split())[-chars:]


def new_result(name: str, module: str) -> dict[str, Any]:
    return {"name": name, "module": module, "params": None, "override": "", "note": "", "seconds": 0.0,
            **{c: None for c in CHECKS}}


def apply_event(result: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event["event"]
    for key in ("params", "override", "note"):
        if key in event:
            result[key] = event[key]
    if kind == "unscanned":
        for c in CHECKS:
            result[c] = {"status": event["status"], "detail": event["detail"], "where": ""}
    elif kind == "check":
        result[event["check"]] = {k: event[k] for k in ("status", "detail", "where")}
    elif kind == "harness":
        fill(result, RAW, f"zoo_coverage harness: {event['detail']}", event.get("where", ""))


def fill(result: dict[str, Any], status: str, detail: str, where: str = "") -> None:
    """Give every check without an outcome yet this one."""
    for c in CHECKS:
        if result[c] is None:
            result[c] = {"status": status, "detail": detail, "where": where}


def run_slot(slot: int, jobs: queue.Queue, results: list[dict[str, Any]], args: argparse.Namespace,
             log_dir: Path, progress: dict[str, Any]) -> None:
    opts = {"seed": args.seed, "max_params": args.max_params}
    worker: Worker | None = None
    while True:
        try:
            name, module = jobs.get_nowait()
        except queue.Empty:
            break
        result = new_result(name, module)
        start = time.perf_counter()
        for attempt in range(2):  # a worker that dies before "ready" gets one more try
            if worker is None or not worker.alive():
                worker = Worker(slot, log_dir, args.snapshot)
                ready = worker.next_event(args.timeout + 120)
                if ready is not None and not ready.get("vitcompress", "").startswith(str(args.snapshot)):
                    print(f"error: a worker imported {ready.get('vitcompress')}, not the copy under {args.snapshot}",
                          file=sys.stderr, flush=True)
                    os._exit(2)  # a setup problem, not a finding: stop the whole scan
                if ready is None or ready.get("event") != "ready":
                    tail = worker.log_tail()
                    worker.kill()
                    worker = None
                    if attempt == 1:
                        fill(result, RAW, f"worker did not start: {tail}")
                    continue
            break
        if worker is not None:
            worker.proc.stdin.write(json.dumps({"name": name, "module": module, "opts": opts}) + "\n")
            worker.proc.stdin.flush()
            deadline = time.monotonic() + args.timeout
            while True:
                event = worker.next_event(deadline - time.monotonic())
                if event is None:  # timed out or died
                    if worker.alive():
                        worker.kill()
                        fill(result, TIMEOUT, f"no result within {args.timeout:.0f} s")
                    else:
                        rc = worker.proc.wait()
                        fill(result, RAW, f"worker died (exit code {rc}): {worker.log_tail()}")
                    worker = None
                    break
                if event["event"] == "done":
                    break
                apply_event(result, event)
            fill(result, RAW, "no outcome reported")
        result["seconds"] = round(time.perf_counter() - start, 2)
        with progress["lock"]:
            results.append(result)
            progress["done"] += 1
            print(f"[{progress['done']}/{progress['total']}] {name}: multiplex={result['multiplex']['status']} "
                  f"slim={result['slim']['status']} ({result['seconds']:.1f} s)", flush=True)
    if worker is not None:
        worker.proc.stdin.close()
        try:
            worker.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def scan(names: list[tuple[str, str]], args: argparse.Namespace) -> list[dict[str, Any]]:
    jobs: queue.Queue = queue.Queue()
    for item in names:
        jobs.put(item)
    results: list[dict[str, Any]] = []
    progress = {"lock": threading.Lock(), "done": 0, "total": len(names)}
    with tempfile.TemporaryDirectory(prefix="zoo-coverage-") as log_dir:
        args.snapshot = snapshot(Path(log_dir).resolve() / "src")
        args.snapshot_digest = source_digest(args.snapshot / "vitcompress")
        threads = [threading.Thread(target=run_slot, args=(s, jobs, results, args, Path(log_dir), progress))
                   for s in range(max(1, min(args.jobs, len(names))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    order = {item: i for i, item in enumerate(names)}
    return sorted(results, key=lambda r: order[(r["name"], r["module"])])


# ----------------------------------------------------------------------------------------------------- the report


def status_of(result: dict[str, Any], check: str) -> str:
    return result[check]["status"]


def scanned(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if status_of(r, "multiplex") not in UNSCANNED]


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per module (and "all"): how many names fall in each category."""
    out: dict[str, dict[str, int]] = {}
    modules = list(dict.fromkeys(r["module"] for r in results))
    for module in [*modules, "all"]:
        rs = [r for r in results if module in ("all", r["module"])]
        ok = scanned(rs)
        exact = {c: {r["name"] for r in ok if status_of(r, c) == EXACT} for c in CHECKS}
        statuses = Counter(s for r in ok for s in {status_of(r, c) for c in CHECKS})
        out[module] = {
            "names": len(rs),
            "buildable": len(ok),
            "both exact": sum(1 for r in ok if r["name"] in exact["multiplex"] and r["name"] in exact["slim"]),
            "multiplex only": sum(1 for r in ok if r["name"] in exact["multiplex"] and r["name"] not in exact["slim"]),
            "slim only": sum(1 for r in ok if r["name"] in exact["slim"] and r["name"] not in exact["multiplex"]),
            "neither": sum(1 for r in ok if r["name"] not in exact["multiplex"] and r["name"] not in exact["slim"]),
            "with raw error": statuses[RAW],
            "with mismatch": statuses[MISMATCH],
            "with timeout": statuses[TIMEOUT],
            "not buildable": sum(1 for r in rs if status_of(r, "multiplex") == NOT_BUILDABLE),
            "too big": sum(1 for r in rs if status_of(r, "multiplex") == TOO_BIG),
        }
    return out


def overall_line(summary: dict[str, dict[str, int]]) -> str:
    s = summary["all"]
    share = 100.0 * s["both exact"] / s["buildable"] if s["buildable"] else 0.0
    return (f"{SUMMARY_LINE} {share:.1f}% of the buildable names ({s['both exact']} of {s['buildable']}; "
            f"{s['not buildable']} not buildable and {s['too big']} too big left out).")


def round_off_line(results: list[dict[str, Any]]) -> str:
    """The share when a float32 mismatch that is exact in float64 (round-off) counts as exact."""
    ok = lambda c: c["status"] == EXACT or (c["status"] == MISMATCH and "float64: exact" in c["detail"])
    rs = scanned(results)
    both = sum(1 for r in rs if all(ok(r[c]) for c in CHECKS))
    share = 100.0 * both / len(rs) if rs else 0.0
    return (f"Counting a float32 mismatch that is exact in float64 (round-off) as exact: {share:.1f}% "
            f"({both} of {len(rs)}).")


def grouped(results: list[dict[str, Any]], status: str) -> list[tuple[str, str, list[str]]]:
    """(example message, where, [name (check), ...]) per distinct message of `status`, digits folded together."""
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for r in results:
        checks = [c for c in CHECKS if status_of(r, c) == status]
        if status in UNSCANNED:
            checks = checks[:1]
        for c in checks:
            detail, where = r[c]["detail"], r[c]["where"]
            key = re.sub(r"\d+", "N", detail) + "@" + re.sub(r":\d+ ", ":N ", where)
            groups[key].append((detail, where, r["name"] if status in UNSCANNED else f"{r['name']} ({c})"))
    out = []
    for items in groups.values():
        checks: dict[str, list[str]] = defaultdict(list)  # name -> its checks in this group, in order
        for *_, label in items:
            name, _, check = label.partition(" (")
            checks[name].append(check.rstrip(")"))
        labels = [n if not cs[0] else f"{n} ({'both' if len(cs) == len(CHECKS) else cs[0]})"
                  for n, cs in checks.items()]
        out.append((items[0][0], items[0][1], labels))
    return sorted(out, key=lambda g: -len(g[2]))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _outcome(check: dict[str, str]) -> str:
    if check["status"] == MISMATCH and check["detail"].startswith("max abs err"):
        return f"mismatch {check['detail'].split()[3]}"
    return check["status"]


def _groups_md(groups: list[tuple[str, str, list[str]]]) -> list[str]:
    if not groups:
        return ["(none)", ""]
    lines = []
    for detail, where, names in groups:
        at = f" — at `{where}`" if where else ""
        lines += [f"- **{len(names)}×** `{_cell(detail)}`{at}", f"  - {', '.join(names)}"]
    return [*lines, ""]


def render(results: list[dict[str, Any]], args: argparse.Namespace, command: str, total_s: float) -> str:
    summary = summarize(results)
    rows = [{"module": m, **s} for m, s in summary.items()]
    mismatches = [f"- {r['name']} ({c}): {r[c]['detail']}" for r in results for c in CHECKS
                  if status_of(r, c) == MISMATCH]
    title = "# Zoo coverage of timm ViT, DeiT, Swin and EVA names" + (
        " — QUICK SMOKE RUN, not a result" if args.quick else "")
    lines = [
        title,
        "",
        "Written by `benchmarks/zoo_coverage.py` (issue 9); rerun it to refresh, never edit by hand:",
        "",
        "```bash",
        command,
        "```",
        "",
        _report.machine_markdown(),
        "",
        getattr(args, "sources", "") + ".",
        "",
        f"Modules: {', '.join(f'`{m}`' for m in args.modules)}. Every registered name is built with "
        "`pretrained=False` at depth 2 and a small image (the override is in each row's note: ViT-like "
        f"`depth=2` and {GRID} patches a side; Swin-like `depths=(2, 2)` with the first two stages' heads, the "
        f"model's window and {WINDOWS} windows a side at stage 1), its parameters perturbed by seeded noise "
        "(σ 0.05). Two checks on a seeded batch of 2 in eval mode, each compared with `torch.testing.assert_close` "
        "(float32 defaults): **multiplex** `vc.multiplex(m, MultiplexConfig(share=1))` against `m`; **slim** "
        "`vc.attach_masks(m, SlimConfig(attn=True, mlp=True))` with seeded random mask values in [-0.5, 1.5), "
        "`vc.select(masked, dims={'attn': 0.6, 'mlp': 0.6})`, then `vc.extract` against `vc.binarize` of that "
        "selection. Outcomes: `exact`, `mismatch` (max abs error), `refused` (a `VitCompressError`), `raw error` "
        f"(any other exception: a bug), `timeout` (no result within {args.timeout:.0f} s). Names timm cannot build "
        f"or run at that size (`not buildable`) and names above {args.max_params / 1e6:.0f} M parameters at that "
        "size (`too big`, counted on the meta device) are left out of the denominator.",
        "",
        f"**{overall_line(summary)}**",
        "",
        round_off_line(results),
        "",
        "## Summary per module",
        "",
        "`buildable` = names scanned; `both exact` + `multiplex only` + `slim only` + `neither` = `buildable`; the "
        "`with ...` columns count names with that outcome in at least one check.",
        "",
        md_table(rows),
        "",
        "## Raw errors (bugs), grouped by message",
        "",
        *_groups_md(grouped(results, RAW)),
        "## Mismatches",
        "",
        "Each mismatch is rerun with the model, batch, masks and new layers in float64: `float64: exact` means "
        "the float32 difference is round-off (a different but equivalent order of operations), anything else is "
        "a bug.",
        "",
        *(mismatches or ["(none)"]),
        "",
        "## Refusals, grouped by message",
        "",
        *_groups_md(grouped(results, REFUSED)),
        "## Timeouts",
        "",
        *_groups_md(grouped(results, TIMEOUT)),
        "## Not buildable and too big",
        "",
        *_groups_md(grouped(results, NOT_BUILDABLE) + grouped(results, TOO_BIG)),
        "## Per name",
        "",
        md_table([{
            "name": r["name"],
            "module": r["module"],
            "params at depth 2 (M)": "—" if r["params"] is None else f"{r['params'] / 1e6:.2f}",
            "multiplex": _outcome(r["multiplex"]),
            "slim": _outcome(r["slim"]),
            "note": "; ".join(x for x in (r["override"], r["note"], *_notes(r)) if x),
        } for r in results]),
        "",
        f"This scan of {len(results)} names took {total_s / 60:.1f} min with {args.jobs} worker(s) "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}).",
    ]
    return "\n".join(lines) + "\n"


def _notes(r: dict[str, Any]) -> list[str]:
    if status_of(r, "multiplex") in UNSCANNED:
        return [r["multiplex"]["detail"]]
    out: dict[str, list[str]] = {}  # detail -> the checks that gave it
    for c in CHECKS:
        check = r[c]
        if check["status"] == EXACT and not check["detail"]:
            continue
        if check["status"] == MISMATCH and check["detail"].startswith("max abs err"):
            continue  # the cell says it
        out.setdefault(check["detail"][:160], []).append(c)
    return [f"{'both' if len(cs) == len(CHECKS) else cs[0]}: {d}" for d, cs in out.items()]


def print_summary(results: list[dict[str, Any]], total_s: float) -> None:
    summary = summarize(results)
    keys = list(summary["all"])
    width = max(len(m) for m in summary)
    print("\n" + " " * width + "  " + "  ".join(keys))
    for module, s in summary.items():
        print(f"{module:<{width}}  " + "  ".join(f"{s[k]:>{len(k)}}" for k in keys))
    print(overall_line(summary))
    print(round_off_line(results))
    print(f"{len(results)} names in {total_s / 60:.1f} min", flush=True)


def package_dir() -> Path:
    """Where the installed (or editable) vitcompress package lives, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("vitcompress")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("vitcompress is not installed: pip install -e .")
    return Path(list(spec.submodule_search_locations)[0])


def snapshot(dest: Path) -> Path:
    """Copy the vitcompress sources to `dest`/vitcompress; workers import that copy, so edits to the tree while
    the scan runs (work in progress elsewhere) cannot mix two versions of the library into one scan."""
    import shutil

    shutil.copytree(package_dir(), dest / "vitcompress", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def source_digest(root: Path) -> tuple[str, str]:
    """A digest of the .py files under `root` and the newest one's modification time."""
    import hashlib

    digest, newest = hashlib.sha1(), 0.0
    for path in sorted(root.rglob("*.py")):
        digest.update(path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    stamp = datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return digest.hexdigest()[:12], stamp


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a handful of names per module: smoke-tests the script")
    p.add_argument("--modules", nargs="+", choices=MODULES, default=list(MODULES), help="timm modules to scan")
    p.add_argument("--names", nargs="+", help="scan just these architecture names (their modules are looked up)")
    p.add_argument("--out", type=Path, help="Markdown report (default: docs/zoo.md; --quick: out/zoo-quick/zoo.md)")
    p.add_argument("--json", type=Path, help="also write the per-name results as JSON here")
    p.add_argument("--jobs", type=int, default=_report.usable_cores(), help="worker processes (default: cores)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per name before it is a timeout")
    p.add_argument("--max-params", type=float, default=120e6, help="skip names above this many params at depth 2")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the noise, the masks and the batch")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out or (Path("out/zoo-quick/zoo.md") if args.quick else Path("docs/zoo.md"))
    return args


def main(argv: list[str] | None = None) -> None:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    if args.worker:
        worker_main()
        return
    start = time.perf_counter()
    command = shlex.join(["python", "benchmarks/zoo_coverage.py", *raw])
    if args.names:
        names = [(n, module_of(n)) for n in args.names]
        args.modules = list(dict.fromkeys(m for _, m in names))
    else:
        names = list_names(args.modules, args.quick)
    print(f"scanning {len(names)} names with {args.jobs} worker(s), timeout {args.timeout:.0f} s", flush=True)
    results = scan(names, args)
    total_s = time.perf_counter() - start
    used, now = args.snapshot_digest, source_digest(package_dir())
    args.sources = (f"Scanned a copy of the vitcompress sources taken at the start: digest {used[0]}, newest file "
                    f"{used[1]}")
    if now != used:
        args.sources += f" (the tree has changed since: now {now[0]}, newest file {now[1]})"
        print(f"note: the vitcompress sources changed while the scan ran; it used the copy {used[0]} taken at "
              "the start", flush=True)
    write_atomic(args.out, render(results, args, command, total_s))
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=1) + "\n")
    print_summary(results, total_s)
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
