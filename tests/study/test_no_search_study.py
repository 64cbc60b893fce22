"""A study without a search (``search.trials_per_group: 0``, what ``study/specs/cifar10_first_look.yaml`` runs):
every group trains the spec's one configuration with its final seeds, and the answer compares the groups with
intervals over those seeds. Its console is the study's own: a line per trial start and end, status lines with an
ETA, no Ray tables. About 2 minutes on 2 cores (e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_study, smoke_args
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

NO_SEARCH = ("--set", "name=fixed", "--set", "search.trials_per_group=0",
             "--set", "search.initial_points=[{lr: 0.1, weight_decay: 1.0e-4}]", "--set", "train.final_seeds=2",
             "--set", "train.iterations=60", "--set", "train.eval_every=30",
             "--set", "resources.workers_per_trial=1", "--set", "resources.cpus_per_worker=0.9")


def test_a_study_without_search_trains_the_recipe_with_seeds_and_answers_with_intervals(
        cifar_subset: Path, tmp_path: Path) -> None:
    result = run_study(*smoke_args(cifar_subset, *NO_SEARCH), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fixed").experiment_id], max_results=50)
    trials = [r for r in runs if r.data.tags.get("resnet.role") != "study"]
    assert sorted((r.data.tags["resnet.phase"], r.data.params["group"], r.data.params["seed"]) for r in trials) == [
        ("final", "plain20", "0"), ("final", "plain20", "1"),
        ("final", "resnet20-A", "0"), ("final", "resnet20-A", "1")]
    assert {(r.data.params["lr"], r.data.params["weight_decay"]) for r in trials} == {("0.1", "0.0001")}
    assert all(r.info.status == "FINISHED" and r.data.metrics["engine_seconds"] > 0 for r in trials)

    parent = next(r for r in runs if r.data.tags.get("resnet.role") == "study")
    folder = Path(client.download_artifacts(parent.info.run_id, "report", str(tmp_path / "artifacts")))
    difference = json.loads((folder / "answer.json").read_text())["differences"][0]
    assert (difference["first"], difference["second"], difference["n_first"], difference["n_second"]) == (
        "resnet20-A", "plain20", 2, 2)
    assert difference["low"] <= difference["mean"] <= difference["high"]  # an interval over the two seeds
    report = (folder / "report.md").read_text()
    assert "no search: every group trains the spec's one configuration" in report
    assert {"resnet.seconds.ray_start", "resnet.seconds.final", "resnet.seconds.report"} <= set(parent.data.tags)

    console = result.stdout.splitlines()
    assert sum(line.split(" ", 1)[-1].startswith("start ") for line in console) == 4
    assert sum(line.split(" ", 1)[-1].startswith("end   ") for line in console) == 4
    last = next(line for line in reversed(console) if "[final " in line)
    assert "[final 4/4 done, 0 running, 0 pending | " in last and " | resnet20-A 2/2 best test " in last
    assert "Trial status:" not in result.stdout and "pid=" not in result.stdout
    assert len(console) + len(result.stderr.splitlines()) < 60, result.stdout + result.stderr
