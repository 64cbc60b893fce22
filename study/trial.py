"""One trial of a study: a Tune trial whose body runs a Ray Train ``TorchTrainer`` over resnet_core.

The Tune trial is the trial's process (:func:`trial_driver`). A trial of one worker trains right there, through
Ray Train's local mode (``ScalingConfig(num_workers=0)``, :func:`train_in_trial`): on a small machine, starting a
worker group -- a controller, a worker, and the helper actors around them, each a Python process that imports
Ray Train and PyTorch -- took longer than a short trial trains (``benchmarks/study_overhead.py``). A trial of
several workers (or any trial with ``resources.worker_group: always``) starts a worker group whose workers
(:func:`train_worker`) train data-parallel. Either way every worker runs resnet_core's engine -- the same
:func:`resnet_core.fit` the single-run CLI calls -- and every evaluation is reported with rank 0's atomic
checkpoint; so is every checkpoint the engine writes between evaluations (at least every
``train.checkpoint_minutes``), as a report holding only ``iteration``. A worker group reports to Ray Train, which
hands each report to Tune (``TuneReportCallback``) and restarts a failed group from the last checkpoint
(``FailureConfig``); a trial training in its own process reports to Tune directly, and Tune restarts it from the
last checkpoint when it fails (``tune.FailureConfig``, :data:`WORKER_FAILURES_TOLERATED`). A trial of an
interrupted study continues from the same checkpoint when the study is resumed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import ray.tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from resnet_core import EvalReport, TrainConfig, fit
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.engine.fit import CheckpointWritten
from study.spec import Group, StudySpec, spec_from_dict

log = logging.getLogger(__name__)

RESUMED_AT = "resumed_at_iteration"
"""Reported once after a trial restarts from a checkpoint (a failed worker group, a resumed study): its iteration."""
WORKER_STARTED_AT = "worker_started_at"
"""Reported with a worker's first report: when (epoch seconds) the worker began running this trial's code, so the
study can tell Ray's start-up of a trial (trial start to then) from the engine's data loading and evaluation."""
REPLAYED = "evaluations_before_restart"
"""Reported with :data:`RESUMED_AT`: the evaluations the checkpoint holds (JSON), so that one whose report was
cut by the interruption still reaches MLflow (which logs each iteration once)."""

WORKER_FAILURES_TOLERATED = 2
"""How often a trial's training may fail and restart from its last checkpoint: its worker group (Ray Train), or the
trial itself where it trains in its own process (Tune)."""


def worker_device(spec_device: str, ray_device: str) -> str:
    """Where a worker trains: the spec's ``train.device``, with ``auto`` and ``cuda`` meaning the GPU Ray gave
    this worker (a bare ``cuda`` would pick GPU 0 whatever Ray assigned); the spec checks that ``cuda`` comes
    with GPUs reserved. ``cpu`` trains on the CPU even where GPUs were reserved."""
    kind = spec_device.split(":")[0]
    if kind == "auto" or (kind == "cuda" and ray_device.startswith("cuda")):
        return ray_device
    return spec_device


def train_worker(loop_config: dict[str, Any]) -> None:
    """A Ray Train worker's body: resnet_core's engine, reporting (with rank 0's checkpoint) to Ray Train."""
    started = time.time()
    _train(loop_config, started, rank=ray.train.get_context().get_world_rank(),
           ray_device=str(ray.train.torch.get_device()), previous=ray.train.get_checkpoint(), send=ray.train.report)


def train_in_trial(loop_config: dict[str, Any]) -> None:
    """The body of a trial that trains in its own process (Ray Train's local mode, inside the Tune trial): the engine,
    reporting to Tune, on the GPU Tune reserved for the trial if any. (Ray Train's own ``get_context`` and ``report``
    refuse to run inside a Tune trial; Tune's are the ones that reach it.)"""
    started = time.time()
    gpus = ray.get_gpu_ids()
    _train(loop_config, started, rank=0, ray_device="cuda:0" if gpus else "cpu", previous=ray.tune.get_checkpoint(),
           send=ray.tune.report)


def _train(loop_config: dict[str, Any], started: float, rank: int, ray_device: str, previous: Checkpoint | None,
           send: Callable[..., None]) -> None:
    """Run the engine on one worker: restore ``previous`` if given, ``send`` every evaluation and checkpoint."""
    first_report: dict[str, Any] = {WORKER_STARTED_AT: started}  # what the worker's first report adds
    config = TrainConfig.from_dict(loop_config)
    config = config.replace(device=worker_device(config.device, ray_device))
    out_dir = Path(tempfile.mkdtemp(prefix=f"resnet-trial-rank{rank}-"))
    resume_from = None
    if previous is not None:  # a restarted worker group or trial (or a resumed study) continues exactly
        restored = Path(previous.to_directory(str(out_dir / "restored")))
        resume_from = restored / CHECKPOINT_NAME
        state = load_checkpoint(resume_from)
        first_report.update({RESUMED_AT: int(state["iteration"]), REPLAYED: json.dumps(state["history"])})
        log.info("rank %d resumes from %s at iteration %d", rank, resume_from, first_report[RESUMED_AT])

    def report(metrics: dict[str, Any], checkpoint_file: str | None) -> None:
        metrics = {**metrics, **first_report}  # when the worker started, and where it restarted from
        first_report.clear()
        checkpoint = None
        if rank == 0 and checkpoint_file is not None:
            checkpoint = Checkpoint.from_directory(str(Path(checkpoint_file).parent))
        send(metrics, checkpoint=checkpoint)  # every worker reports; rank 0's metrics count

    def report_evaluation(evaluation: EvalReport) -> None:
        report({key: value for key, value in evaluation.row().items() if value is not None}, evaluation.checkpoint)

    def report_checkpoint(written: CheckpointWritten) -> None:
        report({"iteration": written.iteration}, written.path)

    try:
        fit(config, out_dir=out_dir / "run", resume_from=resume_from, callbacks=[report_evaluation],
            checkpoint_callbacks=[report_checkpoint])
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def trial_train_config(spec: StudySpec, config: dict[str, Any]) -> tuple[Group, TrainConfig]:
    """The group and engine config of one trial from the values Tune chose (``group``, the searched fields, ...)."""
    groups = {group.key: group for group in spec.study_groups()}
    group = groups[config["group"]]
    final = config.get("phase") == "final"
    seed = int(config.get("seed", spec.train.seed))
    train_config = spec.train_config(group, searched_values(spec, config), seed=seed, val_split=0 if final else None)
    return group, train_config


def searched_values(spec: StudySpec, config: dict[str, Any]) -> dict[str, Any]:
    """The searched fields' values in a trial's Tune ``config``, in the spec's order."""
    return {name: config[name] for name in spec.search.space}


def trial_driver(config: dict[str, Any], spec: dict[str, Any], storage_path: str) -> None:
    """Tune function trainable: train one configuration through a TorchTrainer and wait for it."""
    study = spec_from_dict(spec)
    config = {**config, **config.get("final", {})}
    _, train_config = trial_train_config(study, config)
    resources = study.resources
    if resources.trains_in_trial_process:  # Ray Train's local mode: this process trains (Tune reserved its resources)
        scaling = ScalingConfig(num_workers=0)
    else:
        scaling = ScalingConfig(num_workers=resources.workers_per_trial, use_gpu=resources.gpus_per_worker > 0,
                                resources_per_worker=resources.per_worker())
    trainer = TorchTrainer(
        train_in_trial if resources.trains_in_trial_process else train_worker,
        train_loop_config=train_config.to_dict(),
        scaling_config=scaling,
        run_config=RunConfig(
            name=f"{study.name}-{ray.tune.get_context().get_trial_id()}",
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=WORKER_FAILURES_TOLERATED),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()
