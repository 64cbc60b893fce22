"""A study from start to end: search per group, retrain each group's best on the full training set with
``final_seeds`` seeds, then the report -- each phase a Ray Tune run that ``Tuner.restore`` can continue.

Phase 1 (search): Optuna samples the searched fields (``lr`` and ``weight_decay`` unless the spec says otherwise)
per group; the objective is the validation
error on the held-out split (the paper chose its schedule on 45k/5k, Sec. 4.2); bad trials stop early.
Phase 2 (final): the chosen configuration of each group is trained on all training images with
``final_seeds`` seeds and scored on the test set, so the report gives test error mean +- std (as the
paper's Table 6 gives for ResNet-110).
Then each group's first-seed final model is logged and registered (:mod:`study.final_models`), and the report
-- the answer with its uncertainty, paper Fig. 6 and Fig. 7, Optuna's analyses, every trial -- becomes the
study's MLflow run (:mod:`study.publish`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from ray import tune

from resnet_core import count_parameters, create_model, model_info
from resnet_core.models.imagenet_zoo import paper_imagenet_errors
from study.final_models import final_models, release
from study.progress import FINAL, SEARCH, ConsoleProgress, StudyPlan
from study.publish import publish_report
from study.report import PAPER_ITERATIONS, GroupResult, StudyBudget, format_table, format_values
from study.search import METRIC, MODE, GroupedScheduler, GroupedSearcher, search_space, startup_trials
from study.spec import Group, ResourcesSpec, StudySpec, spec_from_dict
from study.stop_signals import StopSignals
from study.study_data import StudyData
from study.tracking import MlflowTrialCallback, StudyTracker
from study.trial import WORKER_FAILURES_TOLERATED, searched_values, trial_driver, trial_train_config

log = logging.getLogger(__name__)

TRIAL_DRIVER_CPUS = 0.1
"""CPUs reserved for a trial's driver where it only waits for its TorchTrainer's worker group, which gets the rest.
Kept small so a 2-core machine still fits a trial's workers next to its driver."""


def trial_process_resources(resources: ResourcesSpec) -> dict[str, float]:
    """What Tune reserves for a trial's own process: the worker's CPUs and GPUs where the trial trains in it, else
    the driver's :data:`TRIAL_DRIVER_CPUS` (its worker group reserves its own)."""
    return resources.per_worker() if resources.trains_in_trial_process else {"CPU": TRIAL_DRIVER_CPUS}


def trial_footprint(resources: ResourcesSpec) -> dict[str, float]:
    """All a running trial holds: its own process and, where it has one, its worker group."""
    if resources.trains_in_trial_process:
        return trial_process_resources(resources)
    return {"CPU": TRIAL_DRIVER_CPUS + resources.workers_per_trial * resources.cpus_per_worker,
            "GPU": resources.workers_per_trial * resources.gpus_per_worker}


TUNE_CHECKPOINTS_KEPT = 2
"""Checkpoints Tune keeps per trial (a trial that trains in its own process): the newest two (see _tune_run_config)."""

CHANCE_MARGIN = 2.0
"""A trial whose validation error is within this many points of chance after its grace period is stopped;
a group whose best trial is no better is flagged in the report."""


def chance_error(num_classes: int) -> float:
    """The error (%) of guessing: 90% on CIFAR-10."""
    return 100.0 * (1 - 1 / num_classes)


