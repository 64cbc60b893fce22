"""The same study runs as a Ray job on a `ray start --head` cluster over loopback, torn down after."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RAY, REPO, smoke_args, study_env
from mlflow.tracking import MlflowClient

from study.local_cluster import cluster_env, free_port, ray_token

TINY = ("--set", "groups.archs=[resnet20]", "--set", "search.trials_per_group=2", "--set", "search.initial_points=[]",
        "--set", "train.iterations=100", "--set", "train.final_seeds=0")


def _trial_runs(db: Path, study: str) -> list:
    if not db.exists():
        return []
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("resnet.role") != "study"]


def _ray_stop() -> None:
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=study_env())


def _start_head(port: int, dashboard: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2"],
                          capture_output=True, text=True, timeout=180, env=cluster_env())


@pytest.mark.deploy
def test_ray_job_stop_ends_the_study_as_killed(cifar_subset: Path, tmp_path: Path) -> None:
    """``ray job stop`` sends SIGTERM: given the grace period the README prescribes, the study stops its trial
    and marks its runs KILLED (exit 143), and the job is STOPPED."""
    port, dashboard = free_port(), free_port()
    ray_token()
    start = _start_head(port, dashboard)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        env, address = {**study_env(), "RAY_AUTH_MODE": "token"}, f"--address=http://127.0.0.1:{dashboard}"
        entrypoint = [sys.executable, "study/run.py", *smoke_args(cifar_subset, *TINY, "--set", "name=stopped",
                      "--set", "search.trials_per_group=1", "--set", "train.iterations=2000",
                      "--set", "search.early_stopping=none",
                      "--set", "search.initial_points=[{lr: 0.1, weight_decay: 1.0e-4}]",
                      "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                      "--set", f"storage={tmp_path}/ray_results")]
        grace = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}})
        submit = subprocess.run([RAY, "job", "submit", address, "--no-wait", "--submission-id", "stopped",
                                 "--working-dir", str(REPO), "--runtime-env-json", grace, "--", *entrypoint],
                                capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        deadline = time.monotonic() + 600
        while not _trial_runs(tmp_path / "mlflow.db", "stopped") and time.monotonic() < deadline:
            time.sleep(2)
        assert _trial_runs(tmp_path / "mlflow.db", "stopped"), "the trial never started"
        time.sleep(10)  # let it train a little
        stop = subprocess.run([RAY, "job", "stop", address, "stopped"], capture_output=True, text=True, timeout=300,
                              env=env)
        assert stop.returncode == 0, stop.stdout[-3000:] + stop.stderr[-3000:]
        logs = subprocess.run([RAY, "job", "logs", address, "stopped"], capture_output=True, text=True, timeout=120,
                              env=env).stdout
        assert "interrupted by SIGTERM after 0 of 1 trials; resume with:" in logs, logs[-3000:]
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        runs = client.search_runs([client.get_experiment_by_name("stopped").experiment_id])
        assert sorted(run.info.status for run in runs) == ["KILLED", "KILLED"]
    finally:
        _ray_stop()


@pytest.mark.e2e  # about 2 minutes on 2 cores: after the default suite, with pytest -m e2e
def test_ray_job_submit_to_a_head_node_on_loopback(cifar_subset: Path, tmp_path: Path) -> None:
    port, dashboard = free_port(), free_port()
    env = study_env()
    # Token authentication is on only where RAY_AUTH_MODE=token (or, unset, where a token file already
    # exists): say so explicitly, with a token generated first, as deploy/README.md does.
    ray_token()
    start = _start_head(port, dashboard)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        entrypoint = [sys.executable, "study/run.py", *smoke_args(cifar_subset, *TINY, "--set", "name=job",
                      "--set", "search.trials_per_group=1", "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                      "--set", f"storage={tmp_path}/ray_results")]
        address = f"--address=http://127.0.0.1:{dashboard}"
        # Token authentication is on (Ray's default): a client without the token is refused ...
        refused = subprocess.run([RAY, "job", "list", address], capture_output=True, text=True, timeout=120, env=env)
        assert refused.returncode != 0 and "authentication" in (refused.stdout + refused.stderr).lower()
        # ... and one that sends the token `ray start` wrote to ~/.ray/auth_token is served.
        submit = subprocess.run([RAY, "job", "submit", address, "--working-dir", str(REPO), "--", *entrypoint],
                                capture_output=True, text=True, timeout=900, env={**env, "RAY_AUTH_MODE": "token"},
                                cwd=REPO)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        assert "Study job finished" in submit.stdout
        assert "succeeded" in submit.stdout
        # What `ray job logs --follow` shows is the study's console: a line per trial start and end and the status
        # line with its ETA, not Ray's trial tables or its workers' logs.
        assert "start resnet20-A lr=" in submit.stdout and "end   resnet20-A lr=" in submit.stdout
        assert "[search 1/1 done, 0 running, 0 pending | " in submit.stdout
        assert " | resnet20-A 1/1 best val " in submit.stdout
        assert "Trial status:" not in submit.stdout and "RayTrainWorker pid=" not in submit.stdout
        runs = _trial_runs(tmp_path / "mlflow.db", "job")
        assert len(runs) == 1 and runs[0].data.tags["status"] in ("completed", "stopped early")
        # Artifacts live next to the database, not in the job's temporary working directory.
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        assert {"metrics.csv", "curves.png"} <= {a.path for a in client.list_artifacts(runs[0].info.run_id)}
        assert any((tmp_path / "mlruns").rglob("metrics.csv"))
    finally:
        _ray_stop()
