"""Plain-text tables for reports and the terminal (Markdown, so they paste into READMEs and BENCHMARKS.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or rows[0].keys())
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(value: Any) -> str:
    if value is None:  # not measured (e.g. the accuracy of a curve point that keeps nothing)
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def model_row(name: str, params: int, macs: int, metrics: dict[str, float], latency_ms: float | None = None) -> dict:
    """One row of a teacher-vs-student table, with units in the column names."""
    row = {
        "model": name,
        "params (M)": params / 1e6,
        "MACs (M)": macs / 1e6,
        "top-1 (%)": metrics.get("top1", float("nan")),
        "top-5 (%)": metrics.get("top5", float("nan")),
    }
    if latency_ms is not None:
        row["CPU latency (ms)"] = latency_ms
    return row


def write_report(out_dir: str | Path, report: dict[str, Any], title: str, tables: dict[str, str]) -> None:
    """Write `report.json` and `report.md` atomically (a crash never leaves half a report)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    for heading, table in tables.items():
        md += [f"## {heading}", "", table, ""]
    from vitcompress.export.io import atomic_write  # deferred: export imports torch; these tables need not

    for name, text in (("report.json", json.dumps(report, indent=2, default=str)), ("report.md", "\n".join(md))):
        atomic_write(out_dir / name, lambda tmp, text=text: tmp.write_text(text))
