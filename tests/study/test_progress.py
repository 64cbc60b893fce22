"""The study's console: one line per trial start and end, a status line with counts, best figure and a measured ETA."""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial

from study.progress import FINAL, SEARCH, ConsoleProgress, StudyPlan, error_reason, format_duration
from study.stop_signals import DropTuneStopNotes

PLAN = StudyPlan(groups=("resnet20-A", "plain20"), trials_per_group=2, final_seeds=1, iterations=100)


@dataclass
class FakeTrial:
    """What the console reads of a Tune trial."""

    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING
    last_result: dict[str, Any] = field(default_factory=dict)
    error: str = "RuntimeError: boom"

    def get_pickled_error(self) -> Exception:
        return RuntimeError(self.error)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def describe(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return f"{config['group']} lr={config['lr']}", {}


def console(stream: io.StringIO, clock: Clock, phase: str = SEARCH, **options: Any) -> ConsoleProgress:
    return ConsoleProgress(PLAN, phase, describe, stream=stream, clock=clock, **{"interval_s": 30.0, **options})


def test_trial_lines_and_a_measured_eta_in_a_log() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = console(stream, clock)
    first = FakeTrial("a", {"group": "resnet20-A", "lr": 0.1}, Trial.RUNNING)
    second = FakeTrial("b", {"group": "plain20", "lr": 0.2})
    trials = [first, second]
    progress.on_trial_start(0, trials, first)
    assert "start resnet20-A lr=0.1  (trial 1 of 2)" in stream.getvalue()

    clock.now = 10.0
    first.last_result = {"iteration": 50, "val_error": 60.0}
    progress.on_trial_result(0, trials, first, first.last_result)
    progress.on_step_end(0, trials)
    status = stream.getvalue().splitlines()[-1]
    # 50 iterations in 10 s = 5 it/s; left: 50 of the running trial, 3 search trials not started (the pending one
    # and two never created), and the final retraining of 2 groups: 50 + 300 + 200 = 550 iterations = 110 s.
    assert "[search 0/4 done, 1 running, 3 pending | 5.0 it/s, ETA 2 min | resnet20-A 0/2 (1 running) best val " \
           "60.0% | plain20 0/2]" in status

    clock.now = 20.0
    progress.on_step_end(0, trials)  # within the 30 s interval: no second status line in a log
    assert stream.getvalue().count("ETA") == 1
    assert progress._eta(trials) == "5.0 it/s, ETA 2 min"  # as of the last report (110 s), less the 10 s since

    first.last_result = {"iteration": 100, "val_error": 40.0}
    progress.on_trial_result(0, trials, first, first.last_result)
    first.status = Trial.TERMINATED
    progress.on_trial_complete(0, trials, first)
    assert stream.getvalue().splitlines()[-1].endswith(
        "end   resnet20-A lr=0.1: completed at 100/100 iterations, val error 40.0%, 20 s")


def test_stopped_early_and_failed_trials_say_so() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = console(stream, clock)
    stopped = FakeTrial("a", {"group": "plain20", "lr": 5.0}, Trial.RUNNING)
    failed = FakeTrial("b", {"group": "plain20", "lr": 0.1}, Trial.RUNNING,
                       error="worker died\nMemoryError: out of memory")
    trials = [stopped, failed]
    progress.on_trial_start(0, trials, stopped)
    progress.on_trial_start(0, trials, failed)
    assert "(trial 2 of 2)" in stream.getvalue()
    clock.now = 45.0
    stopped.last_result = {"iteration": 50, "val_error": 90.0}
    stopped.status = Trial.TERMINATED
    progress.on_trial_complete(0, trials, stopped)
    failed.last_result = {"iteration": 25}
    failed.status = Trial.ERROR
    progress.on_trial_error(0, trials, failed)
    lines = stream.getvalue().splitlines()
    assert lines[-2].endswith("end   plain20 lr=5.0: stopped early at 50/100 iterations, val error 90.0%, 45 s")
    assert lines[-1].endswith("end   plain20 lr=0.1: FAILED at 25/100 iterations, 45 s: MemoryError: out of memory")


def test_a_trial_restarted_after_a_fault_says_why() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = console(stream, clock)
    trial = FakeTrial("a", {"group": "plain20", "lr": 0.1}, Trial.RUNNING,
                      error="Traceback ...\nray.exceptions.ActorDiedError: The actor died unexpectedly")
    progress.on_trial_start(0, [trial], trial)
    clock.now = 20.0
    trial.last_result = {"iteration": 50, "val_error": 80.0}
    progress.on_trial_recover(0, [trial], trial)
    assert stream.getvalue().splitlines()[-1].endswith(
        "fault plain20 lr=0.1 at 50/100 iterations, 20 s: ray.exceptions.ActorDiedError: The actor died unexpectedly; "
        "restarting it from its last checkpoint")
    progress.on_trial_start(0, [trial], trial)
    assert stream.getvalue().splitlines()[-1].endswith("start plain20 lr=0.1  (trial 1 of 2, from iteration 50)")


def test_trials_the_end_of_the_phase_cut_are_interrupted_not_done() -> None:
    """An interrupted study: Tune's clean-up ends the running trials without an event of their own. They get an
    end line that says so, and the last status line counts them as interrupted (it said "2/4 done")."""
    stream, clock = io.StringIO(), Clock()
    progress = console(stream, clock)
    finished = FakeTrial("a", {"group": "resnet20-A", "lr": 0.1}, Trial.RUNNING)
    cut = FakeTrial("b", {"group": "resnet20-A", "lr": 0.2}, Trial.RUNNING)
    earlier = FakeTrial("c", {"group": "plain20", "lr": 0.3}, Trial.TERMINATED,
                        {"iteration": 100, "val_error": 50.0})  # ended in an earlier run of the study
    never = FakeTrial("d", {"group": "plain20", "lr": 0.4})
    trials = [finished, cut, earlier, never]
    progress.on_trial_start(0, trials, finished)
    progress.on_trial_start(0, trials, cut)
    clock.now = 30.0
    finished.last_result = {"iteration": 100, "val_error": 40.0}
    finished.status = Trial.TERMINATED
    progress.on_trial_complete(0, trials, finished)
    cut.last_result = {"iteration": 50, "val_error": 70.0}
    progress.on_trial_result(0, trials, cut, cut.last_result)
    cut.status = Trial.TERMINATED  # Tune's clean-up after the stop signal
    progress.on_experiment_end(trials)
    lines = stream.getvalue().splitlines()
    assert lines[-2].endswith("end   resnet20-A lr=0.2: interrupted at 50/100 iterations, 30 s "
                              "(resuming the study continues it)")
    assert "[search 2/4 done, 1 interrupted, 0 running, 1 pending | no ETA: interrupted | " in lines[-1]
    assert lines[-1].endswith("| resnet20-A 1/2 (1 interrupted) best val 40.0% | plain20 1/2 best val 50.0%]")
    assert sum("interrupted at" in line for line in lines) == 1


def test_tunes_stop_notes_are_dropped_and_its_other_warnings_kept() -> None:
    keep = DropTuneStopNotes()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.tune", logging.WARNING, "tune.py", 1, message, None, None)

    assert not keep.filter(record("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."))
    assert not keep.filter(record("Experiment has been interrupted, but the most recent state was saved.\n"
                                  "Resume experiment with: Tuner.restore(path=...)"))
    assert keep.filter(record("Trial x did not report any metrics"))


def test_on_a_terminal_the_status_line_is_redrawn_in_place() -> None:
    stream, clock = Terminal(), Clock()
    progress = console(stream, clock, interval_s=1.0)
    trial = FakeTrial("a", {"group": "plain20", "lr": 0.1}, Trial.RUNNING)
    progress.on_trial_start(0, [trial], trial)
    clock.now = 2.0
    progress.on_step_end(0, [trial])
    text = stream.getvalue()
    assert text.count("\r\x1b[K") >= 2 and "ETA: measuring" in text  # no iteration yet: no ETA invented
    assert not text.endswith("\n")  # the status line stays the last, unterminated line
    progress.on_experiment_end([trial])
    assert stream.getvalue().endswith("]\n")  # the phase's last status becomes a line of its own


def test_a_failed_trials_line_reads_the_error_tune_has_just_written(tmp_path: Path) -> None:
    """Tune writes a trial's error next to it in the driver, and copies it to the run's storage only after the
    callbacks ran: the line names the error from the local copy, not "no error recorded"."""
    (tmp_path / "error.txt").write_text("Failure # 1 (occurred at 2026-12-04_15-30-47)\n"
                                        "ray::ImplicitFunc.train() (pid=1)\n  File x\n"
                                        "DeprecationWarning: `ray.train.get_context` is deprecated\n")
    failed = FakeTrial("a", {"group": "plain20", "lr": 0.1}, Trial.RUNNING)
    failed.local_path = str(tmp_path)
    failed.run_metadata = SimpleNamespace(error_filename="error.txt")
    failed.get_pickled_error = lambda: None  # not in the run's storage yet
    assert error_reason(failed) == "DeprecationWarning: `ray.train.get_context` is deprecated"
    (tmp_path / "error.txt").write_text("Failure # 1\nTraceback (most recent call last):\n  File x\n"
                                        "ray.exceptions.ActorDiedError: The actor died unexpectedly.\n\tpid: 7\n"
                                        "The actor is dead because its worker process has died.\n")
    assert error_reason(failed) == "ray.exceptions.ActorDiedError: The actor died unexpectedly."  # Ray's notes after
    failed.run_metadata = SimpleNamespace(error_filename=None)
    assert error_reason(failed) == "no error recorded"


def test_the_final_phase_counts_the_search_and_shows_test_errors() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = console(stream, clock, phase=FINAL)  # after PLAN's search: 2 groups x 2 trials
    trial = FakeTrial("a", {"final": {"group": "plain20", "seed": 0}, "group": "plain20", "lr": 0.1},
                      Trial.TERMINATED, {"iteration": 100, "test_error": 33.3})
    progress.on_trial_start(0, [trial], trial)
    assert "start plain20 lr=0.1  (from iteration 100)" in stream.getvalue()  # no search trial number in the final
    progress.on_trial_complete(0, [trial], trial)
    progress.on_experiment_end([trial])
    status = stream.getvalue().splitlines()[-1]
    assert "[4 search trials done; final 1/2 done, 0 running, 1 pending | ETA: measuring | resnet20-A 0/1 | " \
           "plain20 1/1 best test 33.3%]" in status


def test_the_eta_weighs_each_groups_iterations_by_its_cost() -> None:
    """Measured on a shallow net only, the deep one's iterations count for more (its depth, in a study)."""
    plan = StudyPlan(groups=("plain20", "plain56"), trials_per_group=1, final_seeds=0, iterations=100,
                     costs=(20.0, 56.0))
    clock = Clock()
    progress = ConsoleProgress(plan, SEARCH, describe, stream=io.StringIO(), clock=clock)
    shallow = FakeTrial("a", {"group": "plain20", "lr": 0.1}, Trial.RUNNING)
    trials = [shallow]
    progress.on_trial_start(0, trials, shallow)
    clock.now = 10.0
    shallow.last_result = {"iteration": 50}
    progress.on_trial_result(0, trials, shallow, shallow.last_result)
    # 50 plain-20 iterations in 10 s = 100 work units/s; left: 50 x 20 + 100 x 56 = 6,600 units = 66 s (not 15 s).
    assert progress._eta(trials) == "5.0 it/s, ETA 66 s"


def test_the_console_survives_tunes_pickling_without_its_stream() -> None:
    progress = console(io.StringIO(), Clock())
    restored = pickle.loads(pickle.dumps(progress))
    assert restored.plan == PLAN and restored.stream is not None and restored.started == {}


@pytest.mark.parametrize(("seconds", "shown"), [(44.6, "45 s"), (600, "10 min"), (7500, "2 h 05 min"),
                                                (float("inf"), "?")])
def test_durations_read_as_a_person_would_say_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
