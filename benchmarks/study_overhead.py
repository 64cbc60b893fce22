"""What the study service costs over the training it runs: the same small study through the service and
through a bare Optuna loop over ``resnet_core.fit`` in one process, side by side in one run.

    python benchmarks/study_overhead.py --data PATH/cifar10-jpeg.tar.gz      # or set RESNET_DATA_DIR
    python benchmarks/study_overhead.py --variant one-at-a-time:resources.cpus_per_worker=1.0

The study: ``--archs`` (default ResNet-20 and plain-20, option A) x ``--trials`` trials (default 2) of
``--iterations`` engine iterations (default 60, batch 64, one evaluation at the end on the 45k/5k split), lr and weight
decay searched by TPE, no early stopping, no final retraining. Both sides train exactly the same engine
configurations: the bare loop builds each trial's :class:`~resnet_core.TrainConfig` from the very spec the
service runs (``StudySpec.train_config``) and asks an Optuna study per group for the values. Both start with
the decoded-image cache warm (the benchmark fills it first), as every study after a machine's first does.

The service runs as a user runs it (``python study/run.py --spec ...`` in a fresh process, a local Ray, a
local MLflow store), once per variant: the spec's defaults, then each ``--variant NAME:KEY=VALUE[,KEY=VALUE]``
(``--set`` overrides; the default is one worker of 0.9 CPU per trial: two trials side by side on 2 cores, which
``benchmarks/packing.py`` found as fast in aggregate as one trial on both; a one-worker trial trains in its own
process, ``--variant worker-group:resources.worker_group=always`` gives it a Ray Train worker group as every trial
had before, ``--variant one-at-a-time:resources.max_concurrent_trials=1`` measures a trial's start-up on a quiet
machine). Its breakdown comes from what it
records in MLflow: the seconds of Ray's start, the search phase and the report (tags ``resnet.seconds.*`` of the
study's run), and per trial its wall time (the MLflow run's start to end), Ray's start-up of it (the trial's
start in Tune to its training function running: ``ray_startup_seconds``), the engine's training
(``engine_seconds``: its clock at the one evaluation, which the engine starts after loading the data and building
the model) and the rest (data loading, model, the evaluation, the report's hand-over, the worker group's end);
the seconds from a trial's end to the next trial's start (Tune choosing it and starting its process, which comes
before its start in Tune);
"concurrency" is the trials' summed wall time over the search phase's. MLflow logging is not on that path: one
writer thread logs while the trials train. The bare loop's breakdown: imports, data loading, training, evaluation
(timed around the engine's evaluation), the rest (Optuna, model building).

Prints both wall times, their ratio and the breakdown; appends one JSON line per side to
``benchmarks/results/study_overhead.jsonl``. CPU figures compare only within one run (same machine, same load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROCESS_STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
BASE_SPEC = REPO / "study" / "specs" / "smoke.yaml"


def study_overrides(args: argparse.Namespace, scratch: Path) -> list[str]:
    """The ``--set`` overrides that turn the smoke spec into the benchmark's study."""
    return [
        "name=overhead", f"dataset.path={args.data}", "dataset.val_split=5000",
        f"groups.archs=[{','.join(args.archs)}]", "groups.shortcuts=[A]",
        f"search.trials_per_group={args.trials}", "search.initial_points=[]", "search.early_stopping=none",
        "search.lr={low: 0.01, high: 0.5}", f"train.iterations={args.iterations}",
        f"train.eval_every={args.iterations}", f"train.batch_size={args.batch_size}",
        "train.final_seeds=0", "resources.workers_per_trial=1", "resources.cpus_per_worker=0.9",
        f"mlflow.tracking_uri=sqlite:///{scratch}/mlflow.db", f"storage={scratch}/ray_results",
    ]


