"""benchmarks/packing.py: k trial processes share a device, report one timed interval per run each, and a
failing trial is named in one line. Two CPU processes on a tiny synthetic set; most of the time is the
children importing torch (17 s on 2 cores under a load of 6, a few seconds on idle ones). That a failing trial
breaks the barrier at once was checked by hand: ``--device cuda`` on a machine without one prints
"trial 0 failed: RuntimeError: Found no NVIDIA driver ..." and exits with 1."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`

from synthetic import make_dataset

from benchmarks.packing import Plan, _first_cause, describe_error, measure_packing, summarise
from resnet_core import ConfigError, TrainConfig

TINY = {"arch": "cifar_resnet", "depth": 8, "batch_size": 32, "device": "cpu", "threads": 1}


def test_two_packed_trials_each_report_every_run() -> None:
    results = measure_packing(2, TrainConfig(**TINY), functools.partial(make_dataset), Plan(2, 1, 2))
    assert len(results) == 2
    for result in results:
        assert [interval.rank for interval in result.intervals] == [0, 1]
        assert all(interval.iterations == 2 and interval.end > interval.start for interval in result.intervals)
        assert result.aggregate > 0 and result.per_trial > 0
    summary = summarise(results)
    assert summary["aggregate_its_mean"] > 0 and summary["per_trial_its_mean"] > 0


def test_the_first_trial_failing_on_its_own_is_named_not_one_that_saw_the_barrier_break() -> None:
    try:
        raise ConfigError("cifar_resnet needs depth 6n+2, got 9\nmore detail")
    except ConfigError as error:
        line = describe_error(error)
    assert line.startswith("ConfigError: cifar_resnet needs depth 6n+2, got 9 (at test_packing.py:")
    assert "\n" not in line
    errors = {0: "BrokenBarrierError:  (at synchronize.py:1)", 1: line, 2: "exited with code -9 without reporting"}
    assert _first_cause(errors) == f"trial 1 failed: {line} (2 other trial(s) stopped too)"