@dataclass(frozen=True)
class TrialNamer:
    """Run name and MLflow params of a trial, from its Tune config (picklable, for ``Tuner.restore``)."""

    spec: dict[str, Any]

    def __call__(self, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        config = {**config, **config.get("final", {})}
        study = spec_from_dict(self.spec)
        group, train = trial_train_config(study, config)  # the run as the trial's workers will train it
        seed = train.seed
        phase = config.get("phase", "search")
        values = searched_values(study, config)
        name = (f"{group.key} seed {seed} (final)" if phase == "final"
                else f"{group.key} {format_values(values)}")
        params = {"arch": group.arch, "depth": group.depth, "shortcut": group.shortcut or "none",
                  "residual": group.residual, "seed": seed, "group": group.key, "phase": phase,
                  "iterations": study.train.iterations, "batch_size": study.train.batch_size,
                  **dict(group.settings), **values,
                  **{f"{CONFIG_PARAMS}{key}": value for key, value in train.to_dict().items()}}
        return name, params


CONFIG_PARAMS = "config."
"""Prefix of the MLflow params that hold a trial's whole engine configuration (``config.momentum``, ...)."""


def _fit(experiment: str, trainable: Any, make: Callable[[], tune.Tuner], signals: StopSignals) -> tune.ResultGrid:
    """Run (or continue, when its state exists: finished trials are not run again) a phase's Tune run; a stop
    signal that ended it raises :class:`~study.stop_signals.StudyInterrupted`."""
    signals.check()
    if tune.Tuner.can_restore(experiment):
        log.info("continuing %s", experiment)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = make()
    grid = tuner.fit()
    signals.check()
    return grid


def concurrent_trials(spec: StudySpec) -> int:
    """How many trials run at once: the spec's limit, else as many whole trials as the cluster holds now.

    Each trial is a driver plus its TorchTrainer workers; Tune only reserves the driver, so without this
    limit several drivers could each grab part of the workers they need and wait on each other forever.
    """
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    import ray

    total = ray.cluster_resources()
    fits = [int((total.get(kind, 0.0) + 1e-9) // need)
            for kind, need in trial_footprint(spec.resources).items() if need > 0]
    return max(1, min(fits))


def iteration_cost(group: Group) -> float:
    """The relative work of one training iteration of ``group``, for the ETA: Table 1's multiply-adds where the
    registry has them (ImageNet: ResNet-50's bottlenecks cost about what ResNet-34's blocks do, not 50/34 of it),
    else the depth (the CIFAR nets' cost grows with their depth at fixed width, Sec. 4.2)."""
    flops = model_info(group.arch).paper_flops
    return float(flops) if flops else float(group.depth)


def study_plan(spec: StudySpec) -> StudyPlan:
    """The trials the study will run, for its console."""
    groups = spec.study_groups()
    return StudyPlan(tuple(g.key for g in groups), spec.search.trials_per_group, spec.train.final_seeds,
                     spec.train.iterations, costs=tuple(iteration_cost(g) for g in groups))


def tune_verbosity(verbose: bool) -> int:
    """Tune's own console (its trial tables) only with ``--verbose``: :class:`ConsoleProgress` says what it would."""
    return 1 if verbose else 0


def _callbacks(spec: StudySpec, tracker: StudyTracker, phase: str) -> list[tune.Callback]:
    """A phase's Tune callbacks: its trials to MLflow, and to the console."""
    namer = TrialNamer(spec.to_dict())
    return [MlflowTrialCallback(tracker, phase, namer, spec.train.iterations),
            ConsoleProgress(study_plan(spec), phase, namer)]


def _trainable(spec: StudySpec, storage: str) -> Any:
    bound = tune.with_parameters(trial_driver, spec=spec.to_dict(), storage_path=f"{storage}/train")
    return tune.with_resources(bound, trial_process_resources(spec.resources))


def _failure_config(spec: StudySpec) -> tune.FailureConfig:
    """Tune restarts a failed trial from its last checkpoint where the trial trains in its own process; a worker
    group's failures are Ray Train's to handle (``study.trial``), not retried a second time by Tune."""
    in_trial = spec.resources.trains_in_trial_process
    return tune.FailureConfig(max_failures=WORKER_FAILURES_TOLERATED if in_trial else 0)


def _tune_run_config(spec: StudySpec, name: str, storage: str, callbacks: list[tune.Callback],
                     verbose: bool) -> tune.RunConfig:
    """A phase's Tune run: its storage, callbacks and console; trial restarts; the two newest checkpoints per trial
    kept (a trial that trains in its own process checkpoints through Tune). Two, not one: Tune snapshots its
    experiment state whenever a trial has written ``num_to_keep`` checkpoints since the last snapshot, so with one it
    would snapshot after every checkpoint (and warn when two trials checkpoint within seconds)."""
    return tune.RunConfig(name=name, storage_path=storage, callbacks=callbacks, verbose=tune_verbosity(verbose),
                          failure_config=_failure_config(spec),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=TUNE_CHECKPOINTS_KEPT))


def run_search(spec: StudySpec, tracker: StudyTracker, storage: str, num_classes: int,
               signals: StopSignals, verbose: bool = False) -> tune.ResultGrid:
    """Phase 1: per group, ``trials_per_group`` trials chosen by the group's Optuna sampler; budgets in engine
    iterations (a trial that stops before ``train.iterations`` was stopped early, and is PRUNED to Optuna)."""
    groups = spec.study_groups()
    eval_every = min(spec.train.eval_every, spec.train.iterations)
    scheduler = GroupedScheduler(
        [g.key for g in groups], max_iterations=spec.train.iterations,
        grace_iterations=spec.search.grace_evals * eval_every, reduction_factor=spec.search.reduction_factor,
        chance_error=chance_error(num_classes) - CHANCE_MARGIN, use_asha=spec.search.early_stopping == "asha",
    )
    searcher = GroupedSearcher(
        search_space(spec.search),
        {g.key: spec.search.trials_per_group for g in groups}, full_iterations=spec.train.iterations,
        sampler=spec.search.sampler, seed=spec.search.seed, initial_points=spec.search.initial_points,
        concurrent=concurrent_trials(spec) > 1,
    )
    trainable = _trainable(spec, storage)
    callbacks = _callbacks(spec, tracker, SEARCH)

    def make() -> tune.Tuner:
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, metric=METRIC, mode=MODE,
                                        num_samples=len(groups) * spec.search.trials_per_group,
                                        max_concurrent_trials=concurrent_trials(spec)),
            run_config=_tune_run_config(spec, SEARCH, storage, callbacks, verbose),
        )

    return _fit(f"{storage}/search", trainable, make, signals)


