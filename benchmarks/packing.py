"""Packing: aggregate training throughput of k concurrent ResNet-20 trials on one device against one trial.

    python benchmarks/packing.py --data PATH/cifar10-jpeg.tar.gz            # or set RESNET_DATA_DIR
    python benchmarks/packing.py --k 1 2 4 8 --variant graphs-bf16 --iterations 300 --runs 3
    python benchmarks/packing.py --device cpu --k 1 2 --iterations 5 --warmup 2 --runs 1   # a quick check

Each trial is an OS process (``torch.multiprocessing``, "spawn") training its own ResNet-20 on the same device
through the engine's own path: the CIFAR set held on the device and augmented there
(:func:`resnet_core.engine.inputs.cifar_inputs`), :class:`resnet_core.engine.step.TrainStep` running the
step under the chosen :class:`~resnet_core.engine.step.Execution`. The study service packs trials the same
way through Ray Tune: ``resources.gpus_per_worker: 0.25`` in a study spec (``study/specs/cifar10_depth.yaml``)
places four single-worker trials on one GPU. This script measures what that packing buys, without Ray (the
GPU machines it was written for cannot install it).

Measurement. The parent decodes the data set once (filling the decoded-image cache); each child reads it
from that cache, builds its trial (seed = its rank), runs ``--warmup`` steps (compilation happens there),
drains its device and waits on a shared barrier. Then, ``--runs`` times, all children leave the barrier
together, each runs ``--iterations`` steps, drains its device and reports its (start, end) on
``time.monotonic`` (a system-wide clock on Linux, so the processes' times compare). The runs repeat inside
the same processes (one set-up and one compilation per k); a run's aggregate is the k trials' iterations over
the span from the first start to the last end. Printed and appended to ``benchmarks/results/packing.jsonl``:
mean +- std of the aggregate over runs, the mean per-trial rate, and the speed-up aggregate(k) / aggregate(1).
A failing trial stops the measurement with one line naming it (the others leave the barrier at once).

Variants: ``fp32`` (the engine's defaults: channels-last, eager, fused SGD on CUDA), ``bf16`` (bf16 autocast),
``graphs-bf16`` (``torch.compile`` mode ``reduce-overhead``, i.e. CUDA graphs, plus bf16).

On CUDA the k processes time-slice the GPU: each has its own context, and kernels of different processes do
not run at the same time. NVIDIA MPS (the Multi-Process Service daemon, ``nvidia-cuda-mps-control -d``)
would let them run concurrently; this script does not start it, and the figures it records are without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing.synchronize
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA_ENV, append_results, data_file, environment, spread, synchronize
from resnet_core import DataError, ImageDataset, ResnetCoreError, TrainConfig, load_image_dataset
from resnet_core.engine.distributed import current_group
from resnet_core.engine.fit import build_model
from resnet_core.engine.inputs import cifar_inputs
from resnet_core.engine.step import Execution, TrainStep, affinity_cpus

ARCHIVE = "cifar10-jpeg.tar.gz"
BARRIER_TIMEOUT = 1800.0
"""Seconds a trial waits on the barrier for the slowest one (set-up and compilation of k trials at once);
the last resort only: the parent breaks the barrier as soon as a trial fails or dies."""

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"compile": "none", "bf16": False},
    "bf16": {"compile": "none", "bf16": True},
    "graphs-bf16": {"compile": "reduce-overhead", "bf16": True},
}
"""``--variant`` name -> the TrainConfig execution fields it sets (the rest keep the engine's defaults)."""

Loader = Callable[[], ImageDataset]
"""Returns the image set; picklable, since every spawned trial calls it (e.g. a ``functools.partial``)."""


class PackingError(RuntimeError):
    """A trial failed or died; the message names it and says why in one line."""


@dataclass(frozen=True)
class Plan:
    """How many steps each trial runs: ``warmup`` untimed, then ``runs`` timed runs of ``iterations``."""

    iterations: int
    warmup: int
    runs: int

    def __post_init__(self) -> None:
        if self.iterations <= 0 or self.runs <= 0 or self.warmup < 0:
            raise ValueError(f"iterations and runs must be positive and warmup >= 0, got {self}")


@dataclass(frozen=True)
class Interval:
    """One trial's timed run: ``iterations`` steps between ``start`` and ``end`` (``time.monotonic``)."""

    rank: int
    run: int
    start: float
    end: float
    iterations: int

    @property
    def rate(self) -> float:
        """This trial's iterations per second in this run."""
        return self.iterations / (self.end - self.start)


@dataclass(frozen=True)
class RunResult:
    """The k trials' intervals of one synchronised run."""

    intervals: tuple[Interval, ...]

    @property
    def aggregate(self) -> float:
        """All trials' iterations over the span from the first start to the last end (iterations/s)."""
        span = max(i.end for i in self.intervals) - min(i.start for i in self.intervals)
        return sum(i.iterations for i in self.intervals) / span

    @property
    def per_trial(self) -> float:
        """Mean over trials of each trial's own iterations/s."""
        return sum(i.rate for i in self.intervals) / len(self.intervals)

    @property
    def slowest_trial(self) -> float:
        """The lowest trial's iterations/s: how evenly the device was shared."""
        return min(i.rate for i in self.intervals)


# ---------------------------------------------------------------------------------------------- one trial
def run_trial(rank: int, config: TrainConfig, load: Loader, plan: Plan,
              barrier: multiprocessing.synchronize.Barrier, reports: Any) -> None:
    """Child process entry: train one trial as the engine does, timing ``plan.runs`` runs between barriers.

    Puts ``("interval", Interval)`` per run on ``reports``, or ``("error", rank, line)`` and exits with 1.
    """
    try:
        for interval in _train_and_time(rank, config, load, plan, barrier):
            reports.put(("interval", interval))
    except BaseException as error:  # noqa: BLE001 -- any failure must reach the parent as one line
        barrier.abort()
        reports.put(("error", rank, describe_error(error)))
        sys.exit(1)


def _train_and_time(rank: int, config: TrainConfig, load: Loader, plan: Plan,
                    barrier: multiprocessing.synchronize.Barrier) -> list[Interval]:
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    execution = Execution.for_config(config, device)
    execution.apply_threads()
    torch.manual_seed(config.seed)
    dataset = load()
    inputs = cifar_inputs(config, dataset, current_group(), device)
    step = TrainStep.create(build_model(config, dataset.num_classes), execution)
    for iteration in range(plan.warmup):
        step(*inputs.train.batch(iteration))
    synchronize(device)
    intervals = []
    for run in range(plan.runs):
        first = plan.warmup + run * plan.iterations
        barrier.wait()
        start = time.monotonic()
        for iteration in range(first, first + plan.iterations):
            step(*inputs.train.batch(iteration))
        synchronize(device)
        intervals.append(Interval(rank, run, start, time.monotonic(), plan.iterations))
    return intervals


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message (at file:line)`` -- where the error was raised, in one line."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        text += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text


# ---------------------------------------------------------------------------------------------- k trials
def measure_packing(k: int, config: TrainConfig, load: Loader, plan: Plan,
                    barrier_timeout: float = BARRIER_TIMEOUT) -> list[RunResult]:
    """Run ``k`` trials of ``config`` (seeds 0 .. k-1) as concurrent processes; one result per timed run.

    Raises :class:`PackingError` naming the first trial that failed (not one that only saw the barrier
    broken), or one that exited without reporting.
    """
    if k <= 0:
        raise ValueError(f"k must be a positive number of trials, got {k}")
    context = mp.get_context("spawn")
    barrier = context.Barrier(k, timeout=barrier_timeout)
    reports = context.Queue()
    processes = [context.Process(target=run_trial, name=f"packing-trial-{rank}", daemon=True,
                                 args=(rank, dataclasses.replace(config, seed=rank), load, plan, barrier, reports))
                 for rank in range(k)]
    for process in processes:
        process.start()
    try:
        intervals, errors = _collect(processes, barrier, reports)
    finally:
        _stop(processes)
    if errors:
        raise PackingError(_first_cause(errors))
    by_run: dict[int, list[Interval]] = {}
    for interval in intervals:
        by_run.setdefault(interval.run, []).append(interval)
    if sorted(by_run) != list(range(plan.runs)) or any(len(found) != k for found in by_run.values()):
        raise PackingError(f"expected {plan.runs} runs x {k} trials, got {len(intervals)} reports")
    return [RunResult(tuple(sorted(by_run[run], key=lambda i: i.rank))) for run in range(plan.runs)]


def _collect(processes: Sequence[Any], barrier: multiprocessing.synchronize.Barrier, reports: Any
             ) -> tuple[list[Interval], dict[int, str]]:
    """Read reports until every trial has exited; break the barrier as soon as one fails or dies."""
    intervals: list[Interval] = []
    errors: dict[int, str] = {}

    def read(timeout: float | None) -> bool:
        try:
            message = reports.get(timeout=timeout) if timeout else reports.get_nowait()
        except queue.Empty:
            return False
        if message[0] == "interval":
            intervals.append(message[1])
        else:
            errors.setdefault(message[1], message[2])
            barrier.abort()
        return True

    while any(process.is_alive() for process in processes):
        read(0.5)
        if any(process.exitcode not in (None, 0) for process in processes):
            barrier.abort()
    while read(None):  # what the exited trials left in the queue
        pass
    for rank, process in enumerate(processes):
        if process.exitcode != 0 and rank not in errors:
            errors[rank] = f"exited with code {process.exitcode} without reporting an error"
    return intervals, errors


def _first_cause(errors: dict[int, str]) -> str:
    """The first trial whose failure is its own, not the broken barrier another trial's failure caused."""
    own = {rank: line for rank, line in errors.items() if not line.startswith("BrokenBarrierError")}
    rank, line = min((own or errors).items())
    more = f" ({len(errors) - 1} other trial(s) stopped too)" if len(errors) > 1 else ""
    return f"trial {rank} failed: {line}{more}"


def _stop(processes: Sequence[Any]) -> None:
    for process in processes:
        process.join(timeout=10)
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)


