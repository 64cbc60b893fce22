"""MLflow tracking of a study: one experiment per study, a parent run for the study, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids (no global "active run"), from
the study's driver process only -- a single writer at a time (the callback's writer thread during a phase,
the runner between phases), so a local SQLite store is safe. Runs are found again
by tags (``resnet.study``, ``resnet.trial_id``), which is what keeps a resumed study free of duplicates.

With a tracking server the server may go away for a while (a restart). Every tracker call is safe to repeat
(find before create; metrics carry the timestamp of the moment they were reported, and the server stores a
point once), and is repeated for up to ``patience`` seconds (:func:`study.mlflow_server.call_patiently`).
The Tune callback never waits for MLflow: its events are queued per trial and applied in order by one writer
thread, which keeps them while the server is away and logs them when it answers again; the end of a phase
waits for the queue to drain.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from resnet_core import EvalReport
from study.figures import plot_curves
from study.mlflow_server import PATIENCE_S, TrackingUnavailable, address, call_patiently, is_server
from study.search import is_evaluation
from study.search_analysis import TrialRecord, parse_value
from study.trial import REPLAYED, RESUMED_AT, WORKER_STARTED_AT

log = logging.getLogger(__name__)

CURVES = tuple(f.name for f in dataclasses.fields(EvalReport) if f.name not in ("iteration", "seconds", "checkpoint"))
"""Metrics logged at every evaluation: every figure of the engine's :class:`~resnet_core.EvalReport` (a metric added
there is logged without a change here), stepped by the engine's iteration."""

FINAL_METRICS = ("val_error", "test_error", "train_error", "val_top5_error", "test_top5_error")
"""A trial's last figures, logged once more as ``final_<name>`` when it ends (the top-5 errors on ImageNet only)."""

STATUS_COMPLETED, STATUS_STOPPED, STATUS_FAILED = "completed", "stopped early", "failed"
OPTUNA_STATES = {STATUS_COMPLETED: "COMPLETE", STATUS_STOPPED: "PRUNED", STATUS_FAILED: "FAIL"}
"""What the search's sampler was told of a trial with each status (study.search.GroupedSearcher)."""
RUN_KILLED, RUN_FAILED, RUN_FINISHED = "KILLED", "FAILED", "FINISHED"
ENTRY_POINT = "study/run.py"
REPORT_ARTIFACTS = "report"
"""The artifact folder of the study's run that holds its report."""
DESCRIPTION_TAG = "mlflow.note.content"
"""The tag MLflow's UI shows as a run's description (Markdown)."""
REPOSITORY = Path(__file__).resolve().parents[1]
SECONDS_TAG = "resnet.seconds."
"""Prefix of the study run's tags holding how long its parts took (``ray_start``, ``search``, ``final``, ``report``)."""
RAY_STARTUP = "ray_startup_seconds"
"""A trial's metric at step 0: seconds from its start in Tune to its worker running the trial's code."""
ENGINE_SECONDS = "engine_seconds"
"""A trial's final metric: the engine's ``seconds`` at its last evaluation (training and the evaluations before
it; data loading, model building and that last evaluation excluded)."""


def git_commit(folder: Path = REPOSITORY) -> str | None:
    """The commit checked out in ``folder``'s repository, or None outside one (a ``ray job submit`` copy)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) == 40 else None


def source_tags(entry_point: str = ENTRY_POINT) -> dict[str, str]:
    """MLflow's standard source tags for the runs of a study: the user, the source (this service's entry
    point, a local run) and, where the code is a git checkout, its commit."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import mlflow_tags

    tags = {key: str(value) for key, value in resolve_tags({}).items()
            if key in (mlflow_tags.MLFLOW_USER, mlflow_tags.MLFLOW_SOURCE_TYPE, mlflow_tags.MLFLOW_GIT_COMMIT)}
    tags[mlflow_tags.MLFLOW_SOURCE_NAME] = entry_point
    tags[mlflow_tags.MLFLOW_PROJECT_ENTRY_POINT] = entry_point
    commit = git_commit()
    if commit is not None:
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit
    return tags


