"""The search: one Optuna study and one early-stopping scheduler *per group* inside one Ray Tune run.

Each (architecture, shortcut) group gets its own Optuna study over the searched fields (``lr`` and
``weight_decay`` by default; any numeric or categorical TrainConfig field the spec names), so what is
learnt about ResNet-20 never steers the search for plain-110. The groups share one Tune run, so trials of
all groups run side by side as far as the resources allow, and one experiment directory holds the whole
search (which is what makes ``Tuner.restore`` continue an interrupted study).

The sampler sees every trial as what it was (Optuna's ask-and-tell interface, no adapter in between):
a trial that trained the full budget is COMPLETE with its final validation error; a trial the scheduler
stopped is PRUNED, with the validation errors it reported (stepped by engine iteration) as intermediate
values, which TPE ranks below every complete trial; a trial that raised is FAIL.

Early stopping compares a trial only with trials of its own group (ASHA per group, counted in engine
iterations), and stops at once a trial whose loss is no longer finite or that is no better than chance
after its grace period -- the paper's observation that a too-large rate fails to start converging
(Sec. 4.2, ResNet-110) is what this catches cheaply.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.spec import SearchSpec, field_kind

METRIC, MODE = "val_error", "min"
"""The search objective: validation error in percent (never the test set)."""

TIME_ATTR = "iteration"
"""What budgets are counted in: the engine's iterations (SGD steps), as the paper counts its schedule
(Sec. 4.2: 32k, 48k, 64k). Never Tune's count of reports, which restarts or drifts when a trial resumes."""

SAMPLERS = ("tpe", "gp", "random")
DEFAULT_SAMPLER = "tpe"
"""Chosen by measurement (``benchmarks/sampler_choice.py``); see the README's study section."""


def startup_trials(budget: int) -> int:
    """Random start-up trials of a group before its model-based sampler takes over.

    The rule: about a third of the group's budget, at least 2 (a density or a Gaussian process needs
    two points), never more than the budget. 8 trials -> 3 random (the spec's initial point among them),
    then 5 from the model. Optuna's default of 10 would make every trial of a small study random.
    """
    return min(budget, max(2, round(budget / 3)))


