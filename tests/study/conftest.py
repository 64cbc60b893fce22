"""Fixtures of the study tests: a real CIFAR-10 subset in the official python format, how to run
``study/run.py`` as a user would (a subprocess in a scratch directory), and an MLflow tracking server with
basic authentication on loopback."""

from __future__ import annotations

import base64
import os
import pickle
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from resnet_core import load_image_dataset
from study.local_cluster import free_port  # noqa: F401  (one free-port helper; test_mlflow_server imports it here)

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
RAY = str(Path(sys.executable).with_name("ray"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
SMOKE = REPO / "study" / "specs" / "smoke.yaml"


@pytest.fixture(scope="session")
def cifar_subset(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 training and 1,000 test images drawn from the CIFAR-10 JPEG copy, written as the official
    python archive folder, so each smoke trial trains on real images but evaluates in about a second."""
    data = load_image_dataset(real_data_dir / "cifar10-jpeg.tar.gz", cache_dir=tmp_path_factory.mktemp("cache"))
    rng = np.random.default_rng(0)
    train = rng.permutation(len(data.train_labels))[:6000]
    test = rng.permutation(len(data.test_labels))[:1000]
    folder = tmp_path_factory.mktemp("cifar-subset") / "cifar-10-batches-py"
    folder.mkdir()
    images = data.train_images.numpy()[train].reshape(len(train), -1)
    labels = data.train_labels.numpy()[train]
    for index, part in enumerate(np.array_split(np.arange(len(train)), 5), start=1):
        with (folder / f"data_batch_{index}").open("wb") as stream:
            pickle.dump({b"data": images[part], b"labels": labels[part].tolist()}, stream)
    with (folder / "test_batch").open("wb") as stream:
        pickle.dump({b"data": data.test_images.numpy()[test].reshape(len(test), -1),
                     b"labels": data.test_labels.numpy()[test].tolist()}, stream)
    with (folder / "batches.meta").open("wb") as stream:
        pickle.dump({b"label_names": [name.encode() for name in data.classes]}, stream)
    return folder.parent


def study_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_study(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python study/run.py ARGS`` in ``cwd``; output captured, one local Ray per call."""
    return subprocess.run([sys.executable, str(RUN), *args], cwd=cwd, env=study_env(), capture_output=True,
                          text=True, timeout=timeout)


def smoke_args(data: Path, *extra: str) -> list[str]:
    return ["--spec", str(SMOKE), "--set", f"dataset.path={data}", "--set", "dataset.val_split=1000", *extra]


@dataclass
class MlflowServer:
    """``mlflow server`` with basic auth (a test-chosen admin), a SQLite backend and served artifacts, all under
    ``folder``, on 127.0.0.1:``port``; ``stop()`` then ``start()`` restarts it on the same port and stores."""

    folder: Path
    port: int
    username: str = "study-admin"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)  # the UI's CSRF key
    process: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def client_env(self, **extra: str) -> dict[str, str]:
        """The environment of a study that logs here as the admin."""
        return {**study_env(), "MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password,
                **extra}

    def _write_auth_config(self) -> Path:
        config = self.folder / "basic_auth.ini"
        config.write_text("[mlflow]\n"
                          "default_permission = READ\n"
                          f"database_uri = sqlite:///{self.folder / 'auth.db'}\n"
                          f"admin_username = {self.username}\n"
                          f"admin_password = {self.password}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        config.chmod(0o600)
        return config

    def start(self, timeout: float = 180) -> float:
        """Start the server and wait until /health answers; the seconds it took."""
        env = {key: value for key, value in study_env().items() if not key.startswith("MLFLOW_")}
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(self._write_auth_config()),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key,
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no background job workers: keep it light
        command = [MLFLOW, "server", "--app-name", "basic-auth",
                   "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                   "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        started = time.monotonic()
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts + 1}\n")
            log.flush()
            self.process = subprocess.Popen(command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.starts += 1
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self._warm_up()
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def _warm_up(self) -> None:
        """One authenticated request: the server's first one sets up its stores and checks a password hash,
        slowly on a busy machine; a client's first request should not pay for that."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=60):
            pass

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the server's process group (the CLI, uvicorn and its workers), SIGKILL what outlives it."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the CLI's pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(group):
                self.process.poll()
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow server with basic auth for the session (see :class:`MlflowServer`), stopped at the end."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port())
    try:
        seconds = server.start()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    print(f"\nmlflow server up on {server.url} in {seconds:.1f} s")
    try:
        yield server
    finally:
        server.stop()
