"""A Ray cluster of several nodes on this one machine, over loopback: the hand-started cluster of
``deploy/README.md`` in miniature, for trying the cluster path and for its tests and benchmark.

Each node is its own ``ray start --block`` process group (its own raylet and object store, its own logical
CPUs); the head's GCS, dashboard and job API bind to 127.0.0.1. Token authentication is on
(``RAY_AUTH_MODE=token`` on every node, with the token of ``~/.ray/auth_token``, generated if missing), so a
client must send the token: ``RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:PORT ...``.
Stopping kills exactly these process groups: other Ray instances on the machine are left alone.

    with LocalCluster(nodes=2, cpus_per_node=1) as cluster:
        print(cluster.dashboard_url, cluster.node_ids())
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from study.ray_token import ensure_private_token

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_token() -> str:
    """The cluster token of ``~/.ray/auth_token``, generated first (readable by its owner only) if there is none."""
    ensure_private_token()
    done = subprocess.run([RAY, "get-auth-token"], capture_output=True, text=True, timeout=60, check=True,
                          env=cluster_env())
    return done.stdout.strip().splitlines()[-1]


def cluster_env(**extra: str) -> dict[str, str]:
    """This process's environment without its RAY_* variables, with token authentication on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    return {**env, "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1", **extra}


class LocalCluster:
    """``nodes`` Ray nodes on loopback with ``cpus_per_node`` logical CPUs each; a context manager."""

    def __init__(self, nodes: int = 2, cpus_per_node: float = 1.0, log_dir: Path | None = None) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="ray-local-cluster-"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started_in: float | None = None
        """Seconds from the first ``ray start`` until every node had joined."""

    @property
    def address(self) -> str:
        """The GCS address nodes and drivers join (what ``RAY_ADDRESS`` holds inside a job)."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The dashboard and job API, for ``ray job submit --address``."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _ray_start(self, name: str, *args: str) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        # Nodes on one machine must not share the agents' fixed default ports (52365 and others), which
        # another Ray on this machine may hold as well: every node gets free ones.
        ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "runtime-env-agent-port", "metrics-export-port")]
        command = [RAY, "start", "--block", f"--num-cpus={self.cpus_per_node:g}", "--num-gpus=0", *ports, *args]
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, env=cluster_env()))

    def start(self) -> None:
        """Start the head, wait for its job API, add the other nodes, wait until all have joined."""
        self.token = ray_token()
        began = time.perf_counter()
        # No --dashboard-host: Ray's default binds the dashboard and job API to 127.0.0.1 (tested).
        self._ray_start("head", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                        f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true")
        try:
            self._wait(lambda: len(self.node_ids()) >= 1, "the head node")
            for index in range(1, self.nodes):
                self._ray_start(f"node{index}", f"--address={self.address}", "--node-ip-address=127.0.0.1")
            self._wait(lambda: len(self.node_ids()) == self.nodes, f"{self.nodes} nodes")
        except BaseException:
            self.stop()
            raise
        self.started_in = time.perf_counter() - began

    def _wait(self, ready: object, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            dead = [process.args for process in self.processes if process.poll() is not None]
            if dead:
                raise RuntimeError(f"ray start exited early ({dead[0]}); see the logs in {self.log_dir}")
            try:
                if ready():  # type: ignore[operator]
                    return
            except OSError:  # the dashboard is not up yet
                pass
            time.sleep(1.0)
        raise TimeoutError(f"{what} did not come up within {START_TIMEOUT_S:g} s; see the logs in {self.log_dir}")

    def api(self, path: str, token: str | None = "") -> object:
        """GET ``path`` of the dashboard's REST API with the cluster token (``None``: without one)."""
        request = urllib.request.Request(self.dashboard_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def submit(self, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``ray job submit`` of ``entrypoint`` with the token, waiting for the job to end, as a user would.

        No ``--working-dir`` upload: the nodes of this cluster share one machine and one session folder, where
        one node's runtime-env agent deletes the working directory it did not fetch itself while the job runs
        in it. Every node sees this checkout anyway, so give the entrypoint absolute paths. Right after
        start-up the head's job agent may not have registered yet ("No available agent"): that is retried
        for up to a minute.
        """
        command = [RAY, "job", "submit", f"--address={self.dashboard_url}", "--", *entrypoint]
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=cluster_env())
            if done.returncode == 0 or "No available agent" not in done.stderr or time.monotonic() > deadline:
                return done
            time.sleep(3)

    def node_ids(self) -> list[str]:
        """Ids of the nodes alive in the cluster."""
        reply = self.api("/api/v0/nodes?limit=100&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE")
        return [node["node_id"] for node in reply["data"]["result"]["result"]]  # type: ignore[index]

    def actor_nodes(self, class_name: str) -> list[str]:
        """Node ids of every actor of ``class_name`` the cluster has run (alive or dead), one per actor."""
        path = (f"/api/v0/actors?limit=1000&filter_keys=class_name&filter_predicates=%3D"
                f"&filter_values={class_name}")
        reply = self.api(path)
        return [actor["node_id"] for actor in reply["data"]["result"]["result"]]  # type: ignore[index]

    def stop(self) -> None:
        """Kill the nodes' process groups (TERM, then KILL after 15 s)."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        # `ray start` leaves this cluster's address as the machine's "current cluster"; a later
        # ray.init() without an address would try to join it and wait for a GCS that is gone.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            if self.address in current.read_text():
                current.unlink()
        except OSError:
            pass
