"""A field other than lr and weight decay, searched: it reaches each trial's run, its MLflow params and name,
trials.csv, the rebuilt Optuna study and the report's table. No Ray, no MLflow (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from study.report import GroupResult, format_table
from study.runner import TrialNamer
from study.search import search_space
from study.search_analysis import TrialRecord, group_study, plot_search, read_trials_csv, write_trials_csv
from study.spec import load_spec
from study.trial import trial_train_config

SMOKE = Path(__file__).parents[2] / "study" / "specs" / "smoke.yaml"
MOMENTUM = ["search.momentum={low: 0.8, high: 0.99}", "search.normalization={choices: [pixel_mean, channel]}",
            "search.initial_points=[]", "groups.batch_size=[32, 64]"]


def test_a_searched_momentum_reaches_the_trial_its_params_and_its_name() -> None:
    spec = load_spec(SMOKE, MOMENTUM)
    config = {"group": "plain20-batch_size64", "lr": 0.2, "weight_decay": 3e-4, "momentum": 0.95,
              "normalization": "channel"}
    group, train = trial_train_config(spec, config)
    assert (train.momentum, train.normalization, train.batch_size, train.lr) == (0.95, "channel", 64, 0.2)
    assert group.settings == (("batch_size", 64),)
    name, params = TrialNamer(spec.to_dict())(config)
    assert name == "plain20-batch_size64 lr=0.2 wd=0.0003 momentum=0.95 normalization=channel"
    assert {key: params[key] for key in ("lr", "weight_decay", "momentum", "normalization", "batch_size")} == {
        "lr": 0.2, "weight_decay": 3e-4, "momentum": 0.95, "normalization": "channel", "batch_size": 64}
    assert {key: value for key, value in params.items() if key.startswith("config.")} == {
        f"config.{key}": value for key, value in train.to_dict().items()}  # the whole run, as the engine got it


def _record(number: int, momentum: float, normalization: str, error: float) -> TrialRecord:
    return TrialRecord(group="plain20", phase="search", number=number, run_id=f"r{number}",
                       values={"lr": 0.1 * (number + 1), "weight_decay": 1e-4 * (number + 1), "momentum": momentum,
                               "normalization": normalization},
                       seed=0, state="COMPLETE", status="completed", iterations=150, val_error=error, test_error=None,
                       wall_seconds=10.0)


RECORDS = [_record(0, 0.9, "pixel_mean", 50.0), _record(1, 0.85, "channel", 45.5), _record(2, 0.95, "channel", 47.0),
           _record(3, 0.81, "pixel_mean", 52.25)]


def test_trials_csv_has_a_column_per_searched_field_and_reads_back_typed(tmp_path: Path) -> None:
    path = write_trials_csv(RECORDS, tmp_path / "trials.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:7] == ["group", "phase", "number", "lr", "weight_decay", "momentum", "normalization"]
    assert read_trials_csv(path) == RECORDS


def test_the_rebuilt_study_and_its_figures_cover_every_searched_field(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(load_spec(SMOKE, MOMENTUM[:3]).search)
    study = group_study("plain20", RECORDS, space)
    assert study.best_trial.params == RECORDS[1].values
    drawn = plot_search(study, tmp_path, "search_plain20")
    assert [path.name for path in drawn.written] == ["search_plain20_history.png", "search_plain20_landscape.png",
                                                     "search_plain20_importance.png"]
    assert drawn.landscape == "contour"
    with pytest.raises(ValueError, match="search space is over"):
        group_study("plain20", RECORDS, search_space(load_spec(SMOKE).search))


def test_the_report_table_shows_every_searched_value() -> None:
    result = GroupResult(group="plain20", arch="plain20", depth=20, residual=False, shortcut=None, params=269_722,
                         lr=0.2, weight_decay=2e-4, val_error=45.5, trials=4, stopped_early=0,
                         searched=RECORDS[1].values)
    header, _, row = format_table([result]).splitlines()[:3]
    assert "| lr | weight decay | momentum | normalization |" in header
    assert "| 0.2 | 0.0002 | 0.85 | channel |" in row
