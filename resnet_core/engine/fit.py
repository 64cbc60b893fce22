"""The training engine: one function, :func:`fit`, used by the CLI, the tests and distributed workers.

It trains a registered model with the paper's recipes -- CIFAR (He et al. 2015, Sec. 4.2: SGD, momentum
0.9, weight decay 1e-4, batch 128, step schedule counted in iterations, warm-up for depth >= 110) and
ImageNet (Sec. 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, top-1 and top-5 error) --,
evaluates at intervals, writes atomic checkpoints (every so many iterations and, optionally, every so many
seconds of wall time), resumes exactly from any of them, and runs alone or under
``torch.distributed`` (data sharded by rank, gradients averaged by DDP, metrics summed across ranks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from resnet_core.data.imagenet import ImageFolderIndex
from resnet_core.data.sources import ImageDataset
from resnet_core.engine.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from resnet_core.engine.config import RESUMABLE_CHANGES, TrainConfig
from resnet_core.engine.distributed import ProcessGroup, all_reduce_sum, barrier, broadcast_buffers, current_group
from resnet_core.engine.evaluate import accumulator_dtype, evaluate
from resnet_core.engine.inputs import EvalSet, Inputs, load_inputs
from resnet_core.engine.schedule import PlateauMonitor, StepSchedule, WarmupMonitor, warmup_enabled
from resnet_core.engine.step import Execution, TrainStep
from resnet_core.errors import CheckpointError, ConfigError
from resnet_core.models import Shortcut, count_parameters, create_model, model_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalReport:
    """One evaluation: errors in percent, losses as mean cross-entropy, ``seconds`` of training so far.

    ``test_*`` is the test split (for ImageNet the ``val/`` folder, as the paper reports), ``val_*`` the
    hold-out of training images (``val_split``); top-5 errors are the ImageNet tables' second figure.
    """

    iteration: int
    lr: float
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    val_loss: float | None
    val_error: float | None
    seconds: float
    checkpoint: str | None = None
    """Path of the checkpoint written at this evaluation, if one was (for Ray/MLflow to pick up)."""
    test_top5_error: float | None = None
    val_top5_error: float | None = None

    def row(self) -> dict[str, Any]:
        """The metrics as a flat dict (what ``metrics.csv`` holds), without the checkpoint path."""
        values = asdict(self)
        values.pop("checkpoint")
        return values


Callback = Callable[[EvalReport], None]


@dataclass(frozen=True)
class CheckpointWritten:
    """A checkpoint written at an iteration that is not an evaluation (by ``checkpoint_every`` or
    ``checkpoint_seconds``); evaluations carry theirs in :attr:`EvalReport.checkpoint` instead."""

    iteration: int
    path: str
    """Path of the checkpoint file (rank 0 wrote it; every rank is told, after the barrier)."""


CheckpointCallback = Callable[[CheckpointWritten], None]

TIME_CHECK_EVERY = 25
"""Iterations between two looks at the clock for ``checkpoint_seconds``. Under torch.distributed the ranks
agree at these iterations only (one 1-element all-reduce of rank 0's verdict, a host sync), so a time-based
checkpoint lands on a multiple of it, up to ``TIME_CHECK_EVERY`` iterations after it fell due."""


@dataclass(frozen=True)
class FitResult:
    config: TrainConfig
    model: nn.Module
    """The trained, unwrapped model (never the DDP wrapper)."""
    shortcut: str
    params: int
    history: tuple[EvalReport, ...]
    wall_seconds: float
    warmup_ended_at: int | None
    plateau_decays: int = 0

    @property
    def final(self) -> EvalReport:
        return self.history[-1]

    def summary(self) -> dict[str, Any]:
        """What ``results.json`` holds: the run's identity and its final figures."""
        final = self.final
        return {
            "arch": self.config.arch,
            "dataset": self.config.dataset,
            "shortcut": self.shortcut,
            "residual": model_info(self.config.arch).residual,
            "params": self.params,
            "iterations": final.iteration,
            "test_error": final.test_error,
            "test_top5_error": final.test_top5_error,
            "test_loss": final.test_loss,
            "val_error": final.val_error,
            "train_error": final.train_error,
            "wall_seconds": self.wall_seconds,
            "warmup_ended_at": self.warmup_ended_at,
            "lr_decays_on_plateau": self.plateau_decays,
            "seed": self.config.seed,
        }


def resolve_device(spec: str, group: ProcessGroup) -> torch.device:
    """``auto`` picks CUDA (this rank's GPU), then MPS, then CPU; an explicit device must exist."""
    kind = spec.split(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", group.local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for but CUDA is not available: use --device cpu or auto")
        return torch.device(spec if ":" in spec else f"cuda:{group.local_rank % torch.cuda.device_count()}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' asked for but MPS is not available: use --device cpu or auto")
    return torch.device(spec)


def check_model_options(config: TrainConfig) -> None:
    """Fail fast (before any data is read) on an unknown arch or options it cannot take, e.g. depth 25."""
    with torch.device("meta"):
        build_model(config)


def build_model(config: TrainConfig, num_classes: int | None = None) -> nn.Module:
    """The registered model ``config.arch`` with the config's options (None keeps the model's default)."""
    return create_model(config.arch, depth=config.depth, shortcut=config.shortcut, stride_in=config.stride_in,
                        num_classes=num_classes)


class _Run:
    """The mutable state of one training run; :func:`fit` drives it."""

    def __init__(self, config: TrainConfig, data: ImageDataset | ImageFolderIndex | None, group: ProcessGroup) -> None:
        self.group = group
        self.device = resolve_device(config.device, group)
        self.execution = Execution.for_config(config, self.device)
        self.execution.apply_threads()
        self.inputs: Inputs = load_inputs(config, data, group, self.device)
        # Epoch-based lengths become iterations now that the training set's size is known.
        self.config = config = config.with_epochs_resolved(self.inputs.train.batches_per_epoch)
        self.batches = self.inputs.train

        torch.manual_seed(config.seed)
        self.model = build_model(config, self.inputs.num_classes)
        self.shortcut = Shortcut.parse(config.shortcut or model_info(config.arch).options["shortcut"]).value
        self.params = count_parameters(self.model)
        self.train_step = TrainStep.create(self.model, self.execution, lr=config.lr, momentum=config.momentum,
                                           weight_decay=config.weight_decay,
                                           wrap=self._distributed if group.active else None)
        self.schedule = StepSchedule.from_config(config)
        self.warmup = WarmupMonitor(warmup_enabled(config, getattr(self.model, "depth", None)),
                                    config.warmup_until_error, config.warmup_window)
        self.plateau = PlateauMonitor.from_config(config)
        self.iteration = 0
        self.lr = self.current_lr(0)
        # [loss sum, error count, images] since the last evaluation, and [errors, images] of the warm-up window.
        self.train_sums = torch.zeros(3, dtype=accumulator_dtype(self.device), device=self.device)
        self.window_sums = torch.zeros(2, dtype=accumulator_dtype(self.device), device=self.device)
        self.history: list[EvalReport] = []
        self.seconds_before = 0.0

    # ----------------------------------------------------------------- training
    def current_lr(self, iteration: int) -> float:
        return self.schedule.lr(iteration, self.warmup.active, self.plateau.decays)

    def _distributed(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped for data-parallel training across the run's processes (gradients all-reduced)."""
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def step(self) -> None:
        """One SGD update on batch ``self.iteration``."""
        self.lr = self.current_lr(self.iteration)
        self.train_step.set_lr(self.lr)
        inputs, labels = self.batches.batch(self.iteration)
        loss, errors = self.train_step(inputs, labels)
        with torch.no_grad():  # device-side sums: read at evaluation (and per warm-up window), never per step
            self.train_sums[0] += loss * len(labels)
            self.train_sums[1] += errors
            self.train_sums[2] += len(labels)
            if self.warmup.active:
                self.window_sums[0] += errors
                self.window_sums[1] += len(labels)
        self.iteration += 1
        if self.warmup.active and self.iteration % self.config.warmup_window == 0:
            errors_seen, seen = all_reduce_sum(self.window_sums.clone(), self.group).tolist()
            self.window_sums.zero_()
            if self.warmup.update(self.iteration, 100.0 * errors_seen / seen):
                log.info("warm-up ended at iteration %d (training error %.1f%% < %.0f%%); lr back to %g",
                         self.iteration, 100.0 * errors_seen / seen, self.config.warmup_until_error,
                         self.config.lr)

    def score(self, split: EvalSet) -> tuple[float, float, float]:
        scores = evaluate(self.model, split.batches(), self.device, self.group, self.execution.autocast(),
                          self.execution.prepare_inputs)
        return scores.loss, scores.error, scores.top5_error

    def evaluate(self, seconds: float) -> EvalReport:
        broadcast_buffers(self.model, self.group)
        loss_sum, errors, count = all_reduce_sum(self.train_sums.clone(), self.group).tolist()
        self.train_sums.zero_()
        test_loss, test_error, test_top5 = self.score(self.inputs.test)
        val_loss = val_error = val_top5 = None
        if self.inputs.val is not None:
            val_loss, val_error, val_top5 = self.score(self.inputs.val)
        report = EvalReport(self.iteration, self.lr, loss_sum / max(count, 1), 100.0 * errors / max(count, 1),
                            test_loss, test_error, val_loss, val_error, seconds, test_top5_error=test_top5,
                            val_top5_error=val_top5)
        # Plateau decay watches the held-out error: the hold-out when there is one, else the test split
        # (ImageNet's val/ folder, on which the paper plots its curves, Fig. 4).
        if self.plateau.update(test_error if val_error is None else val_error):
            log.info("error plateaued for %d evaluations: lr divided by %g (decay %d)", self.config.plateau_patience,
                     1 / self.config.lr_decay, self.plateau.decays)
        return report

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self, seconds: float) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.train_step.optimizer.state_dict(),
            "warmup": {"active": self.warmup.active, "ended_at": self.warmup.ended_at},
            "plateau": self.plateau.state_dict(),
            "train_sums": self.train_sums.cpu(),
            "window_sums": self.window_sums.cpu(),
            "rng": rng_state(self.device),
            "history": [report.row() for report in self.history],
            "seconds": seconds,
        }

    def save(self, path: Path, seconds: float) -> None:
        """Write the checkpoint (rank 0, with its BN statistics on every rank) and wait until it is on disk."""
        broadcast_buffers(self.model, self.group)
        if self.group.is_main:
            save_checkpoint(path, self.state_dict(seconds))
        barrier(self.group)

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        saved = TrainConfig.from_dict(state["config"])
        changed = {key: values for key, values in self.config.changes_from(saved).items()
                   if key not in RESUMABLE_CHANGES}
        if changed:
            key, (before, now) = next(iter(sorted(changed.items())))
            raise CheckpointError(
                f"checkpoint '{source}' was written with {key}={before!r} but this run asks for {key}={now!r}: "
                "resume with the same settings, or start a new run in another --out"
            )
        if state["iteration"] > self.config.iterations:
            raise CheckpointError(
                f"checkpoint '{source}' is at iteration {state['iteration']}, beyond iterations="
                f"{self.config.iterations}: raise --iterations to continue it"
            )
        self.model.load_state_dict(state["model"])
        self.train_step.optimizer.load_state_dict(state["optimizer"])
        self.iteration = state["iteration"]
        self.warmup.active = state["warmup"]["active"]
        self.warmup.ended_at = state["warmup"]["ended_at"]
        if "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
        self.train_sums.copy_(state["train_sums"])
        self.window_sums.copy_(state["window_sums"])
        restore_rng_state(state["rng"], self.device)
        self.history = [EvalReport(**row) for row in state["history"]]
        self.seconds_before = float(state["seconds"])
        self.lr = self.current_lr(max(self.iteration - 1, 0))


