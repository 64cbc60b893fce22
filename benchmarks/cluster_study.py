"""Wall time of one small study on a one-node vs a two-node Ray cluster on this machine (loopback).

    python benchmarks/cluster_study.py --data PATH_TO_CIFAR10 [--cpus-per-node 1] [--trials 2]

Each cluster is a :class:`study.local_cluster.LocalCluster` (``ray start`` per node, token authentication
on); the study (ResNet-20, ``--trials`` trials of 100 iterations, each trial one logical CPU: two workers x
0.45 + 0.1) is submitted with ``ray job submit`` as a user would. Prints and appends to
``benchmarks/results/cluster_study.jsonl``: the time to bring the cluster up and the study's wall time.
Both clusters share the same physical cores, so the second node adds logical CPUs (trials side by side),
not compute: the ratio shows what the scheduler does with a second node, not a hardware speed-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import append_results, environment  # noqa: E402
from study.local_cluster import LocalCluster  # noqa: E402


def study_seconds(cluster: LocalCluster, data: str, trials: int, scratch: Path) -> float:
    """Submit the study to ``cluster`` and wait for it; its wall time in seconds."""
    entrypoint = [sys.executable, str(REPO / "study" / "run.py"), "--spec", str(REPO / "study" / "specs" / "smoke.yaml"),
                  "--set", f"dataset.path={data}", "--set", "dataset.val_split=1000", "--set", "name=bench",
                  "--set", "groups.archs=[resnet20]", "--set", f"search.trials_per_group={trials}",
                  "--set", "search.initial_points=[]", "--set", "search.early_stopping=none",
                  "--set", "train.iterations=100", "--set", "train.eval_every=100", "--set", "train.final_seeds=0",
                  "--set", f"mlflow.tracking_uri=sqlite:///{scratch}/mlflow.db", "--set", f"storage={scratch}/ray"]
    started = time.perf_counter()
    done = cluster.submit(entrypoint, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the study failed on {cluster.nodes} node(s):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 as the study accepts it (archive, folder)")
    parser.add_argument("--cpus-per-node", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    rows = []
    for nodes in (1, 2):
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as scratch, \
                LocalCluster(nodes=nodes, cpus_per_node=args.cpus_per_node, log_dir=Path(scratch)) as cluster:
            seconds = study_seconds(cluster, data, args.trials, Path(scratch))
            rows.append({"benchmark": "cluster_study", "nodes": nodes, "cpus_per_node": args.cpus_per_node,
                         "trials": args.trials, "cluster_up_seconds": cluster.started_in,
                         "study_seconds": seconds, **environment(torch.device("cpu"))})
            print(f"{nodes} node(s) x {args.cpus_per_node:g} CPU: cluster up in {cluster.started_in:.1f} s, "
                  f"study of {args.trials} trials in {seconds:.0f} s")
    print(f"two nodes / one node wall time: {rows[1]['study_seconds'] / rows[0]['study_seconds']:.2f}")
    print(f"written to {append_results('cluster_study', rows)}")


if __name__ == "__main__":
    main()