# ---------------------------------------------------------------------------------------------- the CLI
def default_threads(device: torch.device, k: int) -> int:
    """CPU threads per trial: the CPUs shared out among the k trials on a CPU, one on a GPU (it only queues)."""
    if device.type != "cpu":
        return 1
    return max(1, (affinity_cpus() or os.cpu_count() or 1) // k)


def summarise(results: Sequence[RunResult]) -> dict[str, float]:
    """Mean +- std over runs of the aggregate and per-trial rates, and the mean rate of the slowest trial."""
    aggregate_mean, aggregate_std = spread([r.aggregate for r in results])
    per_trial_mean, per_trial_std = spread([r.per_trial for r in results])
    return {"aggregate_its_mean": aggregate_mean, "aggregate_its_std": aggregate_std,
            "per_trial_its_mean": per_trial_mean, "per_trial_its_std": per_trial_std,
            "slowest_trial_its_mean": spread([r.slowest_trial for r in results])[0]}


def packing_row(k: int, config: TrainConfig, variant: str, plan: Plan, summary: dict[str, float],
                single: float | None) -> dict[str, Any]:
    """The result row of k packed trials; ``single`` is the aggregate rate of k = 1 (None: not measured)."""
    return {"benchmark": "packing", "model": config.arch, "k": k, "variant": variant,
            "batch_size": config.batch_size, "threads_per_trial": config.threads,
            "iterations_per_trial": plan.iterations, "warmup": plan.warmup, "runs": plan.runs,
            **summary, "images_per_second_mean": summary["aggregate_its_mean"] * config.batch_size,
            "speedup_vs_k1": summary["aggregate_its_mean"] / single if single else None}


def count(text: str, minimum: int = 1) -> int:
    """An argparse type: an integer of at least ``minimum``."""
    value = int(text)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    parser.add_argument("--k", type=count, nargs="+", default=[1, 2, 4, 8], help="concurrent trials to measure")
    parser.add_argument("--iterations", type=count, default=300, help="timed steps per trial and run")
    parser.add_argument("--warmup", type=functools.partial(count, minimum=0), default=30,
                        help="untimed steps per trial first (compilation happens there)")
    parser.add_argument("--runs", type=count, default=3, help="timed runs per k (in the same processes)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                        help="fp32 (engine defaults), bf16, graphs-bf16 (reduce-overhead compile + bf16); "
                             "default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--data", default=None, help=f"{ARCHIVE} or another CIFAR-10 source (default: in "
                        f"${DATA_ENV})")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default: the engine's)")
    parser.add_argument("--threads-per-trial", type=count, default=None,
                        help="CPU threads per trial (default: CPUs // k on a CPU, 1 on CUDA)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    variant = args.variant or ("bf16" if device.type == "cuda" else "fp32")
    data = data_file(args.data, ARCHIVE)
    if data is None or not data.exists():
        print(f"packing: no data: pass --data PATH/{ARCHIVE} or set {DATA_ENV} to the folder holding it"
              + ("" if data is None else f" ({data} does not exist)"), file=sys.stderr)
        raise SystemExit(2)
    load = functools.partial(load_image_dataset, str(data), download=False, cache_dir=args.cache_dir)
    try:
        load()  # decode once here, so the trials read the cache
    except DataError as error:
        print(f"packing: cannot read {data}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    plan = Plan(args.iterations, args.warmup, args.runs)
    print(f"ResNet-20 trials packed on {device}, variant {variant}: {args.runs} runs x {args.iterations} "
          f"iterations per trial after {args.warmup} warm-up")
    print(f"{'k':>3}  {'aggregate it/s':>18}  {'per-trial it/s':>14}  {'speed-up':>8}", flush=True)
    rows, single = [], None
    for k in sorted(set(args.k)):  # k = 1 first: the speed-ups are relative to it
        threads = args.threads_per_trial or default_threads(device, k)
        config = TrainConfig(arch="resnet20", device=str(device), threads=threads, **VARIANTS[variant])
        try:
            summary = summarise(measure_packing(k, config, load, plan))
        except (PackingError, ResnetCoreError) as error:
            print(f"packing: k={k}: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        single = summary["aggregate_its_mean"] if k == 1 else single
        row = packing_row(k, config, variant, plan, summary, single)
        speedup = row["speedup_vs_k1"]
        print(f"{k:>3}  {summary['aggregate_its_mean']:8.1f} +- {summary['aggregate_its_std']:6.1f}  "
              f"{summary['per_trial_its_mean']:14.1f}  "
              f"{'-' if speedup is None else f'{speedup:7.2f}x':>8}", flush=True)
        rows.append(row)
    env = environment(device)
    print(f"written to {append_results('packing', [{**row, **env} for row in rows])}")


if __name__ == "__main__":
    main()
