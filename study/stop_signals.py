"""SIGINT and SIGTERM stop a study cleanly: the running phase ends gracefully and the study says so.

Ray Tune ends a run gracefully on SIGINT or SIGUSR1 (it saves the experiment state and stops the trials,
which resume with ``Tuner.restore``), but then returns as if the run had finished, and it ignores SIGTERM,
which is what ``kill`` and ``ray job stop`` send. :class:`StopSignals` owns both signals for the study's
lifetime: the first records which signal came and asks Tune's running loop (if any) to end through its
SIGUSR1 handler; a second one raises :class:`KeyboardInterrupt` at once. The study checks
:attr:`StopSignals.received` between its phases and reports the interruption (exit 128 + signal number).
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)
TUNE_STOP = getattr(signal, "SIGUSR1", None)
"""The signal whose handler Tune installs (and keeps) while it runs: calling it ends Tune's loop gracefully."""


TUNE_STOP_NOTES = ("Stop signal received", "Experiment has been interrupted")
"""The starts of the two warnings Ray Tune logs when a signal ends its run: that it is stopping, and that the
experiment resumes with ``Tuner.restore(...)``."""


class DropTuneStopNotes(logging.Filter):
    """Drops Tune's two stop warnings (:data:`TUNE_STOP_NOTES`) from its ``ray.tune.tune`` logger: the study says
    itself that it was interrupted, which trials it cut and the command that resumes it; Tune's advice to call
    ``Tuner.restore`` does not apply to a study. Installed only without ``--verbose``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TUNE_STOP_NOTES)


class StudyInterrupted(Exception):
    """The study was stopped by ``signal_number``; what finished is kept and the same command continues it."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        """The shell's convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signal_number


class StopSignals:
    """A context manager owning SIGINT and SIGTERM (main thread only); restores the old handlers on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._tune_env: str | None = None

    def __enter__(self) -> "StopSignals":
        # Tune would otherwise replace our SIGINT handler while a phase runs, and swallow the signal.
        self._tune_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for number in HANDLED:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def reclaim(self) -> None:
        """Take the signals back after ``ray.init``, whose core worker installs a native SIGTERM handler that
        prints a stack and kills the process (no clean stop, runs left RUNNING)."""
        for number in HANDLED:
            signal.signal(number, self._handle)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        if self._tune_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_env

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # a second signal: stop now, without waiting for the trials
        self.received = number
        tune_handler = signal.getsignal(TUNE_STOP) if TUNE_STOP is not None else None
        if callable(tune_handler):
            tune_handler(number, frame)  # ends a running Tune loop; a no-op between phases

    def check(self) -> None:
        """Raise :class:`StudyInterrupted` if a stop signal has come."""
        if self.received is not None:
            raise StudyInterrupted(self.received)
