"""Interruptions and faults, for real, on one trial of plain-20 on real CIFAR-10 images (one worker, a wall-time
checkpoint about every 25 iterations), in both places a trial trains: its own process (the default for one worker,
Ray Train's local mode) and a Ray Train worker group (``resources.worker_group=always``; e2e):

1. the study starts; once a checkpoint between evaluations exists, the process that trains is SIGKILLed: the
   trial (Tune) or its worker group (Ray Train) restarts from that checkpoint; once MLflow has recorded the
   restart, the study gets SIGINT (as Ctrl-C sends it, to the whole process group): it exits 130, says how far it
   got and how to resume, and every MLflow run of the study is KILLED;
2. the printed resume command continues the trial from its last checkpoint; SIGTERM (what ``kill`` and
   ``ray job stop`` send) once it trains again (its restart recorded): exit 143, runs KILLED;
3. the same command again finishes the study: exit 0, one MLflow run per trial, FINISHED, no repeated
   iteration on any curve, each restart recorded at the iteration it restarted from, and the final figures
   equal to those of the same training run done in one go.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import RUN, smoke_args, study_env
from mlflow.tracking import MlflowClient

from resnet_core import fit, load_image_dataset
from study.spec import load_spec
from study.trial import RESUMED_AT, trial_train_config

ITERATIONS = 200
ONE_TRIAL = ("--set", "groups.archs=[plain20]", "--set", "search.trials_per_group=1",
             "--set", "search.initial_points=[{lr: 0.1, weight_decay: 1.0e-4}]", "--set", "search.early_stopping=none",
             "--set", f"train.iterations={ITERATIONS}", "--set", "train.eval_every=100", "--set", "train.final_seeds=0",
             "--set", "train.checkpoint_minutes=0.005", "--set", "resources.workers_per_trial=1",
             "--set", "resources.cpus_per_worker=0.9")
"""One search trial of 200 iterations, evaluated at 100 and 200, checkpointed at every clock check (25 iterations)."""


def _start(folder: Path, args: list[str], log_name: str) -> subprocess.Popen:
    log = (folder / log_name).open("w")
    return subprocess.Popen(args, cwd=folder, env=study_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_for(what: str, condition: Callable[[], bool], driver: subprocess.Popen, log: Path,
              timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if driver.poll() is not None:
            pytest.fail(f"the study exited ({driver.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(1)


def _latest_checkpoint(folder: Path, worker_group: str) -> int:
    """The iteration of the newest checkpoint registered for the trial (0 if none): the one a restart gets. A worker
    group's is in Ray Train's checkpoint manager snapshot; a trial training in its own process reports its
    checkpoints to Tune, whose result log names the checkpoint of each result it has taken in. (A checkpoint a
    worker has written but Ray not yet taken in is not one.)"""
    if worker_group == "always":
        for snapshot in (folder / "ray_results").glob("smoke/train/*/checkpoint_manager_snapshot.json"):
            with contextlib.suppress(OSError, ValueError):  # being rewritten: look again later
                latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
                return int(latest.get("metrics", {}).get("iteration", 0))
        return 0
    latest = 0
    for results in (folder / "ray_results").glob("smoke/search/trial_driver_*/result.json"):
        with contextlib.suppress(OSError):
            for line in results.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line being written: look again later
                    row = json.loads(line)
                    if row.get("checkpoint_dir_name"):
                        latest = int(row["iteration"])
    return latest


def _training_processes(worker_group: str) -> list[psutil.Process]:
    """The processes that train the trial: its worker group's workers, or the Tune trial's own process."""
    name = "ray::RayTrainWorker" if worker_group == "always" else "ray::ImplicitFunc"
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if (process.info["cmdline"] or [""])[0].startswith(name):
                found.append(process)
    return found


def _run_statuses(folder: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(f"file:{folder / 'mlflow.db'}?mode=ro", uri=True, timeout=5)) as db:
        return dict(db.execute("SELECT name, status FROM runs"))


def _restarts_logged(folder: Path) -> int:
    """How often the trial's restart from a checkpoint has reached MLflow: it trains again after it."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{folder / 'mlflow.db'}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM metrics WHERE key = ?", (RESUMED_AT,)).fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked by the writer: ask again
        return 0