def make_sampler(name: str, seed: int, budget: int, concurrent: bool = False) -> optuna.samplers.BaseSampler:
    """Optuna's sampler by name, sized to a group's ``budget`` of trials.

    ``tpe``: multivariate TPE (lr and weight decay interact: their product sets the effective
    regularisation), with ``constant_liar`` when the group's trials run concurrently, so two trials
    started side by side are not handed the same point. ``gp``: Optuna's Gaussian-process sampler, made
    for small budgets of continuous parameters (noisy objective). ``random``: plain random search.
    """
    startup = startup_trials(budget)
    with warnings.catch_warnings():  # multivariate TPE is marked experimental; this is the one place it is chosen
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(n_startup_trials=startup, multivariate=True, constant_liar=concurrent,
                                              seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(n_startup_trials=startup, deterministic_objective=False, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")


def search_space(search: SearchSpec) -> dict[str, BaseDistribution]:
    """Optuna's distribution of every searched field: choices are categorical; a range of an integer field is an
    :class:`IntDistribution`, of a float field a :class:`FloatDistribution` (log scale as the range says)."""
    space: dict[str, BaseDistribution] = {}
    for name, span in search.space.items():
        log = span.is_log(name)
        if span.choices is not None:
            space[name] = CategoricalDistribution(span.choices)
        elif field_kind(name) is int:
            space[name] = IntDistribution(int(span.low), int(span.high), log=log, step=int(span.step or 1))
        else:
            space[name] = FloatDistribution(span.low, span.high, log=log, step=span.step)
    return space


EVALUATION_KEYS = ("train_loss", "train_error", "val_error", "test_error")


def is_evaluation(result: Mapping[str, Any]) -> bool:
    """Whether a Tune result is one of the engine's evaluations (a checkpoint between evaluations reports only
    its ``iteration``)."""
    return "iteration" in result and any(key in result for key in EVALUATION_KEYS)


@dataclass
class _Asked:
    """A Tune trial's Optuna trial, and the last iteration reported to it."""

    group: str
    trial: optuna.trial.Trial
    last_step: int = -1


class GroupedSearcher(Searcher):
    """Serves Tune's requests for new trials from one Optuna study per group, in turn.

    ``budgets`` maps each group key to its number of trials; ``full_iterations`` is a complete trial's
    length in engine iterations (shorter ones were pruned). Every suggestion carries ``group`` next to
    the sampled values, and results are told to the group's study.
    """

    def __init__(
        self,
        space: Mapping[str, BaseDistribution],
        budgets: Mapping[str, int],
        *,
        full_iterations: int,
        sampler: str = DEFAULT_SAMPLER,
        seed: int = 0,
        initial_points: Sequence[Mapping[str, float]] = (),
        concurrent: bool = False,
    ) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.space = dict(space)
        self.budgets = dict(budgets)
        self.full_iterations = full_iterations
        self.suggested: dict[str, int] = {group: 0 for group in budgets}
        self.asked: dict[str, _Asked] = {}
        self.studies: dict[str, optuna.Study] = {}
        for index, group in enumerate(budgets):
            study = optuna.create_study(study_name=group, direction="minimize",
                                        sampler=make_sampler(sampler, seed + index, self.budgets[group], concurrent))
            for point in initial_points:
                study.enqueue_trial(dict(point))
            self.studies[group] = study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode are fixed by the study

    def _next_group(self) -> str | None:
        open_groups = [g for g in self.budgets if self.suggested[g] < self.budgets[g]]
        return min(open_groups, key=lambda g: self.suggested[g]) if open_groups else None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        group = self._next_group()
        if group is None:
            return Searcher.FINISHED
        trial = self.studies[group].ask(self.space)
        self.suggested[group] += 1
        self.asked[trial_id] = _Asked(group, trial)
        return {**trial.params, "group": group}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Each evaluation becomes an intermediate value at its engine iteration (once, also after a resume)."""
        asked = self.asked.get(trial_id)
        if asked is None or not is_evaluation(result) or METRIC not in result:
            return
        step = int(result["iteration"])
        if step > asked.last_step:
            asked.trial.report(float(result[METRIC]), step)  # NaN (diverged) ranks last among pruned trials
            asked.last_step = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        asked = self.asked.get(trial_id)
        if asked is None or self._state(asked).is_finished():
            return
        if result is not None and not error:
            self.on_trial_result(trial_id, result)
        value = float((result or {}).get(METRIC, math.nan))
        reached = int((result or {}).get("iteration", 0))
        study = self.studies[asked.group]
        if error:
            study.tell(asked.trial, state=TrialState.FAIL)
        elif reached >= self.full_iterations and math.isfinite(value):
            study.tell(asked.trial, value)
        else:
            study.tell(asked.trial, state=TrialState.PRUNED)

    def _state(self, asked: _Asked) -> TrialState:
        return self.studies[asked.group].get_trials(deepcopy=False)[asked.trial.number].state

    def states(self) -> dict[str, str]:
        """Tune trial id -> the Optuna state of its trial (COMPLETE, PRUNED, FAIL, RUNNING)."""
        return {trial_id: self._state(asked).name for trial_id, asked in self.asked.items()}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as stream:
            pickle.dump(self.__dict__, stream)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as stream:
            self.__dict__.update(pickle.load(stream))


class GroupedScheduler(FIFOScheduler):
    """ASHA within each group, plus stopping of diverged or chance-level trials after the grace period.

    Budgets are engine iterations (:data:`TIME_ATTR`): ``max_iterations`` is a full trial, and no trial is
    stopped for its standing before ``grace_iterations``.
    """

    def __init__(self, groups: Sequence[str], *, max_iterations: int, grace_iterations: int, reduction_factor: int,
                 chance_error: float, use_asha: bool = True) -> None:
        super().__init__()
        self._metric, self._mode = METRIC, MODE
        self.grace_iterations = min(grace_iterations, max_iterations)
        self.chance_error = chance_error
        self.asha: dict[str, ASHAScheduler] = {}
        if use_asha:
            self.asha = {
                group: ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode=MODE, max_t=max(max_iterations, 1),
                                     grace_period=max(self.grace_iterations, 1), reduction_factor=reduction_factor)
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
        if not is_evaluation(result):
            return TrialScheduler.CONTINUE  # a checkpoint between evaluations: nothing to judge
        decision = TrialScheduler.CONTINUE
        if self._hopeless(result):
            decision = TrialScheduler.STOP
        elif (asha := self._asha(trial)) is not None:
            decision = asha.on_trial_result(tune_controller, trial, result)
        return decision

    def _hopeless(self, result: Mapping[str, Any]) -> bool:
        loss, error = float(result.get("train_loss", math.nan)), float(result.get(METRIC, math.nan))
        if not (math.isfinite(loss) and math.isfinite(error)):
            return True
        return result.get(TIME_ATTR, 0) >= self.grace_iterations and error >= self.chance_error

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        if (asha := self._asha(trial)) is not None and is_evaluation(result):
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        if (asha := self._asha(trial)) is not None:
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"GroupedScheduler: ASHA in {len(self.asha)} groups, chance-level stop at {self.chance_error:.0f}%"
