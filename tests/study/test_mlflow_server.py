"""The study against an MLflow tracking server with basic authentication on loopback (the ``mlflow_server``
fixture): it logs over HTTP with credentials from the environment, artifacts go through the server, a client
without credentials is refused, wrong credentials and an unreachable server are one-line errors before Ray
starts, and a server restarted in the middle of a study loses no trial result.

The tests that start a server or a study are marked ``deploy``: ``pytest -m deploy tests/study``; they share
one study, during which the server is restarted. The callback's keep-and-replay logic is also tested without
a server, against a local store that fails on demand.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from conftest import RUN, MlflowServer, free_port, smoke_args, study_env
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (INVALID_PARAMETER_VALUE, PERMISSION_DENIED, TEMPORARILY_UNAVAILABLE,
                                          UNAUTHENTICATED)
from mlflow.tracking import MlflowClient

from resnet_core import ResnetCoreError
from study.mlflow_server import TrackingUnavailable, address, check_server, transient_reason
from study.tracking import MlflowTrialCallback, StudyTracker
from study.trial import WORKER_STARTED_AT

TINY = ("--set", "groups.archs=[resnet20]", "--set", "search.trials_per_group=2", "--set", "search.initial_points=[]",
        "--set", "train.iterations=100", "--set", "train.final_seeds=0")
PREFLIGHT_LIMIT_S = 30
"""Exit within this after the start, torch's import included (4-7 s on an idle 2-core machine; the check
itself is bounded by study.mlflow_server.PREFLIGHT_TIMEOUT_S)."""


def _study(data: Path, name: str, uri: str, *extra: str) -> list[str]:
    return [sys.executable, str(RUN), *smoke_args(data, *TINY, "--set", f"name={name}",
                                                  "--set", f"mlflow.tracking_uri={uri}", *extra)]


def _client(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a poll during a restart fails fast
    return MlflowClient(server.url)


def _trial_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], max_results=200)
    return [r for r in runs if r.data.tags.get("resnet.role") != "study"]


def _ray_reports(folder: Path, study: str) -> dict[str, list[int]]:
    """Tune's own record of each search trial: trial id -> iterations reported (its result.json)."""
    reports: dict[str, list[int]] = {}
    for path in (folder / "ray_results" / study / "search").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [row for row in rows if "iteration" in row]
        if rows:
            reports[rows[0]["trial_id"]] = [int(row["iteration"]) for row in rows]
    return reports


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("study/run.py: error: ")
    return lines[0]


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


# ------------------------------------------------- a study on the server, which restarts in the middle
RESTARTED = ("--set", "train.iterations=150", "--set", "train.eval_every=25", "--set", "search.early_stopping=none",
             "--set", "search.grace_evals=6", "--set", "search.lr.high=0.3",
             "--set", "resources.workers_per_trial=1", "--set", "resources.cpus_per_worker=0.9")
"""Six evaluations per trial, no early stop; one worker per trial, two trials at once on two cores."""


OUTAGE_LIMIT_S = 90.0
"""Longest the server stays stopped: well inside the driver's patience (study.mlflow_server.PATIENCE_S)."""


def _outage_warning(url: str) -> str:
    """What the study's driver logs when it finds the server at ``url`` away (study.mlflow_server)."""
    return f"MLflow server at {url} is unreachable"


@dataclass
class Served:
    folder: Path
    code: int
    output: str
    first_metric_s: float
    away_s: float
    total_s: float


def _first_evaluation_logged(db: Path) -> bool:
    """Whether the server has stored a validation error yet, read from its database with plain read-only SQL:
    polling through the API would add password checks to a server that shares two busy cores."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT 1 FROM metrics WHERE key = 'val_error' LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False


def _driver_lines(output: str) -> list[str]:
    """The study driver's own output, without the lines Ray relays from its worker processes."""
    return [line for line in output.splitlines() if "pid=" not in line[:80] and "(raylet)" not in line[:40]]


def _away_until_seen(server: MlflowServer, study: subprocess.Popen, log: Path) -> float:
    """Stop the server until the study's driver has found it away (its next tracking call comes with the next
    evaluation, whose timing depends on the machine), at most OUTAGE_LIMIT_S, then start it again; the seconds
    it was away. A fixed-length outage can fall between two evaluations and go unseen."""
    away = time.monotonic()
    server.stop()
    try:
        while time.monotonic() - away < OUTAGE_LIMIT_S and study.poll() is None:
            if _outage_warning(server.url) in log.read_text():
                break
            time.sleep(0.5)
        time.sleep(2)  # a retry or two against the stopped server
    finally:
        server.start()
    return time.monotonic() - away


