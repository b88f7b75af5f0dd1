"""Stopping a run cleanly on SIGTERM / SIGINT (preemption, `kill`, Ctrl-C): checkpoint, then exit in one line.

The handler only sets a flag; the loop reads it between optimizer steps, where the state is consistent, writes a
checkpoint and raises `TrainingInterrupted`. A second signal while the checkpoint is being written is ignored
rather than leaving a half-written directory (the write is atomic anyway).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from vitcompress.errors import VitCompressError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(VitCompressError):
    """Raised by `fit` after it checkpointed a run that was asked to stop by a signal.

    Attributes:
        signum: The signal that stopped the run.
        exit_code: What a command line should exit with (128 + signal number, the shell convention).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopFlag:
    """Set by the signal handlers while `catch_signals` is active."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def set(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def catch_signals() -> Iterator[StopFlag]:
    """Route SIGTERM and SIGINT to a `StopFlag` for the duration; the previous handlers come back after.

    Outside the main thread (where Python cannot install handlers) the flag simply never gets set.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame) -> None:
        if flag.signum is None:
            flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