@dataclass(frozen=True)
class Choice:
    """A group's outcome of the search: its best trial's values (None when every trial diverged or failed)."""

    group: Group
    values: Mapping[str, Any] | None
    """The best trial's searched values, by field name."""
    val_error: float
    trials: int
    stopped_early: int
    flags: tuple[str, ...] = ()
    val_top5_error: float | None = None
    """The best trial's top-5 validation error (ImageNet; None on CIFAR)."""

    @property
    def usable(self) -> bool:
        return self.values is not None

    @property
    def lr(self) -> float | None:
        return None if self.values is None else self.values.get("lr")

    @property
    def weight_decay(self) -> float | None:
        return None if self.values is None else self.values.get("weight_decay")


def choose(spec: StudySpec, grid: tune.ResultGrid, num_classes: int) -> list[Choice]:
    """Per group, the trial with the lowest final validation error among those that trained the full budget
    (``train.iterations`` engine iterations); the group is flagged when that is no better than chance, when
    only early-stopped trials are left to choose from, or when every trial diverged or failed."""
    by_group: dict[str, list[Any]] = {}
    for result in grid:
        if result.config and "group" in result.config:
            by_group.setdefault(result.config["group"], []).append(result)
    choices = []
    for group in spec.study_groups():
        results = by_group.get(group.key, [])
        reached = {id(r): int((r.metrics or {}).get("iteration", 0)) for r in results}
        finite = [r for r in results if math.isfinite(float((r.metrics or {}).get(METRIC, math.nan)))]
        complete = [r for r in finite if reached[id(r)] >= spec.train.iterations]
        stopped = sum(1 for r in results if reached[id(r)] < spec.train.iterations)
        if not finite:
            choices.append(Choice(group, None, math.nan, len(results), stopped,
                                  ("every trial diverged or failed: no configuration to retrain",)))
            continue
        best = min(complete or finite, key=lambda r: r.metrics[METRIC])
        value, flags = float(best.metrics[METRIC]), []
        if not complete:
            flags.append(f"no trial trained all {spec.train.iterations:,} iterations: the best early-stopped one "
                         f"(at iteration {reached[id(best)]:,}) was chosen")
        if value >= chance_error(num_classes) - CHANCE_MARGIN:
            flags.append(f"best validation error {value:.1f}% is no better than chance "
                         f"({chance_error(num_classes):.0f}%): this group did not learn at this budget")
        top5 = best.metrics.get("val_top5_error")
        choices.append(Choice(group, searched_values(spec, best.config), value, len(results), stopped, tuple(flags),
                              None if top5 is None else float(top5)))
    return choices


def run_final(spec: StudySpec, choices: list[Choice], tracker: StudyTracker, storage: str,
              signals: StopSignals, verbose: bool = False) -> tune.ResultGrid | None:
    """Phase 2: each usable group's choice retrained on the full training set with ``final_seeds`` seeds."""
    usable = [c for c in choices if c.usable]
    if spec.train.final_seeds == 0 or not usable:
        return None
    runs = [{"group": c.group.key, **(c.values or {}), "seed": spec.train.seed + s, "phase": "final"}
            for c in usable for s in range(spec.train.final_seeds)]
    trainable = _trainable(spec, storage)
    callbacks = _callbacks(spec, tracker, FINAL)

    def make() -> tune.Tuner:
        return tune.Tuner(
            trainable, param_space={"final": tune.grid_search(runs)},
            tune_config=tune.TuneConfig(metric="test_error", mode="min", max_concurrent_trials=concurrent_trials(spec)),
            run_config=_tune_run_config(spec, FINAL, storage, callbacks, verbose),
        )

    return _fit(f"{storage}/final", trainable, make, signals)


