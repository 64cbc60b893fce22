"""The study's report: the answer in sentences (:mod:`study.answer`), per group the chosen values of the searched
fields (lr and weight decay by default),
validation error, test error mean +- std over the final seeds, parameters -- as Markdown (the study run's
description and ``report.md``), JSON, and its figures (:mod:`study.figures` and those of :mod:`study.publish`).

It says what the numbers can bear: the budget (iterations per trial against the paper's schedule: 64k on CIFAR,
Sec. 4.2, up to 600k on ImageNet, Sec. 3.4; trials per group and how many of them the sampler's model chose; final
seeds), a one-line caveat when a comparison between groups is not meaningful at that budget, and a flag on every
group whose best trial diverged, was early-stopped or is no better than chance. An ImageNet study's table adds the
top-5 errors and the paper's Table 2/3 figures, labelled as full-ImageNet figures; on any other ImageNet-style set
(a subset, Tiny ImageNet) the report says that its numbers are not comparable with them."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnet_core import model_info
from study.figures import DATASET_NAMES, curves_figure, plot_error_vs_depth

PAPER_ITERATIONS = 64_000
"""The paper's CIFAR schedule: "terminate training at 64k iterations" (Sec. 4.2)."""
PAPER_IMAGENET_ITERATIONS = 600_000
"""The paper's ImageNet schedule: "trained for up to 60 x 10^4 iterations" (Sec. 3.4)."""
IMAGENET_CLASSES, IMAGENET_TRAIN_IMAGES = 1000, 1_281_167
"""Full ImageNet 2012 (Sec. 4.1: "1000 classes ... 1.28 million training images"), what the paper's numbers are of."""
ERROR_VS_DEPTH = "error_vs_depth.png"