def _stop(driver: subprocess.Popen, number: int, group: bool) -> int:
    (os.killpg if group else os.kill)(driver.pid, number)
    try:
        return driver.wait(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=["auto", pytest.param("always", marks=pytest.mark.e2e)])
def interrupted(request: pytest.FixtureRequest, cifar_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    worker_group = request.param
    folder = tmp_path_factory.mktemp(f"interrupted-{worker_group}")
    args = smoke_args(cifar_subset, *ONE_TRIAL, "--set", f"resources.worker_group={worker_group}")
    command = [sys.executable, str(RUN), *args]
    seen: dict = {"folder": folder, "started": time.monotonic(), "worker_group": worker_group, "args": args}

    def latest() -> int:
        return _latest_checkpoint(folder, worker_group)

    first = _start(folder, command, "first.log")
    _wait_for("a checkpoint between evaluations", lambda: 0 < latest() < 100, first, folder / "first.log")
    seen["killed_worker_after"] = latest()
    workers = _training_processes(worker_group)
    assert len(workers) == 1, workers
    workers[0].send_signal(signal.SIGKILL)
    _wait_for("the restart recorded in MLflow", lambda: _restarts_logged(folder) == 1, first, folder / "first.log")
    seen["sigint_code"] = _stop(first, signal.SIGINT, group=True)
    seen["sigint_after"] = latest()  # the last checkpoint the interrupted trial left
    seen["first_log"] = (folder / "first.log").read_text()
    seen["after_sigint"] = _run_statuses(folder)

    line = [text for text in seen["first_log"].splitlines() if "resume with:" in text]
    assert line, seen["first_log"][-4000:]
    resume = line[-1].split("resume with: ", 1)[1]
    seen["resume_command"] = resume
    second = _start(folder, ["bash", "-c", resume.replace(" && ", " && exec ", 1)], "second.log")  # kill reaches it
    _wait_for("the resumed trial's restart recorded in MLflow", lambda: _restarts_logged(folder) == 2, second,
              folder / "second.log")
    seen["sigterm_code"] = _stop(second, signal.SIGTERM, group=False)
    seen["sigterm_after"] = latest()
    seen["second_log"] = (folder / "second.log").read_text()
    seen["after_sigterm"] = _run_statuses(folder)

    third = subprocess.run(["bash", "-c", resume], cwd=folder, env=study_env(), capture_output=True, text=True,
                           timeout=900)
    seen["third"] = third
    seen["seconds"] = time.monotonic() - seen["started"]
    print(f"\nkill, interrupt and resume scenario (worker_group={worker_group}): {seen['seconds']:.0f} s")
    return seen


def test_sigint_stops_the_study_truthfully(interrupted: dict) -> None:
    assert interrupted["sigint_code"] == 130, interrupted["first_log"][-4000:]
    last = [line for line in interrupted["first_log"].splitlines() if line.strip()][-1]
    assert re.fullmatch(r"study/run\.py: interrupted by SIGINT after 0 of 1 trials; resume with: cd .+ && .+run\.py .+",
                        last), last
    assert "finished" not in interrupted["first_log"]
    # The console says which trial was cut and counts it so; Tune's own advice (Tuner.restore) is not shown.
    assert re.search(rf"end   plain20 .+: interrupted at [\d,]+/{ITERATIONS} iterations, .+ \(resuming the study "
                     r"continues it\)", interrupted["first_log"]), interrupted["first_log"][-4000:]
    assert "[search 0/1 done, 1 interrupted, 0 running, 0 pending | " in interrupted["first_log"]
    assert "Tuner.restore" not in interrupted["first_log"] and "Stop signal received" not in interrupted["first_log"]
    if interrupted["worker_group"] == "auto":  # Tune restarts the killed trial process (Ray Train a worker group's)
        # The fault is one line that names it, not Tune's traceback.
        assert re.search(r"fault plain20 .+ at [\d,]+/\d+ iterations, .+; restarting it from its last checkpoint",
                         interrupted["first_log"]), interrupted["first_log"][-4000:]
        assert "Trial task failed" not in interrupted["first_log"] and "Traceback" not in interrupted["first_log"]
    assert set(interrupted["after_sigint"].values()) == {"KILLED"}, interrupted["after_sigint"]
    assert len(interrupted["after_sigint"]) == 2  # the study's run and its one trial


def test_sigterm_stops_the_resumed_study_truthfully(interrupted: dict) -> None:
    assert interrupted["sigterm_code"] == 143, interrupted["second_log"][-4000:]
    assert "interrupted by SIGTERM after 0 of 1 trials; resume with: " in interrupted["second_log"]
    assert set(interrupted["after_sigterm"].values()) == {"KILLED"}, interrupted["after_sigterm"]


def test_a_killed_worker_and_each_resume_continue_from_the_last_checkpoint(interrupted: dict) -> None:
    third = interrupted["third"]
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "Study smoke finished" in third.stdout
    client = MlflowClient(f"sqlite:///{interrupted['folder'] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FINISHED", "FINISHED"]  # one run per trial, no duplicate
    trial = next(run for run in runs if run.data.tags.get("resnet.role") != "study")
    assert trial.data.tags["status"] == "completed" and trial.data.tags["resnet.optuna_state"] == "COMPLETE"
    for curve in ("val_error", "test_error", "train_loss", "test_top5_error", "val_top5_error"):
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, curve)]
        assert steps == [100, 200], (curve, steps)  # each evaluation once, although parts were trained thrice
    restarts = [m.value for m in sorted(client.get_metric_history(trial.info.run_id, RESUMED_AT),
                                        key=lambda metric: metric.timestamp)]
    # the worker group restarted from the checkpoint before the kill (or one registered while the kill was on its
    # way); each resume of the study from the last checkpoint the interrupted run left: never from iteration 0
    assert len(restarts) == 3, restarts
    assert interrupted["killed_worker_after"] <= restarts[0] <= interrupted["killed_worker_after"] + 25
    assert restarts[1:] == [interrupted["sigint_after"], interrupted["sigterm_after"]]


