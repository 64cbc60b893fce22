"""The project's searcher really searches: after a budget-sized random start-up, multivariate TPE proposes
the points, and on a cheap synthetic objective (benchmarks/sampler_choice.py's lr x weight-decay error
surface) it finds lower minima than random search with the same budget, seeds and searcher."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `benchmarks`

from benchmarks.sampler_choice import FULL, SPACE, SURFACES, regret  # noqa: E402
from study.search import GroupedSearcher, startup_trials  # noqa: E402

SURFACE = SURFACES[0]


def test_start_up_is_sized_to_the_budget() -> None:
    assert [startup_trials(n) for n in (1, 2, 3, 6, 8, 15, 30)] == [1, 2, 2, 2, 3, 5, 10]


def test_after_the_start_up_every_suggestion_comes_from_multivariate_tpe(monkeypatch: pytest.MonkeyPatch) -> None:
    relative: dict[int, dict[str, float]] = {}
    original = optuna.samplers.TPESampler.sample_relative

    def spy(self, study, trial, search_space):  # noqa: ANN001 - Optuna's own signature
        params = original(self, study, trial, search_space)
        relative[trial.number] = params
        return params

    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_relative", spy)
    budget = 9
    searcher = GroupedSearcher(SPACE, {"g": budget}, full_iterations=FULL, sampler="tpe", seed=3)
    suggested = []
    for index in range(budget):
        point = searcher.suggest(f"t{index}")
        suggested.append(point)
        value = SURFACE(point["lr"], point["weight_decay"])
        searcher.on_trial_complete(f"t{index}", {"iteration": FULL, "train_loss": 1.0, "val_error": value})
    startup = startup_trials(budget)
    assert all(relative[n] == {} for n in range(startup))  # the random start-up
    for n in range(startup, budget):  # then the model proposes both values jointly (multivariate)
        assert relative[n] == {"lr": suggested[n]["lr"], "weight_decay": suggested[n]["weight_decay"]}
    assert set(searcher.states().values()) == {"COMPLETE"}


@pytest.mark.parametrize("surface", SURFACES, ids=lambda surface: surface.name)
def test_tpe_finds_lower_minima_than_random_search_on_the_same_budget(surface) -> None:  # noqa: ANN001
    seeds, budget = range(12), 12
    tpe = [regret("tpe", surface, surface.floor, seed, budget) for seed in seeds]
    random = [regret("random", surface, surface.floor, seed, budget) for seed in seeds]
    assert statistics.fmean(tpe) < 0.6 * statistics.fmean(random), (tpe, random)
    assert sum(t < r for t, r in zip(tpe, random)) >= 7, (tpe, random)
