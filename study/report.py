"""The study's report: per group the chosen lr and weight decay, validation error, test error mean +- std
over the final seeds, parameters -- as a table, JSON, and a figure of error against depth in the manner of
paper Fig. 6 / Table 6 (residual vs plain, shortcut A vs B).

It says what the numbers can bear: the budget (iterations per trial against the paper's 64k, Sec. 4.2;
trials per group and how many of them the sampler's model chose; final seeds), a one-line caveat when a
comparison between groups is not meaningful at that budget, and a flag on every group whose best trial
diverged, was early-stopped or is no better than chance."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

PAPER_ITERATIONS = 64_000
"""The paper's CIFAR schedule: "terminate training at 64k iterations" (Sec. 4.2)."""
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


@dataclass(frozen=True)
class StudyBudget:
    """What a study spent per group."""

    dataset: str
    iterations: int
    trials_per_group: int
    startup_trials: int
    sampler: str
    final_seeds: int

    @property
    def dataset_name(self) -> str:
        return DATASET_NAMES.get(self.dataset, self.dataset)

    def describe(self) -> str:
        """One line: ``Budget: 150 iterations per trial (0.2% of the paper's 64,000, Sec. 4.2); ...``."""
        guided = max(self.trials_per_group - self.startup_trials, 0)
        trials = f"{self.trials_per_group} trial{'s' if self.trials_per_group != 1 else ''} per group"
        search = (f"{trials}, all random" if self.sampler == "random" else
                  f"{trials} ({min(self.startup_trials, self.trials_per_group)} random start-up, {guided} chosen by "
                  f"{self.sampler.upper()})")
        return (f"Budget: {self.iterations:,} iterations per trial ({100 * self.iterations / PAPER_ITERATIONS:.3g}% "
                f"of the paper's {PAPER_ITERATIONS:,}, Sec. 4.2) on {self.dataset_name}; {search}; "
                f"{self.final_seeds} final seed{'s' if self.final_seeds != 1 else ''} per group.")

    def caveats(self, results: Sequence["GroupResult"]) -> list[str]:
        """Why a comparison between groups is not meaningful at this budget (empty when nothing stands out)."""
        reasons = []
        if self.final_seeds < 2:
            reasons.append("no final retraining, so groups compare single validation runs" if self.final_seeds == 0
                           else "one final seed per group gives no spread to judge a difference by")
        if self.iterations < PAPER_ITERATIONS / 2:
            reasons.append(f"trials train {100 * self.iterations / PAPER_ITERATIONS:.3g}% of the paper's schedule, "
                           "far from converged (the depth and plain-vs-residual gaps of Fig. 6 open late)")
        if self.sampler != "random" and self.trials_per_group <= self.startup_trials:
            reasons.append("every trial was a random start-up trial, so the search never used its model")
        flagged = [r.group for r in results if r.flags]
        if flagged:
            reasons.append(f"{len(flagged)} group{'s are' if len(flagged) > 1 else ' is'} flagged "
                           f"({', '.join(flagged)})")
        return reasons