class StudyTracker:
    """The MLflow side of one study."""

    def __init__(self, tracking_uri: str, experiment: str, study: str, patience: float = PATIENCE_S) -> None:
        create_sqlite_store(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.study = study
        self.patience = patience
        self._local = threading.local()
        self.source = source_tags()
        self.experiment_id = self._patiently("finding the experiment", self._experiment, experiment)
        self.parent_run_id = self._patiently("finding the study's run", self._find_or_create,
                                             {"resnet.study": study, "resnet.role": "study"}, study, {})
        self._patiently("reopening the study's run", self._reopen)

    # Tune pickles its callbacks with the experiment state (for Tuner.restore): keep only what names the
    # study and reconnect on unpickling.
    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "study": self.study, "experiment_id": self.experiment_id,
                "parent_run_id": self.parent_run_id, "patience": self.patience, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"patience": PATIENCE_S, "source": {}, **state})
        self.client = MlflowClient(tracking_uri=state["tracking_uri"])
        self._local = threading.local()

    @property
    def where(self) -> str:
        """The tracking URI as it may be printed (no credentials)."""
        return address(self.tracking_uri) if is_server(self.tracking_uri) else self.tracking_uri

    def _patiently(self, what: str, call: Any, *args: Any) -> Any:
        patience = getattr(self._local, "patience", self.patience)
        return call_patiently(lambda: call(*args), self.where, patience, what, log)

    @contextlib.contextmanager
    def impatient(self) -> Iterator[None]:
        """Calls made inside, by this thread, raise :class:`TrackingUnavailable` at once when the server is away
        (the callback's writer keeps the results and tries again itself)."""
        self._local.patience = 0.0
        try:
            yield
        finally:
            del self._local.patience

    # ----------------------------------------------------------------- runs
    def _experiment(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location(self.tracking_uri))

    def _reopen(self) -> None:
        if self.client.get_run(self.parent_run_id).info.status != "RUNNING":
            self.client.update_run(self.parent_run_id, status="RUNNING")  # a re-run continues the study

    def _find(self, tags: Mapping[str, str]) -> str | None:
        query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=2)
        return runs[0].info.run_id if runs else None

    def _find_or_create(self, keys: Mapping[str, str], run_name: str, tags: Mapping[str, str]) -> str:
        found = self._find(keys)
        if found is not None:
            return found
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={**self.source, **keys, **tags})
        return run.info.run_id

    def find_trial_run(self, trial_id: str) -> str | None:
        return self._patiently("finding a trial's run", self._find, {"resnet.study": self.study,
                                                                     "resnet.trial_id": trial_id})

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """:meth:`note_seconds` of what runs inside, when it ends without an error."""
        started = time.perf_counter()
        yield
        self.note_seconds(part, time.perf_counter() - started)

    def note_seconds(self, part: str, seconds: float) -> None:
        """Tag the study's run with the wall seconds one part of it took in this start of the study
        (``resnet.seconds.search``, ...; a resumed study overwrites them with its own)."""
        self._patiently("noting a duration", self.client.set_tag, self.parent_run_id, f"{SECONDS_TAG}{part}",
                        f"{seconds:.1f}")

    def log_spec(self, spec_yaml: str) -> None:
        self._patiently("logging the spec", self.client.log_text, self.parent_run_id, spec_yaml, "spec.yaml")

    def trial_run(self, trial_id: str, name: str, params: Mapping[str, Any], phase: str) -> str:
        """The run of ``trial_id`` (created once, nested under the study's run) with its params."""
        keys = {"resnet.study": self.study, "resnet.trial_id": trial_id}

        def find_or_create() -> str:
            run_id = self._find_or_create(keys, run_name=name, tags={"mlflow.parentRunId": self.parent_run_id,
                                                                      "resnet.phase": phase})
            run = self.client.get_run(run_id)
            if run.info.status != "RUNNING" and "status" not in run.data.tags:
                self.client.update_run(run_id, status="RUNNING")  # a trial of an interrupted study goes on
            existing = run.data.params
            new = [Param(key, str(value)) for key, value in params.items() if key not in existing]
            if new:
                self.client.log_batch(run_id, params=new)
            return run_id

        return self._patiently("creating a trial's run", find_or_create)

    def last_step(self, run_id: str) -> int:
        def read() -> int:
            history = self.client.get_metric_history(run_id, "val_error") or self.client.get_metric_history(
                run_id, "test_error")
            return max((m.step for m in history), default=-1)

        return self._patiently("reading a trial's history", read)

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int, timestamp: int | None = None) -> None:
        """``values`` at ``step``; ``timestamp`` (ms) is the moment they were measured: a repeated call with the
        same timestamp adds no point."""
        now = int(time.time() * 1000) if timestamp is None else timestamp
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        if metrics:
            self._patiently("logging metrics", self.client.log_batch, run_id, metrics)

    def finish_trial(self, run_id: str, status: str, final: Mapping[str, Any] | None,
                     timestamp: int | None = None) -> None:
        """Final values, the status tag, and the trial's metrics.csv and curve plot as artifacts."""
        now = int(time.time() * 1000) if timestamp is None else timestamp

        def finish() -> None:
            run = self.client.get_run(run_id)
            tags = [RunTag("status", status)]
            if run.data.tags.get("resnet.phase") == "search":
                tags.append(RunTag("resnet.optuna_state", OPTUNA_STATES[status]))
            metrics = []
            if final:
                step = int(final.get("iteration", 0))
                metrics = [Metric(f"final_{key}", float(final[key]), now, step)
                           for key in FINAL_METRICS if final.get(key) is not None]
                if final.get("seconds") is not None:
                    metrics.append(Metric(ENGINE_SECONDS, float(final["seconds"]), now, step))
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
            rows = self.metric_rows(run_id)
            if rows:
                with tempfile.TemporaryDirectory() as folder:
                    csv_path = Path(folder) / "metrics.csv"
                    write_csv(csv_path, rows)
                    plot_curves(rows, Path(folder) / "curves.png", title=run.info.run_name)
                    self.client.log_artifacts(run_id, folder)
            self.client.set_terminated(run_id, RUN_FAILED if status == STATUS_FAILED else RUN_FINISHED)

        self._patiently("finishing a trial's run", finish)

    def metric_rows(self, run_id: str) -> list[dict[str, float]]:
        """The evaluations stored for ``run_id``, one row per step, rebuilt from MLflow's metric history."""
        rows: dict[int, dict[str, float]] = {}
        for key in CURVES:
            for metric in self.client.get_metric_history(run_id, key):
                rows.setdefault(metric.step, {"iteration": metric.step})[key] = metric.value
        return [rows[step] for step in sorted(rows)]

    def publish_study(self, params: Mapping[str, Any], metrics: Mapping[str, float], description: str,
                      folder: Path) -> None:
        """The study's run speaks for itself: ``params`` (the spec's values) and ``metrics`` (per group; a key
        logged before keeps its value: MLflow params cannot change, and a re-run of a finished study computes the
        same), ``description`` (the report, shown on the run's page) and ``folder`` as the
        ``report`` artifacts."""
        def publish() -> None:
            logged = self.client.get_run(self.parent_run_id).data
            new = [Param(key, str(value)[:6000]) for key, value in params.items() if key not in logged.params]
            for start in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.parent_run_id, params=new[start:start + 100])
            now = int(time.time() * 1000)  # each metric once, at step 0: a re-run of a finished study adds no point
            values = [Metric(key, float(value), now, 0) for key, value in metrics.items()
                      if value == value and key not in logged.metrics]
            for start in range(0, len(values), 1000):
                self.client.log_batch(self.parent_run_id, metrics=values[start:start + 1000])
            self.client.set_tag(self.parent_run_id, DESCRIPTION_TAG, description)
            self.client.log_artifacts(self.parent_run_id, str(folder), REPORT_ARTIFACTS)

        self._patiently("publishing the study's report", publish)

    def artifact_url(self, path: str) -> str:
        """Where the MLflow UI's page of the study's run finds one of its artifacts (a relative URL: the tracking
        server serves ``get-artifact`` next to the UI)."""
        return f"get-artifact?path={quote(path, safe='')}&run_uuid={self.parent_run_id}"

    def trial_records(self, searched: Sequence[str] = ("lr", "weight_decay")) -> list[TrialRecord]:
        """Every trial run of the study, read back from MLflow (figures and tables are drawn from these), with the
        values of the ``searched`` fields."""
        def read() -> list[TrialRecord]:
            runs = [run for run in self._study_runs() if run.info.run_id != self.parent_run_id
                    and "resnet.trial_id" in run.data.tags]
            runs.sort(key=lambda run: (run.info.start_time or 0, run.info.run_id))
            numbers: dict[tuple[str, str], int] = {}
            records = []
            for run in runs:
                params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
                phase = tags.get("resnet.phase", "search")
                group = params.get("group", "")
                number = numbers.get((group, phase), 0)
                numbers[(group, phase)] = number + 1
                history = {m.step: m.value for m in self.client.get_metric_history(run.info.run_id, "val_error")}
                tests = {m.step: m.value for m in self.client.get_metric_history(run.info.run_id, "test_error")}
                top5 = {key: metrics.get(f"final_{key}", metrics.get(key)) for key in ("val_top5_error",
                                                                                        "test_top5_error")}
                steps = set(history) | set(tests)
                status = tags.get("status", "running")
                state = "" if phase != "search" else tags.get("resnet.optuna_state", "RUNNING")
                ended = run.info.end_time if run.info.status != "RUNNING" else None
                records.append(TrialRecord(
                    group=group, phase=phase, number=number, run_id=run.info.run_id,
                    values={name: parse_value(params[name]) for name in searched}, seed=int(params.get("seed", 0)),
                    state=state,
                    status=status, iterations=max(steps, default=0),
                    val_error=metrics.get("final_val_error", history[max(history)] if history else None),
                    test_error=metrics.get("final_test_error", tests[max(tests)] if tests else None),
                    wall_seconds=None if not ended or not run.info.start_time
                    else (ended - run.info.start_time) / 1000,
                    intermediate=history if phase == "search" else {},
                    val_top5_error=top5["val_top5_error"], test_top5_error=top5["test_top5_error"],
                ))
            return records

        return self._patiently("reading the study's trials", read)

    def log_model(self, run_id: str, model: Any, name: str, input_example: Any, signature: Any = None) -> str:
        """The trained network as an MLflow PyTorch model (exported with ``torch.export``; a ``-1`` dimension of
        ``signature`` stays dynamic) on ``run_id``; returns its model URI, also kept in the run's tags, so a
        resumed study does not log it twice."""
        def log_it() -> str:
            uri = self.client.get_run(run_id).data.tags.get("resnet.model_uri")
            if uri:
                return uri
            mlflow.set_tracking_uri(self.tracking_uri)
            with mlflow.start_run(run_id=run_id, nested=True):
                info = mlflow.pytorch.log_model(model, name=name, input_example=input_example, signature=signature,
                                                serialization_format="pt2")
            self.client.set_tag(run_id, "resnet.model_uri", info.model_uri)
            self.client.set_tag(run_id, "resnet.model_logged", "true")
            return info.model_uri

        return self._patiently("logging a model", log_it)

    def register_model(self, name: str, model_uri: str, run_id: str, alias: str, description: str,
                       tags: Mapping[str, Any]) -> int:
        """``model_uri`` as a version of the registered model ``name`` (created once, found again on a resumed
        study), with ``tags`` and ``description``, and ``alias`` pointing at it; returns the version."""
        from mlflow.exceptions import MlflowException

        def register() -> int:
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(name, tags={"resnet.study": self.study}, description=description)
            found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
            version = (found[0] if found else self.client.create_model_version(
                name, model_uri, run_id=run_id, description=description)).version
            for key, value in tags.items():
                self.client.set_model_version_tag(name, str(version), key, str(value))
            self.client.set_registered_model_alias(name, alias, str(version))
            return int(version)

        return self._patiently("registering a model", register)

    def close(self, status: str = RUN_FINISHED) -> None:
        self._patiently("closing the study's run", self.client.set_terminated, self.parent_run_id, status)

    def _study_runs(self) -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`resnet.study` = '{self.study}'",
                                       max_results=10_000)

    def end_study(self, status: str) -> None:
        """End the study's run and every run of it still RUNNING (trials cut short) with ``status``: KILLED for an
        interruption, FAILED for an error. A resumed study sets them RUNNING again as it continues them."""
        def end() -> None:
            for run in self._study_runs():
                if run.info.status == "RUNNING" and run.info.run_id != self.parent_run_id:
                    self.client.set_terminated(run.info.run_id, status)
            self.client.set_terminated(self.parent_run_id, status)

        self._patiently("ending the study's runs", end)

    def trials_finished(self) -> int:
        """How many of the study's trials have ended (completed, stopped early or failed)."""
        return self._patiently("counting finished trials", lambda: sum(
            1 for run in self._study_runs() if "status" in run.data.tags))


