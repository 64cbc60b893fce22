"""The search: one Optuna sampler and one early-stopping scheduler *per group* inside one Ray Tune run.

Each (architecture, shortcut) group gets its own Optuna study over ``lr`` and ``weight_decay`` (TPE by
default), so what is learnt about ResNet-20 never steers the search for plain-110. The groups share one
Tune run, so trials of all groups run side by side as far as the resources allow, and one experiment
directory holds the whole search (which is what makes ``Tuner.restore`` continue an interrupted study).

Early stopping compares a trial only with trials of its own group (ASHA per group), and stops at once a
trial whose loss is no longer finite or that is no better than chance after its grace period -- the
paper's observation that a too-large rate fails to start converging (Sec. 4.2, ResNet-110) is what this
catches cheaply.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

METRIC, MODE = "val_error", "min"
"""The search objective: validation error in percent (never the test set)."""

TIME_ATTR = "training_iteration"
"""Tune's count of reports; one report is one evaluation of the engine."""


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler by name: ``tpe`` (default) or ``random``."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


class GroupedSearcher(Searcher):
    """Dispatches Tune's requests for new trials to one :class:`OptunaSearch` per group, in turn.

    ``budgets`` maps each group key to its number of trials; every suggestion carries ``group`` next to
    the sampled values, and results are routed back to the group's sampler.
    """

    def __init__(
        self,
        space: Mapping[str, Any],
        budgets: Mapping[str, int],
        *,
        sampler: str = "tpe",
        seed: int = 0,
        initial_points: Sequence[Mapping[str, float]] = (),
    ) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.budgets = dict(budgets)
        self.suggested: dict[str, int] = {group: 0 for group in budgets}
        self.trial_groups: dict[str, str] = {}
        self.searchers: dict[str, OptunaSearch] = {}
        for index, group in enumerate(budgets):
            self.searchers[group] = OptunaSearch(
                space=dict(space), metric=METRIC, mode=MODE, sampler=make_sampler(sampler, seed + index),
                points_to_evaluate=[dict(point) for point in initial_points] or None,
            )

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode are fixed by the study

    def _next_group(self) -> str | None:
        open_groups = [g for g in self.budgets if self.suggested[g] < self.budgets[g]]
        return min(open_groups, key=lambda g: self.suggested[g]) if open_groups else None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        group = self._next_group()
        if group is None:
            return Searcher.FINISHED
        values = self.searchers[group].suggest(trial_id)
        if values is None or values == Searcher.FINISHED:
            return values
        self.suggested[group] += 1
        self.trial_groups[trial_id] = group
        return {**values, "group": group}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        group = self.trial_groups.get(trial_id)
        if group is not None:
            self.searchers[group].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        group = self.trial_groups.get(trial_id)
        if group is None:
            return
        if result is not None and not math.isfinite(float(result.get(METRIC, math.nan))):
            error = True  # a diverged trial tells the sampler nothing usable about the error surface
        self.searchers[group].on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as stream:
            pickle.dump(self.__dict__, stream)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as stream:
            self.__dict__.update(pickle.load(stream))


class GroupedScheduler(FIFOScheduler):
    """ASHA within each group, plus stopping of diverged or chance-level trials after the grace period."""

    def __init__(self, groups: Sequence[str], *, max_reports: int, grace_reports: int, reduction_factor: int,
                 chance_error: float, use_asha: bool = True) -> None:
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self.grace_reports = grace_reports
        self.chance_error = chance_error
        self.asha: dict[str, ASHAScheduler] = {}
        if use_asha:
            self.asha = {
                group: ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max(max_reports, 1),
                                     grace_period=min(grace_reports, max(max_reports, 1)),
                                     reduction_factor=reduction_factor)
                for group in groups
            }

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _asha(self, trial: Trial) -> ASHAScheduler | None:
        return self.asha.get(trial.config.get("group", ""))

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = TrialScheduler.CONTINUE
        if self._hopeless(result):
            decision = TrialScheduler.STOP
        elif (asha := self._asha(trial)) is not None:
            decision = asha.on_trial_result(tune_controller, trial, result)
        return decision

    def _hopeless(self, result: dict) -> bool:
        loss, error = float(result.get("train_loss", math.nan)), float(result.get(METRIC, math.nan))
        if not (math.isfinite(loss) and math.isfinite(error)):
            return True
        return result.get(TIME_ATTR, 0) >= self.grace_reports and error >= self.chance_error

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"GroupedScheduler: ASHA in {len(self.asha)} groups, chance-level stop at {self.chance_error:.0f}%"


def search_space(lr: tuple[float, float], weight_decay: tuple[float, float]) -> dict[str, Any]:
    """Log-uniform ranges for the two tuned hyperparameters."""
    return {"lr": tune.loguniform(*lr), "weight_decay": tune.loguniform(*weight_decay)}