@dataclass(frozen=True)
class GroupResult:
    """The outcome of one (architecture, shortcut) group."""

    group: str
    arch: str
    depth: int
    residual: bool
    shortcut: str | None
    params: int | None
    lr: float | None
    weight_decay: float | None
    val_error: float
    trials: int
    stopped_early: int
    test_errors: tuple[float, ...] = field(default_factory=tuple)
    paper_error: float | None = None
    """The paper's Table 6 figure, only for CIFAR-10 at the paper's 64k schedule (option A or plain)."""
    flags: tuple[str, ...] = ()
    """Why this group's numbers should not be trusted (diverged, early-stopped choice, chance level)."""

    @property
    def test_mean(self) -> float | None:
        return statistics.fmean(self.test_errors) if self.test_errors else None

    @property
    def test_std(self) -> float | None:
        return statistics.stdev(self.test_errors) if len(self.test_errors) > 1 else (0.0 if self.test_errors else None)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "test_errors": list(self.test_errors), "flags": list(self.flags),
                "test_mean": self.test_mean, "test_std": self.test_std}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _general(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def format_table(results: Sequence[GroupResult], budget: StudyBudget | None = None) -> str:
    """The budget and its caveats (when ``budget`` is given), a Markdown table with one row per group in the
    order of the spec, and the groups' flags."""
    header = ("| group | depth | shortcut | params | lr | weight decay | val error % | test error % (mean ± std, n) "
              "| paper % | trials (stopped) |")
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        test = "-" if r.test_mean is None else f"{r.test_mean:.2f} ± {r.test_std:.2f} (n={len(r.test_errors)})"
        lines.append(
            f"| {r.group} | {r.depth} | {r.shortcut or 'none (plain)'} | "
            f"{'-' if r.params is None else f'{r.params:,}'} | {_general(r.lr, 4)} | {_general(r.weight_decay, 3)} | "
            f"{_fmt(r.val_error)} | {test} | {_fmt(r.paper_error)} | {r.trials} ({r.stopped_early}) |"
        )
    lines += [f"- **{r.group}**: {flag}" for r in results for flag in r.flags]
    if budget is None:
        return "\n".join(lines)
    caveats = budget.caveats(results)
    head = [budget.describe()]
    if caveats:
        head.append(f"Comparisons between groups are not meaningful at this budget: {'; '.join(caveats)}.")
    return "\n".join([*head, "", *lines])


def plot_error_vs_depth(results: Sequence[GroupResult], path: Path, title: str, dataset: str = "cifar10") -> Path:
    """Test error (mean ± std; validation error where no final seeds ran) against depth per family."""
    families: dict[str, list[GroupResult]] = {}
    for r in results:
        label = f"ResNet, option {r.shortcut}" if r.residual else "plain"
        families.setdefault(label, []).append(r)
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for label, members in sorted(families.items()):
        members = sorted(members, key=lambda r: r.depth)
        depths = [r.depth for r in members]
        errors = [r.test_mean if r.test_mean is not None else r.val_error for r in members]
        kind = "test" if all(r.test_mean is not None for r in members) else "validation"
        label = f"{label} ({kind})"
        spreads = [r.test_std or 0.0 for r in members]
        axes.errorbar(depths, errors, yerr=spreads, marker="o", capsize=3, label=label,
                      linestyle="--" if label.startswith("plain") else "-")
    axes.set_xscale("log")
    depths = sorted({r.depth for r in results})
    axes.set_xticks(depths, [str(d) for d in depths])
    return _finish(figure, axes, path, "depth (layers)", f"{DATASET_NAMES.get(dataset, dataset)} error (%)", title)


def plot_curves(rows: Sequence[Mapping[str, float]], path: Path, title: str) -> Path:
    """Training, validation and test error of one trial against iterations (paper Fig. 6 style)."""
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    for key, style in (("train_error", "--"), ("val_error", "-"), ("test_error", "-")):
        points = [(row["iteration"], row[key]) for row in rows if key in row]
        if points:
            axes.plot(*zip(*points), style, marker=".", label=key.replace("_", " "))
    return _finish(figure, axes, path, "iterations", "error (%)", title)


def _finish(figure: plt.Figure, axes: plt.Axes, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, save as PNG and close a figure."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(results: Sequence[GroupResult], folder: Path, study: str, budget: StudyBudget | None = None) -> Path:
    """report.md, report.json (one entry per group), budget.json (with ``budget``) and error_vs_depth.png in
    ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    table = format_table(results, budget)
    (folder / "report.md").write_text(f"# Study {study}\n\n{table}\n")
    (folder / "report.json").write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    if budget is not None:
        (folder / "budget.json").write_text(json.dumps({**asdict(budget), "caveats": budget.caveats(results)},
                                                       indent=2) + "\n")
    plot_error_vs_depth(results, folder / "error_vs_depth.png", title=f"study {study}",
                        dataset=budget.dataset if budget else "cifar10")
    return folder