def paper_error(spec: StudySpec, group: Group) -> tuple[float | None, float | None]:
    """The paper's top-1 and top-5 errors for this group, only where they apply. CIFAR-10: the test error of Table 6
    (no top-5), for option A or plain at the paper's full 64k-iteration schedule. ImageNet: Table 2/3's validation
    errors (10-crop) of the architecture with this shortcut option, always shown, as full-ImageNet figures (the report
    says whether the study's data is comparable)."""
    if spec.dataset.name == "imagenet":
        return paper_imagenet_errors(group.arch, group.shortcut) or (None, None)
    if spec.dataset.name != "cifar10" or spec.train.iterations != PAPER_ITERATIONS or group.shortcut not in (None, "A"):
        return None, None
    return model_info(group.arch).paper_error, None


def study_budget(spec: StudySpec, data: StudyData | None = None) -> StudyBudget:
    """What the study spent per group, and on what data, for the report's honest caveats."""
    return StudyBudget(dataset=spec.dataset.name, iterations=spec.train.iterations,
                       trials_per_group=spec.search.trials_per_group,
                       startup_trials=startup_trials(spec.search.trials_per_group), sampler=spec.search.sampler,
                       final_seeds=spec.train.final_seeds, classes=data and data.num_classes,
                       train_images=data and data.train_images)


def final_errors(final: tune.ResultGrid | None, key: str) -> dict[str, list[float]]:
    """Per group, the last ``key`` (``test_error``, ``test_top5_error``) of each of its final runs."""
    errors: dict[str, list[float]] = {}
    for result in final or []:
        group = (result.config or {}).get("final", {}).get("group")
        if group and result.metrics and result.metrics.get(key) is not None:
            errors.setdefault(group, []).append(float(result.metrics[key]))
    return errors


def summarise(spec: StudySpec, choices: list[Choice], final: tune.ResultGrid | None,
              num_classes: int | None = None) -> list[GroupResult]:
    """Each group's outcome: its choice, its final seeds' errors, its parameters (with ``num_classes`` outputs, else
    the architecture's default) and the paper's figures."""
    tests, tests_top5 = final_errors(final, "test_error"), final_errors(final, "test_top5_error")
    results = []
    for c in choices:
        with torch.device("meta"):
            classes = {} if num_classes is None else {"num_classes": num_classes}
            params = count_parameters(create_model(c.group.arch, shortcut=c.group.shortcut, **classes))
        config = spec.train_config(c.group, c.values, seed=spec.train.seed) if c.usable else None
        paper_top1, paper_top5 = paper_error(spec, c.group)
        results.append(GroupResult(
            group=c.group.key, arch=c.group.arch, depth=c.group.depth, residual=c.group.residual,
            shortcut=c.group.shortcut, params=params, lr=config and config.lr,
            weight_decay=config and config.weight_decay, val_error=c.val_error, trials=c.trials,
            stopped_early=c.stopped_early, test_errors=tuple(tests.get(c.group.key, ())),
            paper_error=paper_top1, flags=c.flags, searched=dict(c.values or {}), settings=dict(c.group.settings),
            val_top5_error=c.val_top5_error, test_top5_errors=tuple(tests_top5.get(c.group.key, ())),
            paper_top5_error=paper_top5,
        ))
    return results


def run_study(spec: StudySpec, tracker: StudyTracker, storage: str, data: StudyData,
              signals: StopSignals, verbose: bool = False) -> tuple[list[GroupResult], str]:
    """Both phases, the release of each group's model and the report; returns the group results and the report's
    Markdown for the console (the answer, the caveats and the table).

    A stop signal ends the running phase gracefully and raises :class:`~study.stop_signals.StudyInterrupted`.
    """
    tracker.log_spec(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    if spec.search.searches:
        with tracker.timed(SEARCH):
            grid = run_search(spec, tracker, storage, data.num_classes, signals, verbose)
        choices = choose(spec, grid, data.num_classes)
    else:
        choices = [Choice(group, spec.search.fixed_point(), math.nan, 0, 0) for group in spec.study_groups()]
    with tracker.timed(FINAL):
        final = run_final(spec, choices, tracker, storage, signals, verbose)
    with tracker.timed("report"):
        results = summarise(spec, choices, final, data.num_classes)
        budget = study_budget(spec, data)
        models = final_models(spec, final, tracker, data)
        released = release(spec, models, results, tracker, data)
        sentences = publish_report(spec, tracker, results, budget, models, data)
    lines = ["The answer:", *[f"- {sentence}" for sentence in sentences], "", format_table(results, budget)]
    if released:
        lines += ["", "Models: " + ", ".join(released.values())]
    return results, "\n".join(lines)
