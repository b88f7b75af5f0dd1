"""The zoo scan (benchmarks/zoo_coverage.py) runs end to end in --quick mode and writes a well-formed table.

Structure only: every scanned name has one row with a valid outcome for both checks, and the summary line is
there. Coverage numbers are the scan's result, not something a test asserts.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_coverage.py"


def load_script():
    spec = importlib.util.spec_from_file_location("zoo_coverage", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(text: str, heading: str) -> list[dict[str, str]]:
    """The Markdown table under `heading`, as dicts keyed by its header cells."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    block = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        block.append(ln)
    split = lambda ln: [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]
    header = split(block[0])
    assert set(block[1]) <= set("|-: ")
    return [dict(zip(header, split(ln), strict=True)) for ln in block[2:]]


@pytest.mark.slow
def test_quick_scan_writes_one_valid_row_per_name(tmp_path):
    zoo = load_script()
    out, results_json = tmp_path / "zoo.md", tmp_path / "zoo.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--json", str(results_json), "--jobs", "2"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = out.read_text()
    assert zoo.SUMMARY_LINE in text and zoo.SUMMARY_LINE in result.stdout
    assert "python benchmarks/zoo_coverage.py --quick" in text and "timm" in text and "torch" in text

    import timm

    expected = zoo.list_names(list(zoo.MODULES), quick=True)
    assert {m for _, m in expected} == set(zoo.MODULES)
    rows = table_rows(text, "## Per name")
    assert sorted((r["name"], r["module"]) for r in rows) == sorted(expected)  # one row per name, no more
    status = re.compile("^(" + "|".join(map(re.escape, zoo.STATUSES)) + r")( \S+)?$")
    for row in rows:
        for check in zoo.CHECKS:
            assert status.match(row[check]), (row["name"], check, row[check])
        assert timm.is_model(row["name"])

    summary = table_rows(text, "## Summary per module")
    assert [r["module"] for r in summary] == [*zoo.MODULES, "all"]
    for r in summary:
        parts = sum(int(r[k]) for k in ("both exact", "multiplex only", "slim only", "neither"))
        assert parts == int(r["buildable"])
        assert int(r["buildable"]) + int(r["not buildable"]) + int(r["too big"]) == int(r["names"])


def test_grouping_folds_numbers_and_counts_each_check():
    zoo = load_script()
    r = lambda name, a, b: {"name": name, "module": "vision_transformer", "params": 1, "override": "", "note": "",
                            "multiplex": a, "slim": b}
    raw = lambda msg: {"status": zoo.RAW, "detail": msg, "where": "vitcompress/x.py:3 in f"}
    exact = {"status": zoo.EXACT, "detail": "", "where": ""}
    results = [r("a", raw("RuntimeError: size 192 vs 384"), exact), r("b", raw("RuntimeError: size 96 vs 8"),
                                                                      raw("KeyError: 'x'"))]
    groups = zoo.grouped(results, zoo.RAW)
    assert [names for _, _, names in groups] == [["a (multiplex)", "b (multiplex)"], ["b (slim)"]]
    summary = zoo.summarize(results)["all"]
    assert summary["slim only"] == 1 and summary["neither"] == 1 and summary["with raw error"] == 2
