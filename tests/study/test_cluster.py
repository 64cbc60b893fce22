"""The study on a two-node Ray cluster over loopback (a head and a second node, one logical CPU each), submitted
as a Ray job: trials train on both nodes; the cluster is secured (token authentication, loopback-bound
dashboard and job API); a wrong RAY_ADDRESS fails in seconds with one line. Everything is torn down after."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import psutil
import pytest
from conftest import RAY, REPO, smoke_args, study_env

from study.local_cluster import LocalCluster, free_port

pytestmark = pytest.mark.deploy

# Two trials of ResNet-20, each 0.9 logical CPU: two workers x 0.4, packed together by their TorchTrainer, and
# 0.1 for the trial's driver, which Ray places on its own (often both drivers on one node). Whichever node
# the first trial's workers take, the other keeps at least 1 - 0.2 = 0.8 CPU for the second's: on two
# one-CPU nodes they run side by side, one per node. (With the smoke spec's 2 x 0.45 they need 0.9 there,
# and the second trial can wait for the first and then train on the same node.)
TWO_TRIALS = ("--set", "groups.archs=[resnet20]", "--set", "search.trials_per_group=2", "--set",
              "search.initial_points=[]", "--set", "train.iterations=100", "--set", "train.final_seeds=0",
              "--set", "search.early_stopping=none", "--set", "resources.cpus_per_worker=0.4",
              "--set", "name=cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(nodes=2, cpus_per_node=1, log_dir=tmp_path_factory.mktemp("ray-logs")) as running:
        print(f"two-node cluster up in {running.started_in:.1f} s")
        yield running


def _listening_addresses(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}


def test_cluster_has_two_nodes_and_binds_its_apis_to_loopback(cluster: LocalCluster) -> None:
    assert len(cluster.node_ids()) == 2
    # The dashboard and job API: loopback by Ray's default (no --dashboard-host given). The GCS port listens
    # on every interface whatever --node-ip-address says; the token guards it (deploy/README.md: firewall it).
    assert _listening_addresses(cluster.dashboard_port) == {"127.0.0.1"}


def test_a_client_without_the_token_is_refused(cluster: LocalCluster) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.api("/api/jobs/", token=None)
    assert refused.value.code == 401
    without = subprocess.run([RAY, "job", "list", f"--address={cluster.dashboard_url}"], capture_output=True,
                             text=True, timeout=120, env=study_env())
    assert without.returncode != 0 and "authentication" in (without.stdout + without.stderr).lower()


def test_a_submitted_study_trains_on_both_nodes(cluster: LocalCluster, cifar_subset: Path, tmp_path: Path) -> None:
    entrypoint = [sys.executable, str(REPO / "study" / "run.py"), *smoke_args(cifar_subset, *TWO_TRIALS, "--set",
                  f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "--set", f"storage={tmp_path}/ray_results")]
    started = time.perf_counter()
    submit = cluster.submit(entrypoint)
    print(f"study on two nodes: {time.perf_counter() - started:.0f} s")
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "Study cluster finished" in submit.stdout and "succeeded" in submit.stdout
    worker_nodes = cluster.actor_nodes("RayTrainWorker")
    assert len(worker_nodes) >= 4  # two trials x two workers
    assert set(worker_nodes) == set(cluster.node_ids())  # ... on both nodes


def test_a_wrong_ray_address_fails_in_seconds_with_one_line(cifar_subset: Path, tmp_path: Path) -> None:
    env = {**study_env(), "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), *smoke_args(cifar_subset)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and env["RAY_ADDRESS"] in lines[0] and "cannot reach the Ray cluster" in lines[0]
    assert seconds < 30, seconds
    assert not (tmp_path / "mlflow.db").exists()  # nothing was logged