class _CheckpointClock:
    """Says when ``checkpoint_seconds`` of wall time have passed since the last checkpoint, by rank 0's clock.

    It looks only every :data:`TIME_CHECK_EVERY` iterations; under torch.distributed every rank then takes rank
    0's verdict (a summed 1-element flag), so all of them checkpoint at the same iteration.
    """

    def __init__(self, seconds: float, group: ProcessGroup, device: torch.device) -> None:
        self.seconds = seconds
        self.group = group
        self.device = device
        self.last = time.monotonic()

    def restart(self) -> None:
        """A checkpoint was just written: count from now."""
        self.last = time.monotonic()

    def due(self, iteration: int) -> bool:
        """Whether a time-based checkpoint is due after ``iteration`` (the same answer on every rank)."""
        if self.seconds <= 0 or iteration % TIME_CHECK_EVERY != 0:
            return False
        late = self.group.is_main and time.monotonic() - self.last >= self.seconds
        if not self.group.active:
            return late
        flag = torch.tensor([1.0 if late else 0.0], device=self.device)
        return all_reduce_sum(flag, self.group).item() > 0


def fit(
    config: TrainConfig,
    *,
    data: ImageDataset | ImageFolderIndex | None = None,
    out_dir: Path | None = None,
    resume_from: Path | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_callbacks: Sequence[CheckpointCallback] = (),
    progress: bool = False,
) -> FitResult:
    """Train ``config.arch`` as ``config`` says and return the model, its history and final figures.

    ``data`` skips reading ``config.data``: an in-memory CIFAR-style set, or a scanned ImageNet folder
    (:func:`~resnet_core.data.imagenet.scan_image_folders`) for ``dataset="imagenet"``. ``out_dir`` receives
    ``checkpoint.pt`` every ``checkpoint_every`` iterations, when ``checkpoint_seconds`` have passed since the
    last one (looked at every :data:`TIME_CHECK_EVERY` iterations), and at the end (rank 0 writes).
    ``resume_from`` continues from a checkpoint exactly. Each evaluation is passed to every callback (with the
    checkpoint written at it, if any); each checkpoint written between evaluations is passed, on every rank, to
    every checkpoint callback.
    """
    check_model_options(config)
    group = current_group()
    run = _Run(config, data, group)
    config = run.config
    if resume_from is not None:
        run.load_state_dict(load_checkpoint(resume_from, map_location=run.device), resume_from)
        log.info("resumed from %s at iteration %d", resume_from, run.iteration)
    if group.is_main:
        log.info("training %s (shortcut %s, %s parameters) on %s%s: %d iterations (%d per epoch of %s images), "
                 "batch %d, lr %g, weight decay %g, %s, warm-up %s", config.arch, run.shortcut, f"{run.params:,}",
                 run.device, f" x{group.world_size} ranks" if group.active else "", config.iterations,
                 run.batches.batches_per_epoch, f"{run.inputs.train_images:,}", config.batch_size, run.schedule.base_lr,
                 config.weight_decay, f"milestones {list(config.milestones)}" if config.lr_schedule == "step" else
                 f"lr divided on plateaus of {config.plateau_patience} evaluations", "on" if run.warmup.active else "off")
        log.info("execution: %s", run.execution.describe())
    checkpoint_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    clock = _CheckpointClock(config.checkpoint_seconds if checkpoint_path is not None else 0.0, group, run.device)
    started = time.perf_counter()

    def seconds() -> float:
        return run.seconds_before + time.perf_counter() - started

    bar = tqdm(total=config.iterations, initial=run.iteration, unit="it", dynamic_ncols=True,
               disable=not (progress and group.is_main), desc=config.arch)
    run.model.train()
    with bar:
        while run.iteration < config.iterations:
            run.step()
            bar.update(1)
            done = run.iteration == config.iterations
            report = None
            if run.iteration % config.eval_every == 0 or done:
                report = run.evaluate(seconds())
                run.history.append(report)
                bar.set_postfix(lr=f"{report.lr:g}", train=f"{report.train_error:.1f}%",
                                test=f"{report.test_error:.1f}%")
                if group.is_main:
                    log.info("iteration %d: lr %g, train error %.2f%%, test error %.2f%% (top-5 %.2f%%)%s",
                             report.iteration, report.lr, report.train_error, report.test_error,
                             report.test_top5_error, "" if report.val_error is None else
                             f", val error {report.val_error:.2f}%")
            scheduled = run.iteration % config.checkpoint_every == 0 or done
            if checkpoint_path is not None and (scheduled or clock.due(run.iteration)):
                run.save(checkpoint_path, seconds())
                clock.restart()
                if report is not None:
                    report = EvalReport(**{**asdict(report), "checkpoint": str(checkpoint_path)})
                else:
                    written = CheckpointWritten(run.iteration, str(checkpoint_path))
                    for checkpoint_callback in checkpoint_callbacks:
                        checkpoint_callback(written)
            if report is not None:
                for callback in callbacks:
                    callback(report)
    close = getattr(run.batches, "close", None)
    if close is not None:
        close()
    if not run.history:
        raise CheckpointError(f"checkpoint '{resume_from}' holds no evaluation to report: it is not one of ours")
    broadcast_buffers(run.model, group)
    return FitResult(config, run.model, run.shortcut, run.params, tuple(run.history), seconds(),
                     run.warmup.ended_at, run.plateau.decays)
