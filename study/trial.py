"""One trial of a study: a Tune trial whose body starts a Ray Train ``TorchTrainer`` over resnet_core.

The Tune trial is a light driver (:func:`trial_driver`); the training happens in the TorchTrainer's
workers (:func:`train_worker`), each running resnet_core's engine -- the same :func:`resnet_core.fit`
the single-run CLI calls -- data-parallel when there is more than one worker. Every evaluation is
reported to Ray (and through ``TuneReportCallback`` to Tune, for early stopping) with rank 0's atomic
checkpoint, so a failed worker group restarts from the last evaluation (``FailureConfig``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import ray.tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from resnet_core import EvalReport, TrainConfig, fit
from resnet_core.engine.checkpoint import CHECKPOINT_NAME
from study.spec import Group, StudySpec, spec_from_dict

log = logging.getLogger(__name__)

WORKER_FAILURES_TOLERATED = 2
"""How often a trial's worker group may fail and restart from its last checkpoint."""


def train_worker(loop_config: dict[str, Any]) -> None:
    """The per-worker body: resnet_core's engine with reports (and rank 0's checkpoint) to Ray Train."""
    context = ray.train.get_context()
    rank = context.get_world_rank()
    config = TrainConfig.from_dict(loop_config).replace(device=str(ray.train.torch.get_device()))
    out_dir = Path(tempfile.mkdtemp(prefix=f"resnet-trial-rank{rank}-"))
    resume_from = None
    previous = ray.train.get_checkpoint()
    if previous is not None:  # a restarted worker group (or a resumed study) continues exactly
        restored = Path(previous.to_directory(str(out_dir / "restored")))
        resume_from = restored / CHECKPOINT_NAME
        log.info("rank %d resumes from %s", rank, resume_from)

    def report(evaluation: EvalReport) -> None:
        metrics = {key: value for key, value in evaluation.row().items() if value is not None}
        checkpoint = None
        if rank == 0 and evaluation.checkpoint is not None:
            checkpoint = Checkpoint.from_directory(str(Path(evaluation.checkpoint).parent))
        ray.train.report(metrics, checkpoint=checkpoint)

    try:
        fit(config, out_dir=out_dir / "run", resume_from=resume_from, callbacks=[report])
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def trial_train_config(spec: StudySpec, config: dict[str, Any]) -> tuple[Group, TrainConfig]:
    """The group and engine config of one trial from the values Tune chose (``group``, ``lr``, ...)."""
    groups = {group.key: group for group in spec.study_groups()}
    group = groups[config["group"]]
    final = config.get("phase") == "final"
    train_config = spec.train_config(
        group, lr=float(config["lr"]), weight_decay=float(config["weight_decay"]),
        seed=int(config.get("seed", spec.train.seed)), val_split=0 if final else None,
    )
    return group, train_config


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
