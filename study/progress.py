"""What a person watching a study sees: one line per trial start and end, and one status line.

The status line counts the trials done / running / pending per group, the best figure so far (the validation
error in the search, the test error of the final retraining), the measured throughput and an ETA for the whole
study. On a terminal it is redrawn in place; elsewhere (a log file, ``ray job logs --follow``) it is printed as
a line of its own every ``interval_s`` seconds, so a log reader sees the same progress.

A trial that the end of the phase cut short (the study was interrupted, or stopped on an error) ends by Tune's
clean-up, without an event of its own: when the phase ends, each trial seen starting and never seen ending gets an
"interrupted" end line, and the last status line counts it as interrupted, not done. A trial that fails and is
restarted from its last checkpoint (the study's failure policy) gets a "fault" line naming the error.

The ETA is measured, not assumed: the engine iterations the trials trained while this driver watched, over the
wall time from the first trial's start to the last report (start-up, evaluation and idle time included), applied
to the iterations still planned -- every pending trial at its full budget, the running ones' rest, the final
retraining of every group -- less the time since that last report. Early stopping can only make the study end
sooner than that.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

SEARCH, FINAL = "search", "final"
PHASE_METRIC = {SEARCH: "val_error", FINAL: "test_error"}
"""The figure a phase's status line calls best: the search's objective, then the final runs' test error."""
PHASE_METRIC_LABEL = {SEARCH: "val", FINAL: "test"}
TERMINAL_REFRESH_S = 1.0
"""How often the status line is redrawn in place on a terminal."""
LOG_INTERVAL_S = 30.0
"""How often the status line is printed as a line of its own where the output is not a terminal."""
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Warning|Exit|Interrupt)\b.*:")
"""A traceback's line that names an exception (``ray.exceptions.ActorDiedError: The actor died ...``)."""
FINISHED = (Trial.TERMINATED, Trial.ERROR)
"""Tune's states of a trial that has ended (completed, stopped early or failed)."""


@dataclass(frozen=True)
class StudyPlan:
    """The trials a study will run: per group ``trials_per_group`` in the search, ``final_seeds`` in the final
    retraining, each at most ``iterations`` engine iterations; ``costs`` weighs an iteration of each group (its
    network's multiply-adds, else its depth: :func:`study.runner.iteration_cost`), so that the ETA of a study that
    measured only its shallow groups so far is not their speed applied to the deep ones."""

    groups: tuple[str, ...]
    trials_per_group: int
    final_seeds: int
    iterations: int
    costs: tuple[float, ...] = ()

    def cost(self, group: str) -> float:
        """The relative work of one iteration of ``group`` (1 where no costs are given)."""
        return self.costs[self.groups.index(group)] if self.costs and group in self.groups else 1.0

    def trials(self, phase: str) -> int:
        """Trials of one group in ``phase``."""
        return self.trials_per_group if phase == SEARCH else self.final_seeds

    @property
    def total_trials(self) -> int:
        return len(self.groups) * (self.trials_per_group + self.final_seeds)

    def work_after(self, phase: str) -> float:
        """The weighted iterations of the phases after ``phase`` (the final retraining, after the search)."""
        if phase != SEARCH:
            return 0.0
        return sum(self.final_seeds * self.iterations * self.cost(group) for group in self.groups)


def trial_group(config: Mapping[str, Any]) -> str:
    """The group of a trial from its Tune config (a final trial carries it under ``final``)."""
    return str(config.get("group") or config.get("final", {}).get("group", "?"))