# ------------------------------------------------------------------------------------------------ bare loop
def bare_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The study's search as one process runs it by hand: an Optuna study per group, ``fit`` per trial."""
    import importlib

    import optuna
    import torch

    from resnet_core import fit, load_image_dataset
    from study.search import make_sampler, search_space
    from study.spec import load_spec

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        spec = load_spec(BASE_SPEC, study_overrides(args, Path(scratch)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_image_dataset(spec.dataset.path, dataset=spec.dataset.name)
    loaded = time.perf_counter()

    evaluating = [0.0]
    engine = importlib.import_module("resnet_core.engine.fit")  # the module (the package exports the function)
    evaluate = engine._Run.evaluate

    def timed_evaluate(run: Any, seconds: float) -> Any:
        started = time.perf_counter()
        try:
            return evaluate(run, seconds)
        finally:
            evaluating[0] += time.perf_counter() - started

    engine._Run.evaluate = timed_evaluate  # the benchmark's own instrument; the engine is not changed
    fitting = 0.0
    space = search_space(spec.search)
    for index, group in enumerate(spec.study_groups()):
        study = optuna.create_study(direction="minimize", sampler=make_sampler(
            spec.search.sampler, spec.search.seed + index, spec.search.trials_per_group))
        for _ in range(spec.search.trials_per_group):
            trial = study.ask(space)
            config = spec.train_config(group, trial.params, seed=spec.train.seed)
            started = time.perf_counter()
            result = fit(config, data=data)
            fitting += time.perf_counter() - started
            study.tell(trial, result.final.val_error)
    ended = time.perf_counter()
    return {"side": "bare", "wall_seconds": ended - PROCESS_STARTED, "imports_seconds": imported - PROCESS_STARTED,
            "data_seconds": loaded - imported, "training_seconds": fitting - evaluating[0],
            "evaluation_seconds": evaluating[0], "other_seconds": ended - loaded - fitting,
            "torch_threads": torch.get_num_threads()}


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--bare", "--data", args.data, "--archs", *args.archs,
               "--trials", str(args.trials), "--iterations", str(args.iterations), "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the bare loop failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ the service
def run_service(args: argparse.Namespace, name: str, extra: list[str]) -> dict[str, Any]:
    """One study through ``study/run.py`` in a fresh process and scratch folder; its wall time and breakdown."""
    with tempfile.TemporaryDirectory(prefix="overhead-") as folder:
        scratch = Path(folder)
        command = [sys.executable, str(args.repo / "study" / "run.py"), "--spec", str(BASE_SPEC)]
        for override in study_overrides(args, scratch) + extra:
            command += ["--set", override]
        started = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(args.repo)}  # that checkout's code, in Ray's workers too
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch, check=False, env=env)
        wall = time.perf_counter() - started
        (scratch / "console.txt").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"the study ({name}) failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
        row = {"side": "service", "variant": name, "overrides": extra, "wall_seconds": wall,
               "console_lines": len((done.stdout + done.stderr).splitlines()),
               **service_breakdown(f"sqlite:///{scratch}/mlflow.db")}
    return row


def service_breakdown(tracking_uri: str) -> dict[str, Any]:
    """The service's own record of where its time went (MLflow tags and metrics of the study's runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("overhead")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    study = next(run for run in runs if run.data.tags.get("resnet.role") == "study")
    trials = [run for run in runs if run.data.tags.get("resnet.phase") == "search"]
    seconds = {key.removeprefix("resnet.seconds."): float(value) for key, value in study.data.tags.items()
               if key.startswith("resnet.seconds.")}  # absent in a checkout older than these tags: NaN
    if not seconds:
        seconds = {"search": float("nan")}
    walls = [(run.info.end_time - run.info.start_time) / 1000 for run in trials]
    # A trial's start in Tune comes after its own process has started: the time from a trial's end to the next
    # trial's start (Tune choosing it, its process starting and importing) is start-up too, not counted above.
    spans = sorted((run.info.start_time / 1000, run.info.end_time / 1000) for run in trials)
    gaps = [start - max(ends) for start, _ in spans
            if (ends := [end for _, end in spans if end <= start])]
    nan = float("nan")
    startup = [run.data.metrics.get("ray_startup_seconds", nan) for run in trials]
    engine = [run.data.metrics.get("engine_seconds", nan) for run in trials]
    return {
        "ray_start_seconds": seconds.get("ray_start", nan), "search_seconds": seconds.get("search", nan),
        "report_seconds": seconds.get("report", nan), "trials": len(trials),
        "trial_wall_seconds_mean": statistics.mean(walls), "trial_startup_seconds_mean": statistics.mean(startup),
        "trial_gap_seconds_mean": statistics.mean(gaps) if gaps else nan,
        "trial_engine_seconds_mean": statistics.mean(engine),
        "trial_rest_seconds_mean": statistics.mean(walls) - statistics.mean(startup) - statistics.mean(engine),
        "concurrency": sum(walls) / seconds["search"],
    }


def warm_cache(data: str) -> None:
    """Decode the data once (the decoded-image cache), as a machine's first study does; neither side pays it."""
    from resnet_core import load_image_dataset

    load_image_dataset(data, dataset="cifar10")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name or not overrides:
        raise SystemExit(f"--variant {text!r}: write NAME:KEY=VALUE[,KEY=VALUE], e.g. "
                         "one-at-a-time:resources.cpus_per_worker=1.0")
    return name, overrides.split(",")


