"""The study's run is the report: a study's records (trial runs as the tracker logs them, group results,
final models) published through :func:`study.publish.publish_report` into a local MLflow store leave the
parent run with the spec as params, per-group metrics, the report as its description, MLflow's source tags,
and every figure and table of the report as artifacts -- drawn from the records. No Ray, no training: the
networks are freshly initialised (their BN statistics make the layer responses well defined)."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, SMOKE
from mlflow.tracking import MlflowClient
from synthetic import make_dataset

from resnet_core import create_model
from resnet_core.data.augment import Normalizer
from study.final_models import FinalModel
from study.publish import publish_report
from study.report import GroupResult
from study.runner import study_budget
from study.spec import load_spec
from study.study_data import CifarData
from study.tracking import STATUS_COMPLETED, STATUS_STOPPED, StudyTracker, evaluation_values

STUDY = "published"
SEARCH = {  # group -> (lr, weight decay, final val error or None when pruned at 100, status)
    "resnet20-A": [(0.1, 1e-4, 40.0, STATUS_COMPLETED), (5.0, 1e-4, None, STATUS_STOPPED),
                   (0.3, 3e-4, 45.0, STATUS_COMPLETED), (0.05, 2e-5, 50.0, STATUS_COMPLETED)],
    "plain20": [(0.1, 1e-4, 55.0, STATUS_COMPLETED), (5.0, 1e-4, None, STATUS_STOPPED)],
}
FINAL_ERRORS = {"resnet20-A": (38.0, 39.0, 37.5), "plain20": (52.0, 53.5, 51.0)}


def _log_study(tracker: StudyTracker, iterations: int) -> None:
    """Search and final runs with curves, as the study's callback logs them."""
    for group, trials in SEARCH.items():
        for number, (lr, weight_decay, val_error, status) in enumerate(trials):
            params = {"arch": group.split("-")[0], "group": group, "lr": lr, "weight_decay": weight_decay,
                      "seed": 0, "phase": "search"}
            run_id = tracker.trial_run(f"{group}-s{number}", f"{group} lr={lr}", params, "search")
            last = iterations if val_error is not None else iterations // 3
            result: dict[str, float] = {}
            for step in range(50, last + 1, 50):
                error = (val_error or 90.0) + (last - step) / 10
                result = {"iteration": step, "train_error": error - 5, "val_error": error, "lr": lr}
                tracker.log_metrics(run_id, evaluation_values(result), int(result["iteration"]))
            tracker.finish_trial(run_id, status, result)
        for seed, test_error in enumerate(FINAL_ERRORS[group]):
            params = {"arch": group.split("-")[0], "group": group, "lr": trials[0][0], "weight_decay": trials[0][1],
                      "seed": seed, "phase": "final"}
            run_id = tracker.trial_run(f"{group}-f{seed}", f"{group} seed {seed} (final)", params, "final")
            for step in range(50, iterations + 1, 50):
                result = {"iteration": step, "train_error": test_error - 8 + (iterations - step) / 10,
                          "test_error": test_error + (iterations - step) / 10, "lr": trials[0][0]}
                tracker.log_metrics(run_id, evaluation_values(result), int(result["iteration"]))
            tracker.finish_trial(run_id, STATUS_COMPLETED, result)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, StudyTracker, list[str]]:
    folder = tmp_path_factory.mktemp("published")
    spec = load_spec(SMOKE, [f"name={STUDY}", "train.final_seeds=3", "search.trials_per_group=4"])
    tracker = StudyTracker(f"sqlite:///{folder / 'mlflow.db'}", STUDY, STUDY)
    _log_study(tracker, spec.train.iterations)
    results = [GroupResult(group=group, arch=group.split("-")[0], depth=20, residual=group.startswith("resnet"),
                           shortcut="A" if group.startswith("resnet") else None, params=270_000,
                           lr=SEARCH[group][0][0], weight_decay=SEARCH[group][0][1], val_error=SEARCH[group][0][2],
                           trials=len(SEARCH[group]), stopped_early=1, test_errors=FINAL_ERRORS[group])
               for group in SEARCH]
    data = make_dataset(num_classes=10, train=64, test=96, size=32)
    torch.manual_seed(0)
    groups = {group.key: group for group in spec.study_groups()}
    models = [FinalModel(groups[group], tracker.find_trial_run(f"{group}-f0"), 0,
                         create_model(groups[group].arch).eval(), Normalizer.fit(data.train_images))
              for group in SEARCH]
    sentences = publish_report(spec, tracker, results, study_budget(spec), models, CifarData(data))
    tracker.close()
    return MlflowClient(tracker.tracking_uri), tracker, sentences


