"""Per-group search and early stopping, the report, and the runner's CLI errors (before Ray starts)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from conftest import SMOKE, run_study

from study.report import GroupResult, format_table, write_report
from study.search import GroupedScheduler, GroupedSearcher, search_space
from study.spec import SearchRange, SearchSpec

SPACE = search_space(SearchSpec({"lr": SearchRange(0.01, 1.0), "weight_decay": SearchRange(1e-5, 1e-3)}))


def test_searcher_serves_each_group_its_own_budget_in_turn(tmp_path: Path) -> None:
    searcher = GroupedSearcher(SPACE, {"resnet20-A": 2, "plain20": 1}, full_iterations=100, seed=0,
                               initial_points=[{"lr": 0.1, "weight_decay": 1e-4}])
    suggestions = [searcher.suggest(f"t{i}") for i in range(3)]
    assert [s["group"] for s in suggestions] == ["resnet20-A", "plain20", "resnet20-A"]
    assert suggestions[0]["lr"] == 0.1 and suggestions[1]["lr"] == 0.1  # initial point first in every group
    assert 0.01 <= suggestions[2]["lr"] <= 1.0 and 1e-5 <= suggestions[2]["weight_decay"] <= 1e-3
    assert searcher.suggest("t3") == GroupedSearcher.FINISHED
    searcher.on_trial_complete("t0", {"val_error": 40.0, "iteration": 100, "train_loss": 1.0})
    searcher.on_trial_complete("t1", {"val_error": math.nan, "iteration": 50, "train_loss": math.nan})  # diverged
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = GroupedSearcher(SPACE, {"resnet20-A": 2, "plain20": 1}, full_iterations=100)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggested == {"resnet20-A": 2, "plain20": 1}
    assert restored.suggest("t4") == GroupedSearcher.FINISHED
    assert restored.states() == {"t0": "COMPLETE", "t1": "PRUNED", "t2": "RUNNING"}  # the study survives a resume


def test_searcher_tells_optuna_pruned_complete_and_failed_by_engine_iterations() -> None:
    searcher = GroupedSearcher(SPACE, {"g": 4}, full_iterations=100, seed=0)
    for index in range(4):
        searcher.suggest(f"t{index}")
    evaluation = {"train_loss": 1.0, "val_error": 50.0}
    searcher.on_trial_result("t0", {**evaluation, "iteration": 50})
    searcher.on_trial_result("t0", {"iteration": 70})  # a checkpoint between evaluations: no value
    searcher.on_trial_result("t0", {**evaluation, "iteration": 50})  # repeated after a resume: told once
    searcher.on_trial_complete("t0", {**evaluation, "iteration": 50})  # stopped by the scheduler at 50 of 100
    searcher.on_trial_complete("t1", {**evaluation, "iteration": 100})  # the full budget
    searcher.on_trial_complete("t2", {**evaluation, "iteration": 30}, error=True)  # raised
    searcher.on_trial_complete("t3", {**evaluation, "val_error": 20.0, "iteration": 100})
    assert searcher.states() == {"t0": "PRUNED", "t1": "COMPLETE", "t2": "FAIL", "t3": "COMPLETE"}
    trials = searcher.studies["g"].trials
    assert trials[0].intermediate_values == {50: 50.0}  # the pruned trial keeps its curve for TPE
    assert trials[1].value == 50.0 and trials[3].value == 20.0 and trials[2].value is None
    assert searcher.studies["g"].best_trial.number == 3


def test_scheduler_stops_diverged_and_chance_level_trials_and_keeps_groups_apart() -> None:
    scheduler = GroupedScheduler(["a", "b"], max_iterations=400, grace_iterations=100, reduction_factor=2,
                                 chance_error=88.0)
    assert set(scheduler.asha) == {"a", "b"} and scheduler.asha["a"] is not scheduler.asha["b"]
    assert scheduler._hopeless({"train_loss": math.nan, "val_error": 50.0, "iteration": 100})
    assert scheduler._hopeless({"train_loss": 2.3, "val_error": 90.2, "iteration": 100})
    assert not scheduler._hopeless({"train_loss": 2.3, "val_error": 90.2, "iteration": 50})
    assert not scheduler._hopeless({"train_loss": 1.5, "val_error": 60.0, "iteration": 300})
    assert GroupedScheduler(["a"], max_iterations=400, grace_iterations=100, reduction_factor=2, chance_error=88.0,
                            use_asha=False).asha == {}
    assert scheduler.asha["a"]._time_attr == "iteration" and scheduler.asha["a"]._max_t == 400  # engine iterations


def _result(group: str, depth: int, residual: bool, shortcut: str | None, tests: tuple[float, ...]) -> GroupResult:
    return GroupResult(group=group, arch=f"{'resnet' if residual else 'plain'}{depth}", depth=depth,
                       residual=residual, shortcut=shortcut, params=269_722, lr=0.1, weight_decay=1e-4,
                       val_error=9.0, trials=8, stopped_early=3, test_errors=tests, paper_error=8.75)


def test_report_table_json_and_figure(tmp_path: Path) -> None:
    results = [_result("resnet20-A", 20, True, "A", (8.0, 9.0)), _result("resnet32-A", 32, True, "A", (7.0,)),
               _result("plain20", 20, False, None, ()), _result("resnet20-B", 20, True, "B", (8.5, 8.5, 8.5))]
    table = format_table(results)
    assert "| resnet20-A | 20 | A | 269,722 | 0.1 | 0.0001 | 9.00 | 8.50 ± 0.71 (n=2) | 8.75 | 8 (3) |" in table
    assert "| plain20 | 20 | none (plain) |" in table and "8.50 ± 0.00 (n=3)" in table
    folder = tmp_path / "report"
    shown = write_report(results, folder, "demo")
    assert [figure.path for figure in shown] == ["error_vs_depth.png"]
    assert (folder / "error_vs_depth.png").stat().st_size > 10_000
    data = json.loads((folder / "report.json").read_text())
    assert data[0]["test_mean"] == pytest.approx(8.5) and data[2]["test_mean"] is None
    assert "| resnet32-A |" in (folder / "report.md").read_text()


def test_a_cifar_table_with_top5_errors_labels_the_paper_column_as_table_6() -> None:
    """CIFAR trials report top-5 errors too; the paper's figures beside them are still CIFAR-10's (Table 6)."""
    result = dataclasses.replace(_result("resnet20-A", 20, True, "A", (8.0,)), val_top5_error=0.5)
    header = format_table([result]).splitlines()[0]
    assert "paper top-1 / top-5 % (CIFAR-10, Table 6)" in header and "ImageNet" not in header


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "search.lr.low=-1"], "search.lr"),
        (["--set", "search.trials=4"], "search.trials"),
        (["--set", "groups.archs=[resnet21]"], "resnet21"),
        (["--set", "resources.cpus_per_worker=0"], "resources.cpus_per_worker"),
        (["--spec", "no/such/spec.yaml"], "no/such/spec.yaml"),
        (["--set", "dataset.path=no/such/data", "--set", "dataset.download=false"], "no/such/data"),
        (["--set", "dataset.path=no/such/data", "--set", "dataset.download=false"], "pass --set dataset.path=PATH"),
        (["--set", "oops"], "oops"),
    ],
)
def test_user_mistakes_fail_in_one_line_before_ray_starts(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_study(*args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_gpus_asked_of_a_machine_without_one_fail_in_one_line(cifar_subset: Path, tmp_path: Path) -> None:
    result = run_study("--spec", str(SMOKE), "--set", f"dataset.path={cifar_subset}", "--set",
                       "resources.gpus_per_worker=0.5", cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "resources.gpus_per_worker=0.5" in errors[0] and "Traceback" not in result.stderr