def by_group(trials: Sequence[Trial]) -> dict[str, list[Trial]]:
    """``trials`` by their group, in Tune's order (its order of creation)."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial_group(trial.config), []).append(trial)
    return groups


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 05 min``: how long, to the precision a person waiting needs."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def error_reason(trial: Trial) -> str:
    """The last line of a failed trial's error that names an exception (else its last line), as Tune recorded it.
    Tune writes the error next to the trial in this process first and copies it to the run's storage later, after the
    callbacks ran: the local copy is read first."""
    local = getattr(trial, "local_path", None)
    name = getattr(getattr(trial, "run_metadata", None), "error_filename", None)
    text = ""
    if local and name:
        with contextlib.suppress(OSError):
            text = (Path(local) / name).read_text()
    if not text.strip():
        try:
            error = trial.get_pickled_error() or trial.get_error()
        except Exception:  # noqa: BLE001 - an unreadable error file must not stop the study's console
            error = None
        text = str(error or "no error recorded")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    named = [line for line in lines if EXCEPTION_LINE.match(line)]  # Ray adds lines of its own after some errors
    return (named or lines or ["no error recorded"])[-1][:200]


class ConsoleProgress(Callback):
    """A Tune callback that prints a phase's trial lines and the study's status line (in the study's driver).

    ``describe`` maps a trial's Tune config to its name (group and values, as the MLflow run is named). The final
    phase's status line counts the search's trials before its own. Nothing here is kept across a resume:
    every count is read from Tune's trials at each event, and the throughput is measured anew.
    """

    def __init__(self, plan: StudyPlan, phase: str, describe: Callable[[dict[str, Any]], tuple[str, Any]], *,
                 stream: TextIO | None = None, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.phase = phase
        self.describe = describe
        self._stream = stream
        self._interval_s = interval_s
        self.clock = clock
        self._runtime()

    def _runtime(self) -> None:
        self.stream: TextIO = self._stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = self._interval_s or (TERMINAL_REFRESH_S if self.live else LOG_INTERVAL_S)
        self.started: dict[str, float] = {}  # trial id -> when this driver saw it start
        self.ended: set[str] = set()  # trials whose end (completed, stopped early, failed) this driver saw
        self.cut: set[str] = set()  # trials the end of the phase cut short (filled when it ends)
        self.names: dict[str, str] = {}
        self.first_iteration: dict[str, int] = {}  # trial id -> its iteration when first seen (a resumed trial's)
        self.iteration: dict[str, int] = {}
        self.watching_since: float | None = None
        self.last_report: float | None = None  # when the last iteration count came in
        self.last_status = -math.inf
        self.shown = ""  # the status line now on the terminal

    def __getstate__(self) -> dict[str, Any]:
        keep = ("plan", "phase", "describe", "_interval_s", "clock")
        return {key: self.__dict__[key] for key in keep} | {"_stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime()

    # ------------------------------------------------------------- Tune events
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        now = self.clock()
        self.watching_since = now if self.watching_since is None else self.watching_since
        self.started[trial.trial_id] = now
        self.first_iteration.setdefault(trial.trial_id, self._reached(trial))
        same_group = [t.trial_id for t in by_group(trials).get(trial_group(trial.config), [])]
        number = same_group.index(trial.trial_id) + 1 if trial.trial_id in same_group else len(same_group) + 1
        resumed = self._reached(trial)
        notes = [f"trial {number} of {self.plan.trials(self.phase)}"] if self.phase == SEARCH else []
        notes += [f"from iteration {resumed:,}"] if resumed else []
        self._line(f"start {self._name(trial)}" + (f"  ({', '.join(notes)})" if notes else ""), trials)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if "iteration" in result:
            self.first_iteration.setdefault(trial.trial_id, int(result["iteration"]))
            self.iteration[trial.trial_id] = int(result["iteration"])
            self.last_report = self.clock()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        result = trial.last_result or {}
        reached = self._reached(trial)
        metric = PHASE_METRIC[self.phase]
        value = result.get(metric)
        figure = f", {PHASE_METRIC_LABEL[self.phase]} error {value:.1f}%" if value is not None else ""
        outcome = "completed" if reached >= self.plan.iterations else "stopped early"
        self.ended.add(trial.trial_id)
        self._line(f"end   {self._name(trial)}: {outcome} at {reached:,}/{self.plan.iterations:,} iterations{figure}, "
                   f"{self._age(trial)}", trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.ended.add(trial.trial_id)
        self._line(f"end   {self._name(trial)}: FAILED at {self._reached(trial):,}/{self.plan.iterations:,} "
                   f"iterations, {self._age(trial)}: {error_reason(trial)}", trials)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._line(f"fault {self._name(trial)} at {self._reached(trial):,}/{self.plan.iterations:,} iterations, "
                   f"{self._age(trial)}: {error_reason(trial)}; restarting it from its last checkpoint", trials)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.clock() - self.last_status >= self.interval_s:
            self._status(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in trials:
            if trial.trial_id in self.started and trial.trial_id not in self.ended:
                self.cut.add(trial.trial_id)
                self._line(f"end   {self._name(trial)}: interrupted at {self._reached(trial):,}/"
                           f"{self.plan.iterations:,} iterations, {self._age(trial)} (resuming the study continues it)",
                           trials)
        self._status(trials, force_line=True)

    # ------------------------------------------------------------- what is shown
    def status_line(self, trials: Sequence[Trial]) -> str:
        """``search 3/6 done, 2 running, 1 pending | 0.8 it/s, ETA 3 min | resnet20-A 2/3 (1 running) best val
        72.8% | ...``: the phase's counts, the study's ETA (this phase's rest and the later phases), then per group
        (the end of the line is what a narrow terminal cuts)."""
        per_group = self.plan.trials(self.phase)
        total = len(self.plan.groups) * per_group
        done, running, cut = self._counts(trials)
        stopped = f", {cut} interrupted" if cut else ""
        head = f"{self.phase} {done}/{total} done{stopped}, {running} running, {total - done - cut - running} pending"
        searched = len(self.plan.groups) * self.plan.trials_per_group if self.phase == FINAL else 0
        if searched:
            head = f"{searched} search trials done; {head}"
        parts = [head, "no ETA: interrupted" if cut else self._eta(trials)]
        metric = PHASE_METRIC[self.phase]
        grouped = by_group(trials)
        for group in self.plan.groups:
            mine = grouped.get(group, [])
            finished, active, interrupted = self._counts(mine)
            values = [float(t.last_result[metric]) for t in mine if (t.last_result or {}).get(metric) is not None]
            values = [v for v in values if math.isfinite(v)]
            notes = [f"{active} running"] * bool(active) + [f"{interrupted} interrupted"] * bool(interrupted)
            part = f"{group} {finished}/{per_group}" + (f" ({', '.join(notes)})" if notes else "")
            parts.append(part + (f" best {PHASE_METRIC_LABEL[self.phase]} {min(values):.1f}%" if values else ""))
        return " | ".join(parts)

    def _counts(self, trials: Sequence[Trial]) -> tuple[int, int, int]:
        """(finished, running, interrupted) among ``trials``."""
        return (sum(1 for t in trials if t.status in FINISHED and t.trial_id not in self.cut),
                sum(1 for t in trials if t.status == Trial.RUNNING and t.trial_id not in self.cut),
                sum(1 for t in trials if t.trial_id in self.cut))

    def _eta(self, trials: Sequence[Trial]) -> str:
        """Throughput and ETA as of the last report (trials report their iteration at evaluations and checkpoints
        only: measured at "now", the rate would sag between reports), less the time since that report. Work is
        counted in iterations weighted by each group's cost; the rate shown is in plain iterations."""
        if self.watching_since is None or self.last_report is None:
            return "ETA: measuring"
        groups = {t.trial_id: trial_group(t.config) for t in trials}
        done = {t: self.iteration.get(t, first) - first for t, first in self.first_iteration.items()}
        trained = sum(done.values())
        work = sum(count * self.plan.cost(groups.get(t, "")) for t, count in done.items())
        elapsed = self.last_report - self.watching_since
        if trained <= 0 or elapsed <= 0:
            return "ETA: measuring"
        left = self.plan.work_after(self.phase)
        grouped = by_group(trials)
        for group in self.plan.groups:
            mine = grouped.get(group, [])
            unfinished = [t for t in mine if t.status not in FINISHED]
            iterations = sum(max(0, self.plan.iterations - self._reached(t)) for t in unfinished)
            iterations += max(0, self.plan.trials(self.phase) - len(mine)) * self.plan.iterations
            left += iterations * self.plan.cost(group)
        eta = max(0.0, left / (work / elapsed) - (self.clock() - self.last_report))
        return f"{trained / elapsed:.1f} it/s, ETA {format_duration(eta)}"

    def _status(self, trials: Sequence[Trial], force_line: bool = False) -> None:
        self.last_status = self.clock()
        line = f"{time.strftime('%H:%M:%S')} [{self.status_line(trials)}]"
        if self.live and not force_line:
            width = shutil.get_terminal_size((160, 20)).columns
            self.shown = line[: width - 1]
            self.stream.write("\r\x1b[K" + self.shown)
        else:
            self._clear()
            self.stream.write(line + "\n")
        self.stream.flush()

    def _line(self, text: str, trials: Sequence[Trial]) -> None:
        self._clear()
        self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.stream.flush()
        if self.live:
            self._status(trials)

    def _clear(self) -> None:
        if self.live and self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = ""

    def _name(self, trial: Trial) -> str:
        if trial.trial_id not in self.names:
            self.names[trial.trial_id] = str(self.describe(trial.config)[0])
        return self.names[trial.trial_id]

    def _age(self, trial: Trial) -> str:
        started = self.started.get(trial.trial_id)
        return "time unknown" if started is None else format_duration(self.clock() - started)

    def _reached(self, trial: Trial) -> int:
        return int(self.iteration.get(trial.trial_id, (trial.last_result or {}).get("iteration", 0)) or 0)
