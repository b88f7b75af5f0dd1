"""Run records: `metrics.jsonl` (every logged step and epoch), `metrics.csv` (epochs) and `History`."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

JSONL_FILE = "metrics.jsonl"
CSV_FILE = "metrics.csv"


@dataclasses.dataclass
class History:
    """What `fit` returns: one record per epoch, resumed epochs included.

    Each record holds `kind="epoch"`, `epoch` (0-based), `step` (optimizer updates so far), `lr`, `loss`, the
    objective's components, `epoch_time_s`, and on evaluated epochs `val_<metric>` (and `val_ema_<metric>`
    with EMA on).

    Attributes:
        records: Per-epoch records, oldest first.
        ema_model: The EMA copy of the model when `TrainConfig.ema_decay` is set, else None.
    """

    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ema_model: nn.Module | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def series(self, key: str) -> list[Any]:
        """Values of `key` over the epochs that have it (e.g. `series("val_top1")`)."""
        return [r[key] for r in self.records if key in r]



class MetricsLogger:
    """Writes records under `out_dir`; does nothing when `out_dir` is None (non-main ranks pass None).

    Args:
        out_dir: Run directory.
        resume_step: When resuming, drop records logged after this step (the tail of an interrupted epoch
            that the resumed run will log again); None starts both files afresh.
    """

    def __init__(self, out_dir: Path | None, resume_step: int | None = None) -> None:
        self.jsonl = out_dir / JSONL_FILE if out_dir is not None else None
        self.csv = out_dir / CSV_FILE if out_dir is not None else None
        if self.jsonl is None:
            return
        kept = _read_jsonl(self.jsonl, resume_step) if resume_step is not None else []
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl."""
        if self.jsonl is not None:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")

    def write_csv(self, records: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from the epoch records; columns are the union of their keys."""
        if self.csv is None:
            return
        # Rewritten whole because columns can appear later (val metrics only on evaluated epochs).
        columns = list(dict.fromkeys(k for r in records for k in r))
        tmp = self.csv.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(records)
        tmp.replace(self.csv)


def _read_jsonl(path: Path, max_step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the interruption
            continue
        if isinstance(record, dict) and record.get("step", 0) <= max_step:
            kept.append(record)
    return kept