@pytest.fixture(scope="module")
def served(mlflow_server: MlflowServer, cifar_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The tiny study logging to the server as the admin, credentials in its environment only; once the
    first evaluation is on the server, the server is stopped until the driver has seen it away, then started
    again, while the trials go on training and reporting."""
    folder = tmp_path_factory.mktemp("served")
    command = _study(cifar_subset, "served", mlflow_server.url, *RESTARTED)
    started = time.monotonic()
    with (folder / "study.log").open("w") as log:
        study = subprocess.Popen(command, cwd=folder, env=mlflow_server.client_env(), stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            first = None
            while first is None and study.poll() is None and time.monotonic() - started < 600:
                time.sleep(1)
                if _first_evaluation_logged(mlflow_server.folder / "mlflow.db"):
                    first = time.monotonic() - started
            assert first is not None, (folder / "study.log").read_text()[-3000:]
            away = _away_until_seen(mlflow_server, study, folder / "study.log")
            code = study.wait(timeout=900)
        finally:
            if study.poll() is None:
                study.kill()
                study.wait()
    served = Served(folder, code, (folder / "study.log").read_text(), first, away, time.monotonic() - started)
    print(f"\nstudy 'served' against {mlflow_server.url}: first metric on the server after {first:.0f} s, server "
          f"restarted (away {away:.1f} s), exit {code} after {served.total_s:.0f} s")
    return served


@pytest.mark.deploy
def test_study_logs_to_the_server_over_http(served: Served, mlflow_server: MlflowServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert served.code == 0, served.output[-4000:]
    assert f"MLflow: {mlflow_server.url}" in served.output
    assert mlflow_server.password not in served.output
    client = _client(mlflow_server, monkeypatch)
    runs = _trial_runs(client, "served")
    assert len(runs) == 2
    for run in runs:
        assert {"arch", "depth", "lr", "weight_decay", "seed", "group"} <= set(run.data.params)
    parent = client.search_runs([runs[0].info.experiment_id], "tags.`resnet.role` = 'study'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert {"spec.yaml", "report"} <= {a.path for a in client.list_artifacts(parent[0].info.run_id)}


@pytest.mark.deploy
def test_artifacts_are_served_and_stored_by_the_server(served: Served, mlflow_server: MlflowServer,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert served.code == 0, served.output[-4000:]
    client = _client(mlflow_server, monkeypatch)
    for run in _trial_runs(client, "served"):
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
        into = tmp_path / run.info.run_id
        into.mkdir()
        csv_file = Path(client.download_artifacts(run.info.run_id, "metrics.csv", str(into)))
        png_file = Path(client.download_artifacts(run.info.run_id, "curves.png", str(into)))
        assert csv_file.read_text().startswith("iteration,")
        assert png_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        stored = list(mlflow_server.artifacts.rglob(f"{run.info.run_id}/artifacts/metrics.csv"))
        assert len(stored) == 1 and stored[0].read_bytes() == csv_file.read_bytes()
    # Nothing of MLflow's is left in the study's working directory.
    assert not [p for p in served.folder.rglob("*") if p.name in ("mlruns", "mlartifacts", "mlflow.db", "metrics.csv")]


@pytest.mark.deploy
def test_a_server_restart_in_the_middle_of_a_study_loses_nothing(served: Served, mlflow_server: MlflowServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every evaluation Tune recorded for a trial is on the server once, the trial's status tag and artifacts
    too, and no trial has two runs."""
    assert served.code == 0, served.output[-4000:]
    driver = "\n".join(_driver_lines(served.output))
    assert "Traceback" not in driver, driver[-4000:]
    assert _outage_warning(mlflow_server.url) in driver  # the outage was seen ...
    assert "is back after" in driver  # ... and got over
    client = _client(mlflow_server, monkeypatch)
    runs = _trial_runs(client, "served")
    reports = _ray_reports(served.folder, "served")
    assert len(reports) == 2
    assert sorted(r.data.tags["resnet.trial_id"] for r in runs) == sorted(reports)  # one run per trial
    for run in runs:
        expected = reports[run.data.tags["resnet.trial_id"]]
        assert expected[0] == 25 and expected == sorted(set(expected)), expected
        assert run.data.tags["status"] == ("completed" if expected[-1] == 150 else "stopped early")
        assert run.info.status == "FINISHED"
        for curve in ("val_error", "train_error", "test_error", "lr"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, curve)]
            assert sorted(steps) == expected, (run.info.run_name, curve, steps)  # every point, once
        assert {"metrics.csv", "curves.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.deploy
def test_a_request_without_credentials_is_refused(mlflow_server: MlflowServer) -> None:
    url = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(url) == 401
    assert _get(url, mlflow_server.username, "not-the-password") == 401
    assert _get(url, mlflow_server.username, mlflow_server.password) == 200


@pytest.mark.deploy
@pytest.mark.parametrize("password", ["not-the-password", None])
def test_wrong_or_missing_credentials_are_one_line_before_ray_starts(
        password: str | None, mlflow_server: MlflowServer, cifar_subset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = mlflow_server.client_env(MLFLOW_TRACKING_PASSWORD=password or "")
    if password is None:
        env = {key: value for key, value in env.items() if not key.startswith("MLFLOW_TRACKING_")}
    started = time.monotonic()
    result = subprocess.run(_study(cifar_subset, "refused", mlflow_server.url), cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    print(f"\n{'wrong' if password else 'missing'} credentials: exit {result.returncode} in {seconds:.1f} s")
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "authentication" in line and "(401" in line and mlflow_server.url in line, line
    assert "MLFLOW_TRACKING_USERNAME" in line and "MLFLOW_TRACKING_PASSWORD" in line
    assert seconds < PREFLIGHT_LIMIT_S
    assert "Ray" not in result.stdout + result.stderr and not (tmp_path / "ray_results").exists()
    assert _client(mlflow_server, monkeypatch).get_experiment_by_name("refused") is None  # no run, no experiment


def _credentials_file(home: Path, username: str, password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.mlflow/credentials as ``mlflow login`` writes it, with the environment's credentials unset."""
    (home / ".mlflow").mkdir(parents=True)
    (home / ".mlflow" / "credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = {username}\nmlflow_tracking_password = {password}\n")
    monkeypatch.setenv("HOME", str(home))
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)


@pytest.mark.deploy
def test_the_preflight_check_reads_credentials_as_mlflow_does(mlflow_server: MlflowServer, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-flight check sends what MLflow's client would: here the credentials of ~/.mlflow/credentials."""
    _credentials_file(tmp_path / "right", mlflow_server.username, mlflow_server.password, monkeypatch)
    check_server(mlflow_server.url)  # accepted: no error
    _credentials_file(tmp_path / "wrong", mlflow_server.username, "not-the-password", monkeypatch)
    with pytest.raises(ResnetCoreError, match=r"authentication failed .*\(401"):
        check_server(mlflow_server.url)


@pytest.mark.deploy
def test_an_unreachable_server_is_one_line_within_seconds(cifar_subset: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    result = subprocess.run(_study(cifar_subset, "nowhere", url), cwd=tmp_path, env=study_env(),
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    print(f"\nunreachable server: exit {result.returncode} in {seconds:.1f} s")
    assert result.returncode == 2
    line = _one_line_error(result)
    assert f"cannot reach the MLflow server at {url} (connection refused)" in line, line
    assert seconds < PREFLIGHT_LIMIT_S
    assert not (tmp_path / "ray_results").exists()


# --------------------------------------------------------- without a server: keep, replay, never twice
class _Flaky:
    """An MlflowClient whose server is "away" while ``down`` is set: every call fails as a refused connection."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                try:
                    raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
                except requests.exceptions.ConnectionError as error:
                    raise MlflowException(f"API request failed with exception {error}") from error
            return attribute(*args, **kwargs)

        return call


def _trial(trial_id: str, lr: float, last: dict | None = None) -> Any:
    return SimpleNamespace(trial_id=trial_id, config={"lr": lr}, last_result=last)


def test_results_kept_while_the_server_is_away_are_logged_once_when_it_is_back(tmp_path: Path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "keep", "keep", patience=3)
    flaky = _Flaky(tracker.client)
    tracker.client = flaky
    callback = MlflowTrialCallback(tracker, "search", lambda config: (f"lr={config['lr']}", config), budget=100)
    callback.RETRY_EVERY_S = 0.2
    one, two = _trial("t1", 0.1), _trial("t2", 0.2)

    def report(trial: Any, step: int) -> None:
        trial.last_result = {"iteration": step, "val_error": 90.0 - step / 10, "train_error": 80.0, "lr": 0.1,
                             "seconds": 1.0, WORKER_STARTED_AT: time.time()}  # every report: one metric all the same
        started = time.monotonic()
        callback.on_trial_result(0, [], trial, trial.last_result)
        assert time.monotonic() - started < 0.5  # Tune's loop never waits for MLflow

    callback.on_trial_start(0, [], one)
    report(one, 50)
    assert callback.drain(30)
    flaky.down = True  # the server goes away: nothing raises, everything is kept
    callback.on_trial_start(0, [], two)
    report(one, 100)
    report(two, 50)
    callback.on_trial_complete(0, [], one)
    time.sleep(1)
    assert set(callback.pending) == {"t1", "t2"}
    saved = callback.get_state()

    flaky.down = False  # back: the writer logs what it kept, in order
    assert callback.drain(30)
    report(two, 100)
    callback.on_trial_complete(0, [], two)
    callback.on_experiment_end([])
    assert not callback.pending

    # A resumed driver replays the kept actions from Tune's state: nothing is logged twice.
    again = MlflowTrialCallback(tracker, "search", lambda config: (f"lr={config['lr']}", config), budget=100)
    again.set_state(saved)
    again.on_experiment_end([])
    assert not again.pending

    client = flaky.client
    runs = _trial_runs(client, "keep")
    assert sorted(r.data.tags["resnet.trial_id"] for r in runs) == ["t1", "t2"]
    for run in runs:
        assert run.data.tags["status"] == "completed"
        for curve in ("val_error", "train_error", "lr"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, curve)] == [50, 100]
        startup = client.get_metric_history(run.info.run_id, "ray_startup_seconds")
        assert len(startup) == 1 and 0 <= startup[0].value < 60  # trial start to its worker's start, once
        assert len(client.get_metric_history(run.info.run_id, "final_val_error")) == 1


def test_a_server_away_for_longer_than_the_patience_stops_the_phase_with_one_line(tmp_path: Path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "gone", "gone", patience=2)
    flaky = _Flaky(tracker.client)
    tracker.client = flaky
    callback = MlflowTrialCallback(tracker, "search", lambda config: ("run", config), budget=100)
    flaky.down = True
    trial = _trial("t1", 0.1, {"iteration": 50, "val_error": 80.0, WORKER_STARTED_AT: time.time()})
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, trial.last_result)  # kept: open the run, its start-up, the evaluation
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"unreachable \(connection refused\), with 3 results of 1 trials"
                       ) as error:
        callback.on_experiment_end([])
    assert 2 <= time.monotonic() - started < 10
    assert "\n" not in str(error.value)
    assert set(callback.get_state()["pending"]) == {"t1"}  # still kept, for the next run of the study


def test_an_error_that_waiting_does_not_cure_stops_the_study(tmp_path: Path) -> None:
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "denied", "denied", patience=2)
    callback = MlflowTrialCallback(tracker, "search", lambda config: ("run", config), budget=100)

    def denied(*args: Any, **kwargs: Any) -> None:
        raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    tracker.trial_run = denied  # type: ignore[method-assign]
    trial = _trial("t1", 0.1)
    callback.on_trial_start(0, [], trial)
    with pytest.raises(MlflowException, match="Permission denied"):
        callback.on_experiment_end([])


def test_transient_errors_are_told_from_real_answers() -> None:
    try:
        raise requests.exceptions.ConnectionError("Connection refused")
    except requests.exceptions.ConnectionError as cause:
        wrapped = MlflowException(f"API request failed with exception {cause}")
        wrapped.__context__ = cause
    assert transient_reason(wrapped) == "connection refused"
    assert transient_reason(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE)) == "HTTP 503"
    assert transient_reason(MlflowException("who?", error_code=UNAUTHENTICATED)) is None
    assert transient_reason(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE)) is None


def test_the_server_address_never_shows_credentials() -> None:
    assert address("http://alice:secret@127.0.0.1:5000/") == "http://127.0.0.1:5000"
    with pytest.raises(Exception, match="holds a password") as error:
        check_server("http://alice:secret@127.0.0.1:5000")
    assert "secret" not in str(error.value)