def test_the_resumed_trial_ends_exactly_where_an_uninterrupted_one_does(interrupted: dict, cifar_subset: Path) -> None:
    folder = interrupted["folder"]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    trial = next(run for run in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
                 if run.data.tags.get("resnet.role") != "study")
    spec = load_spec(Path(RUN).parent / "specs" / "smoke.yaml", [*smoke_args(cifar_subset, *ONE_TRIAL)[3::2]])
    _, config = trial_train_config(spec, {"group": "plain20", "lr": 0.1, "weight_decay": 1e-4})
    data = load_image_dataset(cifar_subset, download=False)
    final = fit(config.replace(device="cpu", threads=1), data=data).final  # Ray gives each worker one thread
    for key in ("val_error", "test_error", "train_loss", "train_error"):
        logged = client.get_metric_history(trial.info.run_id, key)[-1]
        assert logged.step == ITERATIONS and logged.value == pytest.approx(getattr(final, key), abs=1e-9), key


def test_resuming_with_a_changed_spec_is_refused_in_one_line(interrupted: dict, cifar_subset: Path) -> None:
    folder = interrupted["folder"]
    before = _run_statuses(folder)
    changed = subprocess.run([sys.executable, str(RUN), *interrupted["args"], "--set", "train.iterations=300"],
                             cwd=folder, env=study_env(), capture_output=True, text=True, timeout=300)
    assert changed.returncode == 2, changed.stderr[-3000:]
    errors = [line for line in changed.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "train.iterations (200 -> 300)" in errors[0] and "--set name=" in errors[0], errors
    assert "Traceback" not in changed.stderr and _run_statuses(folder) == before
