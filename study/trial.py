"""One trial of a study: a Tune trial whose body starts a Ray Train ``TorchTrainer`` over resnet_core.

The Tune trial is a light driver (:func:`trial_driver`); the training happens in the TorchTrainer's
workers (:func:`train_worker`), each running resnet_core's engine -- the same :func:`resnet_core.fit`
the single-run CLI calls -- data-parallel when there is more than one worker. Every evaluation is
reported to Ray (and through ``TuneReportCallback`` to Tune, for early stopping) with rank 0's atomic
checkpoint; so is every checkpoint the engine writes between evaluations (at least every
``train.checkpoint_minutes``), as a report holding only ``iteration``. A failed worker group restarts from the
last of them (``FailureConfig``), and so does a trial of an interrupted study when the study is resumed
(Ray Train finds the run's checkpoints again under the same name and storage).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
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
"""How often a trial's worker group may fail and restart from its last checkpoint."""


def worker_device(spec_device: str, ray_device: str) -> str:
    """Where a worker trains: the spec's ``train.device``, with ``auto`` and ``cuda`` meaning the GPU Ray gave
    this worker (a bare ``cuda`` would pick GPU 0 whatever Ray assigned); the spec checks that ``cuda`` comes
    with GPUs reserved. ``cpu`` trains on the CPU even where GPUs were reserved."""
    kind = spec_device.split(":")[0]
    if kind == "auto" or (kind == "cuda" and ray_device.startswith("cuda")):
        return ray_device
    return spec_device


def train_worker(loop_config: dict[str, Any]) -> None:
    """The per-worker body: resnet_core's engine with reports (and rank 0's checkpoint) to Ray Train."""
    first_report: dict[str, Any] = {WORKER_STARTED_AT: time.time()}  # what the worker's first report adds
    context = ray.train.get_context()
    rank = context.get_world_rank()
    config = TrainConfig.from_dict(loop_config)
    config = config.replace(device=worker_device(config.device, str(ray.train.torch.get_device())))
    out_dir = Path(tempfile.mkdtemp(prefix=f"resnet-trial-rank{rank}-"))
    resume_from = None
    previous = ray.train.get_checkpoint()
    if previous is not None:  # a restarted worker group (or a resumed study) continues exactly
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
        ray.train.report(metrics, checkpoint=checkpoint)  # every worker reports; rank 0's metrics count

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
    per_worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker > 0:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=train_config.to_dict(),
        scaling_config=ScalingConfig(num_workers=resources.workers_per_trial,
                                     use_gpu=resources.gpus_per_worker > 0, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"{study.name}-{ray.tune.get_context().get_trial_id()}",
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=WORKER_FAILURES_TOLERATED),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()