def test_the_study_run_holds_the_spec_and_each_groups_answer(published) -> None:
    client, tracker, _ = published
    run = client.get_run(tracker.parent_run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["search.trials_per_group"] == "4" and params["train.iterations"] == "150"
    assert params["search.sampler"] == "tpe" and params["groups.archs"] == '["resnet20", "plain20"]'
    assert metrics["resnet20-A/lr"] == pytest.approx(0.1) and metrics["plain20/weight_decay"] == pytest.approx(1e-4)
    assert metrics["resnet20-A/test_error_mean"] == pytest.approx(sum(FINAL_ERRORS["resnet20-A"]) / 3)
    assert metrics["plain20/test_error_std"] == pytest.approx(torch.tensor(FINAL_ERRORS["plain20"]).std().item())
    assert metrics["resnet20-A/final_seeds"] == 3


def test_the_report_is_the_runs_description_with_the_answer_and_its_figures(published) -> None:
    client, tracker, sentences = published
    description = client.get_run(tracker.parent_run_id).data.tags["mlflow.note.content"]
    assert description.startswith(f"# Study {STUDY}") and "## The answer" in description
    gap = [s for s in sentences if "depth 20" in s and "plain" in s]
    assert gap and gap[0] in description  # the residual-minus-plain gap of the one depth, in words
    for figure in ("fig6_training_curves.png", "error_vs_depth.png", "fig7_layer_responses.png",
                   "search/search_resnet20-A_history.png"):
        path = f"report/{figure}".replace("/", "%2F")
        assert f"get-artifact?path={path}&run_uuid={tracker.parent_run_id}" in description


def test_every_figure_and_table_is_an_artifact(published, tmp_path: Path) -> None:
    client, tracker, _ = published
    run_id = tracker.parent_run_id
    files = {a.path for a in client.list_artifacts(run_id, "report")}
    files |= {a.path for a in client.list_artifacts(run_id, "report/search")}
    expected = {"report.md", "report.json", "budget.json", "answer.json", "trials.csv", "error_vs_depth.png",
                "fig6_training_curves.png", "fig7_layer_responses.png", "layer_responses.csv",
                "search/search_resnet20-A_history.png", "search/search_resnet20-A_landscape.png",
                "search/search_resnet20-A_importance.png"}
    assert {f"report/{name}" for name in expected} <= files, files
    trials = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(run_id, "report/trials.csv",
                                                                            str(tmp_path))).read_text())))
    assert len(trials) == sum(map(len, SEARCH.values())) + sum(map(len, FINAL_ERRORS.values()))
    pruned = [row for row in trials if row["optuna_state"] == "PRUNED"]
    assert len(pruned) == 2 and all(row["iterations"] == "50" and row["lr"] == "5.0" for row in pruned)
    finals = [row for row in trials if row["phase"] == "final"]
    assert sorted(float(row["test_error"]) for row in finals) == sorted(e for es in FINAL_ERRORS.values() for e in es)
    assert all(row["run_id"] and float(row["wall_seconds"]) >= 0 for row in trials)
    responses = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(
        run_id, "report/layer_responses.csv", str(tmp_path))).read_text())))
    assert len(responses) == 2 * 19  # resnet20 and plain20: 19 3x3 layers each (Fig. 7's layer index)


def test_every_run_carries_mlflows_source_tags(published) -> None:
    client, tracker, _ = published
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 1 + sum(map(len, SEARCH.values())) + sum(map(len, FINAL_ERRORS.values()))
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"] == tags["mlflow.project.entryPoint"] == "study/run.py"
        if commit:
            assert tags["mlflow.source.git.commit"] == commit


def test_without_final_runs_the_report_draws_the_search_and_says_what_it_cannot(tmp_path: Path) -> None:
    """train.final_seeds=0: Fig. 6 shows the chosen search trials' validation error, Fig. 7 is named as not
    drawn (no final model), and the answer says the groups were not compared."""
    spec = load_spec(SMOKE, ["name=searched", "train.final_seeds=0"])
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "searched", "searched")
    for group, trials in SEARCH.items():
        lr, weight_decay, val_error, status = trials[0]
        params = {"arch": group.split("-")[0], "group": group, "lr": lr, "weight_decay": weight_decay, "seed": 0,
                  "phase": "search"}
        run_id = tracker.trial_run(f"{group}-s0", group, params, "search")
        result = {"iteration": 150, "train_error": val_error - 5, "val_error": val_error, "lr": lr}
        tracker.log_metrics(run_id, evaluation_values(result), 150)
        tracker.finish_trial(run_id, status, result)
    results = [GroupResult(group=group, arch=group.split("-")[0], depth=20, residual=group.startswith("resnet"),
                           shortcut="A" if group.startswith("resnet") else None, params=270_000,
                           lr=SEARCH[group][0][0], weight_decay=SEARCH[group][0][1], val_error=SEARCH[group][0][2],
                           trials=1, stopped_early=0) for group in SEARCH]
    sentences = publish_report(spec, tracker, results, study_budget(spec), [], CifarData(make_dataset(size=32)))
    assert any("no final retraining" in sentence for sentence in sentences)
    client = MlflowClient(tracker.tracking_uri)
    description = client.get_run(tracker.parent_run_id).data.tags["mlflow.note.content"]
    assert "layer responses (Fig. 7): no final model (train.final_seeds is 0)" in description
    files = {a.path for a in client.list_artifacts(tracker.parent_run_id, "report")}
    assert "report/fig6_training_curves.png" in files and "report/fig7_layer_responses.png" not in files
    rows = tracker.metric_rows(tracker.find_trial_run("resnet20-A-s0"))
    assert rows == [{"iteration": 150, "train_error": 35.0, "val_error": 40.0, "lr": 0.1}]  # what Fig. 6 drew
