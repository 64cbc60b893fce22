"""MLflow tracking of a study: one experiment per study, a parent run for the study, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids (no global "active run"), from
the study's driver process only -- a single writer, so a local SQLite store is safe. Runs are found again
by tags (``resnet.study``, ``resnet.trial_id``), which is what keeps a resumed study free of duplicates.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from study.report import plot_curves

log = logging.getLogger(__name__)

CURVES = ("train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error", "lr")
"""Metrics logged at every evaluation, stepped by the engine's iteration."""

STATUS_COMPLETED, STATUS_STOPPED, STATUS_FAILED = "completed", "stopped early", "failed"


class StudyTracker:
    """The MLflow side of one study."""

    def __init__(self, tracking_uri: str, experiment: str, study: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.study = study
        existing = self.client.get_experiment_by_name(experiment)
        self.experiment_id = existing.experiment_id if existing else self.client.create_experiment(
            experiment, artifact_location=artifact_location(tracking_uri))
        self.parent_run_id = self._find_or_create(
            {"resnet.study": study, "resnet.role": "study"}, run_name=study, tags={}
        )
        if self.client.get_run(self.parent_run_id).info.status != "RUNNING":
            self.client.update_run(self.parent_run_id, status="RUNNING")  # a re-run continues the study

    # Tune pickles its callbacks with the experiment state (for Tuner.restore): keep only what names the
    # study and reconnect on unpickling.
    def __getstate__(self) -> dict[str, str]:
        return {"tracking_uri": self.tracking_uri, "study": self.study, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_run_id}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=state["tracking_uri"])

    # ----------------------------------------------------------------- runs
    def _find(self, tags: Mapping[str, str]) -> str | None:
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=2)
        return runs[0].info.run_id if runs else None

    def _find_or_create(self, keys: Mapping[str, str], run_name: str, tags: Mapping[str, str]) -> str:
        found = self._find(keys)
        if found is not None:
            return found
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={**keys, **tags})
        return run.info.run_id

    def find_trial_run(self, trial_id: str) -> str | None:
        return self._find({"resnet.study": self.study, "resnet.trial_id": trial_id})

    def has_model(self, run_id: str) -> bool:
        return self.client.get_run(run_id).data.tags.get("resnet.model_logged") == "true"

    def log_spec(self, spec_yaml: str) -> None:
        self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")

    def trial_run(self, trial_id: str, name: str, params: Mapping[str, Any], phase: str) -> str:
        """The run of ``trial_id`` (created once, nested under the study's run) with its params."""
        keys = {"resnet.study": self.study, "resnet.trial_id": trial_id}
        run_id = self._find_or_create(keys, run_name=name, tags={"mlflow.parentRunId": self.parent_run_id,
                                                                  "resnet.phase": phase})
        existing = self.client.get_run(run_id).data.params
        new = [Param(key, str(value)) for key, value in params.items() if key not in existing]
        if new:
            self.client.log_batch(run_id, params=new)
        return run_id

    def last_step(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, "val_error") or self.client.get_metric_history(
            run_id, "test_error")
        return max((m.step for m in history), default=-1)

    def log_evaluation(self, run_id: str, result: Mapping[str, Any]) -> None:
        step = int(result["iteration"])
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(result[key]), now, step) for key in CURVES if result.get(key) is not None]
        self.client.log_batch(run_id, metrics=metrics)

    def finish_trial(self, run_id: str, status: str, final: Mapping[str, Any] | None) -> None:
        """Final values, the status tag, and the trial's metrics.csv and curve plot as artifacts."""
        tags = [RunTag("status", status)]
        metrics = []
        if final:
            now = int(time.time() * 1000)
            metrics = [Metric(f"final_{key}", float(final[key]), now, int(final.get("iteration", 0)))
                       for key in ("val_error", "test_error", "train_error") if final.get(key) is not None]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        rows = self.metric_rows(run_id)
        if rows:
            with tempfile.TemporaryDirectory() as folder:
                csv_path = Path(folder) / "metrics.csv"
                write_csv(csv_path, rows)
                plot_curves(rows, Path(folder) / "curves.png", title=self.client.get_run(run_id).info.run_name)
                self.client.log_artifacts(run_id, folder)
        self.client.set_terminated(run_id, "FAILED" if status == STATUS_FAILED else "FINISHED")

    def metric_rows(self, run_id: str) -> list[dict[str, float]]:
        """The evaluations stored for ``run_id``, one row per step, rebuilt from MLflow's metric history."""
        rows: dict[int, dict[str, float]] = {}
        for key in CURVES:
            for metric in self.client.get_metric_history(run_id, key):
                rows.setdefault(metric.step, {"iteration": metric.step})[key] = metric.value
        return [rows[step] for step in sorted(rows)]

    def log_report(self, folder: Path) -> None:
        self.client.log_artifacts(self.parent_run_id, str(folder), artifact_path="report")

    def log_model(self, run_id: str, model: Any, name: str, input_example: Any) -> None:
        """The trained network as an MLflow PyTorch model (traced on ``input_example``) on ``run_id``."""
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=run_id, nested=True):
            mlflow.pytorch.log_model(model, name=name, input_example=input_example)
        self.client.set_tag(run_id, "resnet.model_logged", "true")

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status)


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store go next to the database file, not under the driver's working
    directory (which under ``ray job submit`` is a temporary copy); servers choose their own."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return (Path(tracking_uri[len(prefix):]).resolve().parent / "mlruns").as_uri()
    return None


