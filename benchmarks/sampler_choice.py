"""Which Optuna sampler should a study group use? Each sampler runs through the study's own searcher
(:class:`study.search.GroupedSearcher`, with its budget-sized start-up and the spec's initial point) on
cheap synthetic validation-error surfaces of lr x weight decay, over many seeds, at the budgets studies use
(3 trials: the smoke spec; 8: the paper spec; 16), with 1 or 4 trials of a group running at once, and with the
study's early stopping (a pruned trial is told to the sampler as PRUNED, which GP ignores and TPE ranks last).

The figure of merit is the regret: the true (noise-free) error of the best point a group tried, less the
surface's floor, in percentage points. Each evaluation is seen with noise (seed-to-seed spread of a CIFAR
run, about 0.3 points) and the final report is what the sampler is told. Run:

    python benchmarks/sampler_choice.py [--seeds 30]

prints a table (mean regret +- std, and how often each sampler beats random search on the same seed) and
appends it to ``benchmarks/results/sampler_choice.jsonl``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import append_results, environment  # noqa: E402
from study.search import SAMPLERS, GroupedSearcher, search_space, startup_trials  # noqa: E402
from study.spec import SearchSpec  # noqa: E402

SPACE = search_space(SearchSpec())  # the paper spec's ranges: lr [0.01, 0.5], weight decay [1e-5, 1e-3], log
PAPER_POINT = {"lr": 0.1, "weight_decay": 1e-4}  # the paper spec's initial point (Sec. 4.2)
FULL = 64_000
NOISE = 0.3
"""Standard deviation (points) of a run's validation error over seeds: Table 6's ResNet-110 spread is 0.16."""


@dataclass(frozen=True)
class Surface:
    """A validation-error surface: a valley along lr x weight decay (their product sets the effective
    regularisation, so the two interact), its floor at (``lr``, ``weight_decay``)."""

    name: str
    lr: float
    weight_decay: float
    floor: float = 7.0

    def __call__(self, lr: float, weight_decay: float) -> float:
        x, y = math.log10(lr), math.log10(weight_decay)
        ridge = x + y - math.log10(self.lr * self.weight_decay)
        return self.floor + 6.0 * ridge**2 + 2.0 * (x - math.log10(self.lr)) ** 2


SURFACES = (Surface("floor at lr 0.25, wd 3e-4", 0.25, 3e-4), Surface("floor at lr 0.03, wd 2e-5", 0.03, 2e-5))


def regret(sampler: str, surface: Callable[[float, float], float], floor: float, seed: int, budget: int,
           concurrency: int = 1, prune: bool = False) -> float:
    """One group searched through :class:`GroupedSearcher`; the regret of the best point it tried.

    ``concurrency`` trials are suggested before any of them reports (as Tune runs them side by side).
    ``prune``: as the study's ASHA does (reduction factor 3), a trial whose first evaluation is not in the best
    third of the first evaluations seen so far stops there, and the sampler is told it was PRUNED.
    """
    first_rung: list[float] = []
    searcher = GroupedSearcher(SPACE, {"g": budget}, full_iterations=FULL, sampler=sampler, seed=seed,
                               initial_points=[PAPER_POINT], concurrent=concurrency > 1)
    noise = np.random.default_rng(10_000 + seed)
    best, started = math.inf, 0
    while started < budget:
        batch = []
        for _ in range(min(concurrency, budget - started)):
            trial_id = f"t{started}"
            batch.append((trial_id, searcher.suggest(trial_id)))
            started += 1
        for trial_id, point in batch:
            true = surface(point["lr"], point["weight_decay"])
            best = min(best, true)
            for step in (FULL // 4, FULL // 2, FULL):  # later evaluations are lower, as a decaying lr makes them
                seen = true + noise.normal(0.0, NOISE) + 8.0 * (FULL - step) / FULL
                result = {"iteration": step, "train_loss": 1.0, "val_error": seen}
                searcher.on_trial_result(trial_id, result)
                if step == FULL // 4:
                    first_rung.append(seen)
                    if prune and seen > sorted(first_rung)[(len(first_rung) - 1) // 3]:
                        break
            searcher.on_trial_complete(trial_id, result)
    return best - floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 8, 16])
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # GP's note that greenlet is missing, once per group
    env = environment(__import__("torch").device("cpu"))
    rows = []
    print(f"{'surface':<28} {'budget':>6} {'at once':>7} {'pruned':>6} {'sampler':>7} {'regret (points)':>17} "
          f"{'beats random':>12} {'s/group':>8}")
    for surface in SURFACES:
        for budget in args.budgets:
            for concurrency, prune in ((1, False), (4, False), (4, True)):
                figures: dict[str, list[float]] = {}
                for sampler in sorted(SAMPLERS, key=lambda name: name != "random"):  # random first: the baseline
                    started = time.perf_counter()
                    figures[sampler] = [regret(sampler, surface, surface.floor, seed, budget, concurrency, prune)
                                        for seed in range(args.seeds)]
                    seconds = (time.perf_counter() - started) / args.seeds
                    values = figures[sampler]
                    wins = sum(a < b for a, b in zip(values, figures["random"]))
                    mean, std = statistics.fmean(values), statistics.stdev(values)
                    print(f"{surface.name:<28} {budget:>6} {concurrency:>7} {'ASHA' if prune else '-':>6} {sampler:>7} "
                          f"{mean:>8.2f} ± {std:<6.2f} "
                          f"{'' if sampler == 'random' else f'{wins}/{args.seeds}':>12} {seconds:>8.2f}")
                    rows.append({**env, "benchmark": "sampler_choice", "surface": surface.name, "budget": budget,
                                 "startup_trials": startup_trials(budget), "concurrency": concurrency, "asha": prune,
                                 "sampler": sampler, "seeds": args.seeds, "regret_mean": mean, "regret_std": std,
                                 "seconds_per_group": seconds,
                                 "wins_vs_random": None if sampler == "random" else wins})
    print(f"written to {append_results('sampler_choice', rows)}")


if __name__ == "__main__":
    main()