@dataclass(frozen=True)
class StudyBudget:
    """What a study spent per group."""

    dataset: str
    iterations: int
    trials_per_group: int
    startup_trials: int
    sampler: str
    final_seeds: int
    classes: int | None = None
    """Classes of the study's data (None: not known)."""
    train_images: int | None = None
    """Training images of the study's data (None: not known)."""

    @property
    def dataset_name(self) -> str:
        return DATASET_NAMES.get(self.dataset, self.dataset)

    @property
    def imagenet(self) -> bool:
        return self.dataset == "imagenet"

    @property
    def paper_iterations(self) -> int:
        """The paper's schedule on this dataset: 64k on CIFAR (Sec. 4.2), up to 600k on ImageNet (Sec. 3.4)."""
        return PAPER_IMAGENET_ITERATIONS if self.imagenet else PAPER_ITERATIONS

    @property
    def paper_section(self) -> str:
        return "Sec. 3.4" if self.imagenet else "Sec. 4.2"

    @property
    def full_imagenet(self) -> bool:
        """Whether the data is the paper's full ImageNet (its class count and about its training images)."""
        return (self.classes == IMAGENET_CLASSES and self.train_images is not None
                and self.train_images >= 0.99 * IMAGENET_TRAIN_IMAGES)

    def paper_note(self) -> str | None:
        """What the paper's ImageNet figures in the table are, and whether this study's can be set beside them."""
        if not self.imagenet:
            return None
        what = ("The paper's figures (Tables 2 and 3) are top-1 / top-5 errors on full ImageNet (1000 classes, "
                "1.28M training images, up to 600k iterations) with 10-crop testing")
        if self.full_imagenet:
            return f"{what}; this study trains the same data, at its own budget."
        size = "" if self.classes is None else (f" has {self.classes:,} classes" + (
            "" if self.train_images is None else f" and {self.train_images:,} training images"))
        return f"{what}; this dataset{size}, so its errors are not comparable with them."

    def describe(self) -> str:
        """One line: ``Budget: 150 iterations per trial (0.2% of the paper's 64,000, Sec. 4.2); ...``."""
        guided = max(self.trials_per_group - self.startup_trials, 0)
        trials = f"{self.trials_per_group} trial{'s' if self.trials_per_group != 1 else ''} per group"
        search = (f"{trials}, all random" if self.sampler == "random" else
                  f"{trials} ({min(self.startup_trials, self.trials_per_group)} random start-up, {guided} chosen by "
                  f"{self.sampler.upper()})")
        if self.trials_per_group == 0:
            search = (f"no search: every group trains the spec's one configuration, as the paper does "
                      f"({self.paper_section})")
        share = 100 * self.iterations / self.paper_iterations
        return (f"Budget: {self.iterations:,} iterations per trial ({share:.3g}% of the paper's "
                f"{self.paper_iterations:,}, {self.paper_section}) on {self.dataset_name}; {search}; "
                f"{self.final_seeds} final seed{'s' if self.final_seeds != 1 else ''} per group.")

    def caveats(self, results: Sequence["GroupResult"]) -> list[str]:
        """Why a comparison between groups is not meaningful at this budget (empty when nothing stands out)."""
        reasons = []
        if self.final_seeds < 2:
            reasons.append("no final retraining, so groups compare single validation runs" if self.final_seeds == 0
                           else "one final seed per group gives no spread to judge a difference by")
        if self.iterations < self.paper_iterations / 2:
            reasons.append(f"trials train {100 * self.iterations / self.paper_iterations:.3g}% of the paper's "
                           f"schedule, far from converged (the depth and plain-vs-residual gaps of "
                           f"{curves_figure(self.dataset)} open late)")
        if self.sampler != "random" and 0 < self.trials_per_group <= self.startup_trials:
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
    """Top-1 test error (%) of each final seed."""
    paper_error: float | None = None
    """The paper's Table 6 figure, only for CIFAR-10 at the paper's 64k schedule (option A or plain); on ImageNet its
    Table 2/3 top-1 figure (full ImageNet, 10-crop) for this architecture and option."""
    flags: tuple[str, ...] = ()
    """Why this group's numbers should not be trusted (diverged, early-stopped choice, chance level)."""
    searched: Mapping[str, Any] = field(default_factory=dict)
    """The chosen value of every searched field, by name (empty where the search chose nothing)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The values of the fields crossed under ``groups:`` that make this group (e.g. ``{"batch_size": 256}``)."""
    val_top5_error: float | None = None
    """Top-5 validation error (%) of the chosen trial (ImageNet; None on CIFAR)."""
    test_top5_errors: tuple[float, ...] = field(default_factory=tuple)
    """Top-5 test error (%) of each final seed (ImageNet; empty on CIFAR)."""
    paper_top5_error: float | None = None
    """The paper's Table 3 top-5 figure (full ImageNet, 10-crop), where it gives one."""

    @property
    def values(self) -> dict[str, Any]:
        """The searched values; a result made without them shows its lr and weight decay."""
        return dict(self.searched) if self.searched else {"lr": self.lr, "weight_decay": self.weight_decay}

    @property
    def test_mean(self) -> float | None:
        return statistics.fmean(self.test_errors) if self.test_errors else None

    @property
    def test_std(self) -> float | None:
        return statistics.stdev(self.test_errors) if len(self.test_errors) > 1 else (0.0 if self.test_errors else None)

    @property
    def test_top5_mean(self) -> float | None:
        return statistics.fmean(self.test_top5_errors) if self.test_top5_errors else None

    @property
    def test_top5_std(self) -> float | None:
        errors = self.test_top5_errors
        return statistics.stdev(errors) if len(errors) > 1 else (0.0 if errors else None)

    @property
    def has_top5(self) -> bool:
        return self.val_top5_error is not None or bool(self.test_top5_errors) or self.paper_top5_error is not None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "searched": dict(self.searched), "settings": dict(self.settings),
                "test_errors": list(self.test_errors), "flags": list(self.flags),
                "test_mean": self.test_mean, "test_std": self.test_std,
                "test_top5_errors": list(self.test_top5_errors), "test_top5_mean": self.test_top5_mean,
                "test_top5_std": self.test_top5_std}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def _general(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


SHORT_NAMES = {"weight_decay": "wd"}


def format_values(values: Mapping[str, Any]) -> str:
    """``lr=0.1 wd=0.0001 momentum=0.9``: searched values as a trial's name and a model's description show them."""
    return " ".join(f"{SHORT_NAMES.get(name, name)}={_general(value, 3)}" for name, value in values.items())


def value_columns(results: Sequence[GroupResult]) -> list[str]:
    """The searched fields of ``results`` in the order first met (lr and weight decay for results without)."""
    return list(dict.fromkeys(name for r in results for name in r.values))


def _spread(mean: float | None, std: float | None, n: int) -> str:
    return "-" if mean is None else f"{mean:.2f} ± {std:.2f} (n={n})"


def format_table(results: Sequence[GroupResult], budget: StudyBudget | None = None) -> str:
    """The budget and its caveats (when ``budget`` is given), a Markdown table with one row per group in the
    order of the spec, and the groups' flags. Where a group has top-5 errors (ImageNet), the errors are top-1 and
    top-5 side by side, and the paper's column is its full-ImageNet Table 2/3 figures."""
    columns = value_columns(results)
    top5 = any(r.has_top5 for r in results)
    # The paper's column holds Table 6's CIFAR-10 figures for CIFAR nets (top-1 only), Table 2/3's for ImageNet nets.
    imagenet = any(model_info(r.arch).family == "imagenet" for r in results)
    paper = "paper top-1 / top-5 % (full ImageNet)" if imagenet else "paper top-1 / top-5 % (CIFAR-10, Table 6)"
    errors = ("val top-1 % | val top-5 % | test top-1 % (mean ± std, n) | test top-5 % (mean ± std, n) | "
              f"{paper} |" if top5 else
              "val error % | test error % (mean ± std, n) | paper % |")
    header = (f"| group | depth | shortcut | params | {' | '.join(name.replace('_', ' ') for name in columns)} | "
              f"{errors} trials (stopped) |")
    lines = [header, "|---|---:|---|---:|" + "---:|" * len(columns) + ("---:|" * 5 if top5 else "---:|---|---:|")
             + "---:|"]
    for r in results:
        test = _spread(r.test_mean, r.test_std, len(r.test_errors))
        values = " | ".join(_general(r.values.get(name), 4) for name in columns)
        if top5:
            paper = "-" if r.paper_error is None else f"{_fmt(r.paper_error)} / {_fmt(r.paper_top5_error)}"
            figures = (f"{_fmt(r.val_error)} | {_fmt(r.val_top5_error)} | {test} | "
                       f"{_spread(r.test_top5_mean, r.test_top5_std, len(r.test_top5_errors))} | {paper}")
        else:
            figures = f"{_fmt(r.val_error)} | {test} | {_fmt(r.paper_error)}"
        lines.append(
            f"| {r.group} | {r.depth} | {r.shortcut or 'none (plain)'} | "
            f"{'-' if r.params is None else f'{r.params:,}'} | {values} | {figures} | {r.trials} ({r.stopped_early}) |"
        )
    lines += [f"- **{r.group}**: {flag}" for r in results for flag in r.flags]
    if budget is None:
        return "\n".join(lines)
    return "\n".join([*budget_lines(budget, results), "", *lines])


def budget_lines(budget: StudyBudget, results: Sequence[GroupResult]) -> list[str]:
    """The budget, what the paper's figures are (ImageNet), and why comparisons may not be meaningful."""
    caveats = budget.caveats(results)
    head = [budget.describe()]
    note = budget.paper_note()
    if note:
        head.append(note)
    if caveats:
        head.append(f"Comparisons between groups are not meaningful at this budget: {'; '.join(caveats)}.")
    return head


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: its file (relative to the report's folder) and its caption."""

    path: str
    caption: str


def report_markdown(results: Sequence[GroupResult], study: str, budget: StudyBudget | None = None, *,
                    answer: Sequence[str] = (), figures: Sequence[ReportFigure] = (), notes: Sequence[str] = (),
                    link: Callable[[str], str] = str) -> str:
    """The report as Markdown: the answer in sentences, the budget and its caveats, the table, the figures
    (each image's address is ``link(path)``: the relative path in ``report.md``, an artifact URL in the run's
    description) and notes on what could not be drawn."""
    lines = [f"# Study {study}", ""]
    if answer or budget is not None:
        lines += ["## The answer", ""]
    if budget is not None:  # what the numbers can bear comes before them
        lines += [line for part in budget_lines(budget, results) for line in (part, "")]
    if answer:
        lines += [*[f"- {sentence}" for sentence in answer], ""]
    lines += ["## Results per group", "", format_table(results), ""]
    if figures:
        lines += ["## Figures", ""]
        for figure in figures:
            lines += [f"**{figure.caption}**", "", f"![{figure.caption}]({link(figure.path)})", ""]
    if notes:
        lines += ["## Not drawn", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def write_report(results: Sequence[GroupResult], folder: Path, study: str, budget: StudyBudget | None = None, *,
                 answer: Sequence[str] = (), figures: Sequence[ReportFigure] = (), notes: Sequence[str] = (),
                 paper_errors: Mapping[int, float] | None = None) -> list[ReportFigure]:
    """report.md, report.json (one entry per group), budget.json (with ``budget``) and error_vs_depth.png in
    ``folder``, the report listing ``figures`` (already in ``folder``) after error-vs-depth; returns every
    figure of the report."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = budget.dataset if budget else "cifar10"
    plot_error_vs_depth(results, folder / ERROR_VS_DEPTH, title=f"study {study}", dataset=dataset,
                        paper_errors=paper_errors)
    seeds = budget.final_seeds if budget else 0
    spread = f"mean ± std over {seeds} final seed{'s' if seeds != 1 else ''} where they ran"
    paper = "Tables 2-3" if dataset == "imagenet" else "Fig. 6 / Table 6"
    shown = [ReportFigure(ERROR_VS_DEPTH, f"Error against depth (paper {paper}): test error, {spread}, "
                                          "else the best validation error"),
             *figures]
    (folder / "report.md").write_text(report_markdown(results, study, budget, answer=answer, figures=shown,
                                                      notes=notes) + "\n")
    (folder / "report.json").write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    if budget is not None:
        (folder / "budget.json").write_text(json.dumps({**asdict(budget), "caveats": budget.caveats(results)},
                                                       indent=2) + "\n")
    return shown