def stored_spec(tracking_uri: str, experiment: str, study: str) -> str | None:
    """The spec.yaml an earlier start of ``study`` logged, if any; read only (creates nothing)."""
    database = sqlite_file(tracking_uri)
    if database is not None and not database.exists():
        return None
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], max_results=1, filter_string=(
        f"tags.`resnet.study` = '{study}' and tags.`resnet.role` = 'study'"))
    if not runs:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(runs[0].info.run_id, "spec.yaml", folder)
        except (mlflow.exceptions.MlflowException, OSError):
            return None
        return Path(path).read_text()


def evaluation_values(result: Mapping[str, Any]) -> dict[str, float]:
    """The curves of one evaluation, as plain floats."""
    return {key: float(result[key]) for key in CURVES if result.get(key) is not None}


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local SQLite store go next to the database file, not under the driver's working
    directory (which under ``ray job submit`` is a temporary copy); servers choose their own."""
    database = sqlite_file(tracking_uri)
    return None if database is None else (database.resolve().parent / "mlruns").as_uri()


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a local ``sqlite:///PATH`` store; None for any other tracking URI."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]) if tracking_uri.startswith(prefix) else None


def create_sqlite_store(tracking_uri: str) -> None:
    """Create a local SQLite store that does not exist yet, all at once.

    MLflow creates its tables and runs its migrations in place, in seconds: a second process that opens the
    same file meanwhile (a second study, ``mlflow ui``, a script reading the runs) finds half a schema and
    tries to create it too, and one of them fails ("table ... already exists"). So the store is built under a
    name of its own and linked into place complete; a process that loses that race opens the winner's store.
    Any other tracking URI, or a file that exists, is left alone.
    """
    database = sqlite_file(tracking_uri)
    if database is None or database.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    database.parent.mkdir(parents=True, exist_ok=True)
    staging = database.with_name(f".{database.name}.{os.getpid()}.{threading.get_ident()}.creating")
    staging_uri = f"sqlite:///{staging}"
    try:
        MlflowClient(tracking_uri=staging_uri).search_experiments(max_results=1)  # creates and migrates it
        # MLflow caches one engine per database (a private map): close the copy's, where this MLflow has that map;
        # an engine left open on the copy only holds a file handle, so a newer MLflow without it still works.
        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(staging_uri, None)
        if engine is not None:
            engine.dispose()
        with contextlib.suppress(FileExistsError):  # another process linked its own first: use that one
            os.link(staging, database)
    finally:
        staging.unlink(missing_ok=True)


def write_csv(path: Path, rows: Sequence[Mapping[str, float]]) -> None:
    columns = ["iteration", *[key for key in CURVES if any(key in row for row in rows)]]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


class MlflowTrialCallback(Callback):
    """Forwards Tune's view of each trial to :class:`StudyTracker` (runs in the study's driver).

    Tune's event loop must not wait for MLflow: while a callback runs, no trial's result is fetched, and Ray
    Train's hand-over of a trial's last result to Tune can then stall for good (a Tune trial whose
    TorchTrainer finished while its last report still waited to be fetched). So each event only becomes an
    action in its trial's queue -- open the run, log metrics, finish -- and one writer thread (still a
    single writer) applies the queues in order. While the server is away the writer keeps the actions (in
    memory and in Tune's experiment state, :meth:`get_state`) and tries again every few seconds; when the
    phase ends, :meth:`on_experiment_end` waits for everything to be logged, as long as the writer makes
    progress or the server has been away for less than the tracker's patience.
    Applying an action twice changes nothing (runs are found by tag, an evaluation at or below the run's last
    logged step is skipped, metrics keep the timestamp of the report), so kept actions are safe to replay
    after a resume.
    """

    RETRY_EVERY_S = 2.0

    def __init__(self, tracker: StudyTracker, phase: str, describe: Any, budget: int) -> None:
        self.tracker = tracker
        self.budget = budget  # iterations of a full trial; a trial that ended before them was stopped early
        self.phase = phase
        self.describe = describe  # trial config -> (run name, params)
        self.started: dict[str, float] = {}
        self.reported: set[str] = set()  # trials whose first report has been seen
        self.pending: dict[str, list[tuple[Any, ...]]] = {}  # trial id -> actions not yet logged, in order
        self._runtime()

    def _runtime(self) -> None:
        """What lives only while the driver runs (not pickled with the Tuner)."""
        self.run_ids: dict[str, str] = {}  # the writer's: trial id -> MLflow run id
        self.last_steps: dict[str, int] = {}  # the writer's: trial id -> last evaluation logged
        self._opened: set[str] = set()  # trials whose run is opened or queued to be
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._away: tuple[float, str] | None = None  # since when, and why, the server has been away
        self._progress_at = 0.0  # when the writer last logged an action

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracker", "budget", "phase", "describe", "started", "reported", "pending")
        with self._lock:
            return {key: self.__dict__[key] for key in keep} | {"pending": self._snapshot()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runtime()

    # ------------------------------------------------------------- Tune events
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.started[trial.trial_id] = time.time()
        self._queue(trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        now = int(time.time() * 1000)
        actions: list[tuple[Any, ...]] = []
        if RESUMED_AT in result:  # the trial restarted from a checkpoint: where, on the curve's own axis ...
            actions.append(("metrics", {RESUMED_AT: result[RESUMED_AT]}, int(result[RESUMED_AT]), now))
            for row in json.loads(result.get(REPLAYED, "[]")):  # ... and its evaluations before (logged if missing)
                actions.append(("evaluation", int(row["iteration"]), evaluation_values(row), now))
        if WORKER_STARTED_AT in result and trial.trial_id in self.started and trial.trial_id not in self.reported:
            # Trial start to the moment its worker began running the trial's code: what Ray adds per trial (the
            # data loading and evaluations that follow are the engine's).
            self.reported.add(trial.trial_id)
            startup = float(result[WORKER_STARTED_AT]) - self.started[trial.trial_id]
            actions.append(("metrics", {RAY_STARTUP: startup}, 0, now))
        if not is_evaluation(result):
            if actions:
                self._queue(trial, *actions)
            return  # a checkpoint written between evaluations: no curves
        actions.append(("evaluation", int(result["iteration"]), evaluation_values(result), now))
        self._queue(trial, *actions)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        reached = int((trial.last_result or {}).get("iteration", 0))
        self._queue(trial, self._finish(trial, STATUS_STOPPED if reached < self.budget else STATUS_COMPLETED))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._queue(trial, self._finish(trial, STATUS_FAILED))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """The phase is over: wait until every kept result is logged, as long as the server answers (or has been
        away for less than the tracker's patience)."""
        if self.pending:
            self._start_writer()
            if self._away is not None:
                log.info("waiting up to %.0f s for the MLflow server at %s to log the results of %d trials",
                         self.tracker.patience, self.tracker.where, len(self.pending))
        try:
            if not self.drain(self.tracker.patience):
                with self._lock:
                    left, trials_left = sum(map(len, self.pending.values())), len(self.pending)
                reason = self._away[1] if self._away else "no answer"
                raise TrackingUnavailable(f"the MLflow server at {self.tracker.where} is unreachable ({reason}), "
                                          f"with {left} results of {trials_left} trials still to log")
        finally:
            self._stop.set()
            self._wake.set()
            if self._writer is not None:
                self._writer.join(timeout=60)

    # Kept actions survive a driver restart with Tune's experiment state, and are replayed on resume.
    def get_state(self) -> dict[str, Any] | None:
        with self._lock:
            return {"pending": self._snapshot()}

    def set_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.pending = {trial_id: list(actions) for trial_id, actions in state.get("pending", {}).items()}

    def drain(self, timeout: float) -> bool:
        """Wait until the writer has logged every kept action (True), failed, or logged nothing for ``timeout``
        seconds (a slow server with a long backlog is waited for as long as it makes progress)."""
        started = time.monotonic()
        while self.pending and self._failure is None:
            if time.monotonic() - max(started, self._progress_at) > timeout:
                break
            time.sleep(0.1)
        self._raise_failure()
        return not self.pending

    # ------------------------------------------------------------- the queue and its writer
    def _snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return {trial_id: list(actions) for trial_id, actions in self.pending.items()}

    @staticmethod
    def _finish(trial: Trial, status: str) -> tuple[Any, ...]:
        final = {key: float(value) for key, value in (trial.last_result or {}).items()
                 if key in (*FINAL_METRICS, "iteration", "seconds") and value is not None}
        return ("finish", status, final, int(time.time() * 1000))

    def _queue(self, trial: Trial, *actions: tuple[Any, ...]) -> None:
        self._raise_failure()
        with self._lock:
            queue = self.pending.setdefault(trial.trial_id, [])
            if trial.trial_id not in self._opened:
                self._opened.add(trial.trial_id)
                name, params = self.describe(trial.config)
                queue.append(("open", name, dict(params)))
            queue.extend(actions)
        self._start_writer()
        self._wake.set()

    def _raise_failure(self) -> None:
        """An error the writer met that waiting does not cure (a refused permission, a bug) stops the study,
        as it would have had the callback logged directly."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _start_writer(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            self._stop.clear()
            self._writer = threading.Thread(target=self._write, name=f"mlflow-{self.phase}", daemon=True)
            self._writer.start()

    def _next(self) -> tuple[str, tuple[Any, ...]] | None:
        with self._lock:
            return next(((trial_id, actions[0]) for trial_id, actions in self.pending.items() if actions), None)

    def _write(self) -> None:
        while True:
            item = self._next()
            if item is None:
                if self._stop.is_set():
                    return
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            trial_id, action = item
            try:
                with self.tracker.impatient():
                    self._apply(trial_id, action)
            except TrackingUnavailable as error:
                if self._away is None:
                    self._away = (time.monotonic(), error.reason)
                    log.warning("%s; the study goes on and keeps its trial results to log when the server is back",
                                error)
                if self._stop.wait(timeout=self.RETRY_EVERY_S):  # the phase ended and stopped waiting for it
                    return
                continue
            except BaseException as error:  # noqa: BLE001 - handed to Tune's thread, which raises it
                self._failure = error
                return
            self._progress_at = time.monotonic()
            with self._lock:
                actions = self.pending.get(trial_id)
                if actions and actions[0] is action:
                    actions.pop(0)
                    if not actions:
                        del self.pending[trial_id]
            if self._away is not None:
                log.warning("MLflow server at %s is back after %.0f s; logging the results kept meanwhile",
                            self.tracker.where, time.monotonic() - self._away[0])
                self._away = None

    def _apply(self, trial_id: str, action: tuple[Any, ...]) -> None:
        kind = action[0]
        if kind == "open":
            _, name, params = action
            run_id = self.tracker.trial_run(trial_id, name, params, self.phase)
            self.run_ids[trial_id] = run_id
            self.last_steps[trial_id] = self.tracker.last_step(run_id)
            return
        run_id = self._run_id(trial_id)
        if kind == "metrics":
            _, values, step, timestamp = action
            self.tracker.log_metrics(run_id, values, step, timestamp)
        elif kind == "evaluation":
            _, step, values, timestamp = action
            if step > self.last_steps.get(trial_id, -1):  # never twice after a resume
                self.tracker.log_metrics(run_id, values, step, timestamp)
                self.last_steps[trial_id] = step
        elif kind == "finish":
            _, status, final, timestamp = action
            self.tracker.finish_trial(run_id, status, final, timestamp)

    def _run_id(self, trial_id: str) -> str:
        """The run of a trial whose "open" action was applied, perhaps before a resume of the driver."""
        if trial_id not in self.run_ids:
            run_id = self.tracker.find_trial_run(trial_id)
            if run_id is None:
                raise RuntimeError(f"trial {trial_id} has results to log but no MLflow run")
            self.run_ids[trial_id] = run_id
            self.last_steps[trial_id] = self.tracker.last_step(run_id)
        return self.run_ids[trial_id]