def write_csv(path: Path, rows: Sequence[Mapping[str, float]]) -> None:
    columns = ["iteration", *[key for key in CURVES if any(key in row for row in rows)]]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


class MlflowTrialCallback(Callback):
    """Forwards Tune's view of each trial to :class:`StudyTracker` (runs in the study's driver)."""

    def __init__(self, tracker: StudyTracker, phase: str, describe: Any, budget: int) -> None:
        self.tracker = tracker
        self.budget = budget  # iterations of a full trial; a trial that ended before them was stopped early
        self.phase = phase
        self.describe = describe  # trial config -> (run name, params)
        self.run_ids: dict[str, str] = {}
        self.last_steps: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.reported: set[str] = set()  # trials whose first report has been seen

    def _run(self, trial: Trial) -> str:
        if trial.trial_id not in self.run_ids:
            name, params = self.describe(trial.config)
            run_id = self.tracker.trial_run(trial.trial_id, name, params, self.phase)
            self.run_ids[trial.trial_id] = run_id
            self.last_steps[trial.trial_id] = self.tracker.last_step(run_id)
        return self.run_ids[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.started[trial.trial_id] = time.perf_counter()
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if "iteration" not in result:
            return
        run_id = self._run(trial)
        if trial.trial_id in self.started and trial.trial_id not in self.reported:
            # Trial start to first report, less the engine's own training time: what Ray adds per trial.
            elapsed = time.perf_counter() - self.started[trial.trial_id]
            self.reported.add(trial.trial_id)
            overhead = elapsed - float(result.get("seconds", 0.0))
            self.tracker.client.log_metric(run_id, "ray_startup_seconds", overhead)
            log.info("trial %s: first report %.1f s after start, %.1f s of it before training", trial.trial_id,
                     elapsed, overhead)
        if int(result["iteration"]) > self.last_steps.get(trial.trial_id, -1):  # never twice after a resume
            self.tracker.log_evaluation(run_id, result)
            self.last_steps[trial.trial_id] = int(result["iteration"])

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        reached = int((trial.last_result or {}).get("iteration", 0))
        status = STATUS_STOPPED if reached < self.budget else STATUS_COMPLETED
        self.tracker.finish_trial(self._run(trial), status, trial.last_result)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.tracker.finish_trial(self._run(trial), STATUS_FAILED, trial.last_result)
