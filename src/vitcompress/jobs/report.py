"""`vitcompress report RUN_DIR`: the figures and per-layer structure of a finished run, added to its report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from vitcompress.cli_args import Arg
from vitcompress.report.run import render_run


def report_job(run: Annotated[str, Arg(positional=True, metavar="RUN_DIR")]) -> list[str]:
    """Draw a run's figures (losses and accuracy per epoch; for a search, mask histograms and kept widths per
    layer at each budget; for an extracted model, its widths per layer) and add them to its report.md.

    Args:
        run: The output directory of a vitcompress job (train, multiplex, slim search/extract, finetune).
    """
    written = render_run(run)
    return [str(p) for p in written] or [str(Path(run) / "report.md")]