def main() -> None:
    from benchmarks.common import data_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="CIFAR-10 as the study accepts it "
                        "(default: $RESNET_DATA_DIR/cifar10-jpeg.tar.gz)")
    parser.add_argument("--archs", nargs="+", default=["resnet20", "plain20"])
    parser.add_argument("--trials", type=int, default=2, help="trials per group (default: 2)")
    parser.add_argument("--iterations", type=int, default=60, help="engine iterations per trial (default: 60)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also run the service with these --set overrides (repeatable)")
    parser.add_argument("--no-default", action="store_true", help="run only the --variant studies")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="the checkout whose service to run, e.g. an older commit's worktree (default: this one)")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # the bare loop's own process
    args = parser.parse_args()
    path = data_file(args.data, "cifar10-jpeg.tar.gz")
    if path is None or not path.exists():
        raise SystemExit("no CIFAR-10 data: pass --data PATH/cifar10-jpeg.tar.gz or set RESNET_DATA_DIR")
    args.data = str(path.resolve())
    if args.bare:
        print(json.dumps(bare_loop(args)))
        return
    import torch

    from benchmarks.common import append_results, environment

    args.repo = args.repo.resolve()
    variants = [] if args.no_default else [("defaults", [])]
    variants += [parse_variant(text) for text in args.variant]
    warm_cache(args.data)
    study = {"archs": args.archs, "trials_per_group": args.trials, "iterations": args.iterations,
             "batch_size": args.batch_size}
    bare = {"benchmark": "study_overhead", **study, **run_bare(args)}
    print(f"bare Optuna loop over resnet_core.fit: {bare['wall_seconds']:.1f} s (imports "
          f"{bare['imports_seconds']:.1f}, data {bare['data_seconds']:.1f}, training {bare['training_seconds']:.1f}, "
          f"evaluation {bare['evaluation_seconds']:.1f}, other {bare['other_seconds']:.1f})")
    rows = [bare]
    for name, extra in variants:
        row = {"benchmark": "study_overhead", **study, **run_service(args, name, extra), "service_repo": str(args.repo)}
        row["ratio_to_bare"] = row["wall_seconds"] / bare["wall_seconds"]
        rows.append(row)
        print(f"service [{name}{' ' + ' '.join(extra) if extra else ''}]: {row['wall_seconds']:.1f} s, "
              f"ratio {row['ratio_to_bare']:.2f} (Ray start {row['ray_start_seconds']:.1f}, search "
              f"{row['search_seconds']:.1f}, report {row['report_seconds']:.1f}; per trial: wall "
              f"{row['trial_wall_seconds_mean']:.1f} = Ray start-up {row['trial_startup_seconds_mean']:.1f} + training "
              f"{row['trial_engine_seconds_mean']:.1f} + data, evaluation and hand-over "
              f"{row['trial_rest_seconds_mean']:.1f}; from a trial's end to the next one's start "
              f"{row['trial_gap_seconds_mean']:.1f}; concurrency "
              f"{row['concurrency']:.2f}; {row['console_lines']} console lines)")
    env = environment(torch.device("cpu"))
    path = append_results("study_overhead", [{**row, **env} for row in rows])
    print(f"appended to {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
