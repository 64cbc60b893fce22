"""The search made visible from records (study/search_analysis.py): trials.csv, the rebuilt Optuna study of a
group, and Optuna's figures of it. No Ray, no MLflow: records are written by hand as the driver would read
them back. Run: ``.venv/bin/python -m pytest tests/study/test_search_analysis.py -q`` (a few seconds)."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import matplotlib
import optuna
import pytest
from matplotlib import pyplot as plt
from optuna.trial import TrialState

from study.search import search_space
from study.search_analysis import (
    TrialRecord,
    group_study,
    plot_all,
    plot_search,
    read_trials_csv,
    write_trials_csv,
)
from study.spec import SearchRange, SearchSpec

SPACE = search_space(SearchSpec({"lr": SearchRange(0.01, 1.0), "weight_decay": SearchRange(1e-5, 1e-3)}))
RICH, POOR = "resnet20-A", "plain20"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def search(group: str, number: int, lr: float, wd: float, state: str, val_error: float | None,
           intermediate: dict[int, float] | None = None, iterations: int = 6000) -> TrialRecord:
    status = {"COMPLETE": "completed", "PRUNED": "stopped early", "FAIL": "failed", "RUNNING": "running"}[state]
    return TrialRecord(group=group, phase="search", number=number, run_id=f"{group}-s{number}",
                       values={"lr": lr, "weight_decay": wd},
                       seed=number, state=state, status=status, iterations=iterations,
                       val_error=val_error, test_error=None if val_error is None else val_error + 0.25,
                       wall_seconds=None if state == "RUNNING" else 60.0 + number, intermediate=intermediate or {})


def final(group: str, number: int, test_error: float) -> TrialRecord:
    return TrialRecord(group=group, phase="final", number=number, run_id=f"{group}-f{number}",
                       values={"lr": 0.1, "weight_decay": 1e-4},
                       seed=number, state="", status="completed", iterations=64000,
                       val_error=None, test_error=test_error, wall_seconds=3600.5, intermediate={})


def rich_group() -> list[TrialRecord]:
    """6 search trials: 4 COMPLETE, 1 PRUNED (a NaN among its evaluations), 1 FAIL at an initial point beyond
    the searched lr range (as an enqueued ``lr=5.0`` would be)."""
    curve = {500: 60.0, 1000: 41.5, 1500: math.nan, 2000: 35.25}
    return [
        search(RICH, 0, 0.1, 1e-4, "COMPLETE", 8.5, {3000: 12.0, 6000: 8.5}),
        search(RICH, 1, 0.03, 3e-5, "COMPLETE", 10.25),
        search(RICH, 2, 0.5, 5e-4, "PRUNED", 35.25, curve, iterations=2000),
        search(RICH, 3, 0.2, 2e-5, "COMPLETE", 9.0),
        search(RICH, 4, 5.0, 1e-4, "FAIL", None, iterations=0),
        search(RICH, 5, 0.05, 7e-4, "COMPLETE", 8.0),
    ]


def records() -> list[TrialRecord]:
    """Both groups and final runs, in a scrambled order (a final run first, groups interleaved)."""
    rich = rich_group()
    return [final(RICH, 1, 7.5), rich[3], search(POOR, 0, 0.1, 1e-4, "PRUNED", 48.0, {500: 70.0, 1000: 48.0},
                                                                   iterations=1000),
            *rich[:3], final(RICH, 0, 7.25), *rich[4:]]


def test_trials_csv_rows_columns_and_order_and_round_trip(tmp_path: Path) -> None:
    path = write_trials_csv(records(), tmp_path / "out" / "trials.csv")
    with path.open(newline="") as stream:
        rows = list(csv.reader(stream))
    assert tuple(rows[0]) == (
        "group", "phase", "number", "lr", "weight_decay", "seed", "optuna_state", "status", "iterations",
        "val_error", "test_error", "val_top5_error", "test_top5_error", "wall_seconds", "run_id")
    assert [tuple(row[:3]) for row in rows[1:]] == [
        *[(RICH, "search", str(n)) for n in range(6)], (RICH, "final", "0"), (RICH, "final", "1"),
        (POOR, "search", "0")]
    assert rows[1] == [RICH, "search", "0", "0.1", "0.0001", "0", "COMPLETE", "completed", "6000", "8.5", "8.75",
                       "", "", "60.0", f"{RICH}-s0"]
    assert rows[5] == [RICH, "search", "4", "5.0", "0.0001", "4", "FAIL", "failed", "0", "", "", "", "",
                       "64.0", f"{RICH}-s4"]
    assert rows[7] == [RICH, "final", "0", "0.1", "0.0001", "0", "", "completed", "64000", "", "7.25", "", "",
                       "3600.5", f"{RICH}-f0"]

    back = read_trials_csv(path)
    ordered = [*rich_group(), final(RICH, 0, 7.25), final(RICH, 1, 7.5), records()[2]]
    assert back == [dataclasses.replace(r, intermediate={}) for r in ordered]


def test_read_trials_csv_rejects_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("group,phase\nx,search\n")
    with pytest.raises(ValueError, match="columns"):
        read_trials_csv(path)


def test_group_study_reproduces_the_search() -> None:
    study = group_study(RICH, records(), SPACE)
    assert study.study_name == RICH and study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.get_trials()
    rich = rich_group()
    assert [t.number for t in trials] == list(range(6))
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.value for t in trials] == [8.5, 10.25, None, 9.0, None, 8.0]
    assert [t.params for t in trials] == [{"lr": r.values["lr"], "weight_decay": r.values["weight_decay"]}
                                          for r in rich]
    assert trials[0].intermediate_values == {3000: 12.0, 6000: 8.5}
    assert trials[2].intermediate_values == {500: 60.0, 1000: 41.5, 2000: 35.25}  # the NaN dropped
    assert trials[4].intermediate_values == {}
    assert trials[2].user_attrs["run_id"] == f"{RICH}-s2" and trials[2].user_attrs["iterations"] == 2000
    assert study.best_trial.number == 5
    # The initial point at lr=5.0 lies beyond the searched range (0.01, 1.0): accepted, the range widened.
    lr = trials[0].distributions["lr"]
    assert (lr.low, lr.high, lr.log) == (0.01, 5.0, True)
    assert trials[0].distributions["weight_decay"] == SPACE["weight_decay"]


def test_group_study_of_a_complete_initial_point_outside_the_space_and_a_running_trial() -> None:
    members = [search("g", 0, 5.0, 2e-3, "COMPLETE", 9.5), search("g", 1, 0.1, 1e-4, "RUNNING", 20.0, {500: 20.0},
                                                                  iterations=500)]
    study = group_study("g", members, SPACE)
    first, second = study.get_trials()
    assert (first.state, first.value, first.params) == (TrialState.COMPLETE, 9.5, {"lr": 5.0, "weight_decay": 2e-3})
    assert first.distributions["weight_decay"].high == 2e-3
    assert (second.state, second.value, second.intermediate_values) == (TrialState.RUNNING, None, {500: 20.0})


def test_group_study_refuses_a_complete_trial_without_a_value() -> None:
    with pytest.raises(ValueError, match="COMPLETE without a finite validation error"):
        group_study("g", [search("g", 0, 0.1, 1e-4, "COMPLETE", None)], SPACE)


def test_a_record_states_a_fact() -> None:
    with pytest.raises(ValueError, match="state"):
        dataclasses.replace(search("g", 0, 0.1, 1e-4, "FAIL", None), state="WAITING")
    with pytest.raises(ValueError, match="phase"):
        dataclasses.replace(final("g", 0, 7.0), phase="retrain")


def _png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_search_draws_the_three_figures_of_a_rich_group(tmp_path: Path) -> None:
    style = dict(matplotlib.rcParams)
    figures = plot_search(group_study(RICH, records(), SPACE), tmp_path / "figs", f"search_{RICH}")
    assert figures.group == RICH and figures.skipped == {} and figures.landscape == "contour"
    assert [p.name for p in figures.written] == [f"search_{RICH}_history.png", f"search_{RICH}_landscape.png",
                                                 f"search_{RICH}_importance.png"]
    assert all(_png(p) for p in figures.written)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == style  # Optuna's ggplot style did not leak


def test_plot_search_of_a_group_without_complete_trials_draws_nothing(tmp_path: Path) -> None:
    figures = plot_search(group_study(POOR, records(), SPACE), tmp_path, f"search_{POOR}")
    assert figures.written == [] and list(tmp_path.iterdir()) == [] and figures.landscape is None
    assert set(figures.skipped) == {"history", "landscape", "importance"}
    assert all("has 0" in reason and "1 pruned" in reason for reason in figures.skipped.values())
    assert plt.get_fignums() == []


def test_two_complete_trials_get_a_slice_and_importance(tmp_path: Path) -> None:
    members = [search("g2", 0, 0.1, 1e-4, "COMPLETE", 8.0), search("g2", 1, 0.3, 3e-5, "COMPLETE", 9.0)]
    figures = plot_search(group_study("g2", members, SPACE), tmp_path, "search_g2")
    assert figures.landscape == "slice" and figures.skipped == {}
    assert [p.name for p in figures.written] == ["search_g2_history.png", "search_g2_landscape.png",
                                                 "search_g2_importance.png"]
    assert all(_png(p) for p in figures.written)
    assert plt.get_fignums() == []


def test_importance_is_skipped_with_its_reason(tmp_path: Path) -> None:
    one = plot_search(group_study("g1", [search("g1", 0, 0.1, 1e-4, "COMPLETE", 8.0)], SPACE), tmp_path, "one")
    assert one.landscape == "slice" and len(one.written) == 2
    assert one.skipped == {"importance": "importance needs at least 2 complete trials; this group has 1"}
    tied = [search("t", n, lr, 1e-4, "COMPLETE", 8.0) for n, lr in enumerate((0.05, 0.1, 0.2))]
    same = plot_search(group_study("t", tied, SPACE), tmp_path, "tied")
    assert same.landscape == "slice"  # three trials, but one weight decay: no contour can be drawn
    assert "different validation errors" in same.skipped["importance"]
    assert plt.get_fignums() == []


def test_plot_all_one_per_group_in_first_appearance_order(tmp_path: Path) -> None:
    results = plot_all(records(), SPACE, tmp_path)
    assert [r.group for r in results] == [RICH, POOR]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in results[0].written)
    assert all(p.name.startswith(f"search_{RICH}_") for p in results[0].written)
    assert plt.get_fignums() == []
