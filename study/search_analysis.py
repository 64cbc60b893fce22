"""The search made visible, from records: the trials table and Optuna's own analyses of each group's study.

The study's driver reads every trial back from MLflow into :class:`TrialRecord` values; this module never
talks to MLflow or Ray. From the records it

* writes ``trials.csv`` (:func:`write_trials_csv`), one row per trial, and reads it back
  (:func:`read_trials_csv`), so every figure here can be redrawn from the table alone;
* rebuilds each (depth, shortcut) group's Optuna study (:func:`group_study`) exactly as the search's
  :class:`study.search.GroupedSearcher` left it: COMPLETE trials with their final validation error, PRUNED
  trials with the validation errors they reported (stepped by engine iteration), FAIL and RUNNING trials
  without a value;
* draws Optuna's own visualisations of that study (:func:`plot_search`, :func:`plot_all`): the optimization
  history, the landscape of validation error over the first two searched fields (``lr`` x ``weight_decay`` by
  default: a contour, or a slice plot while too few trials exist for a contour or only one field is searched),
  and the hyperparameter importances (PED-ANOVA, Optuna's default evaluator).

Figures are functions of records (DESIGN.md, lesson 9): nothing here needs the search to be running.

Matplotlib: Optuna's ``optuna.visualization.matplotlib`` draws through ``pyplot`` and switches pyplot to its
``ggplot`` style sheet. This module selects no backend (``pyplot`` picks Agg where no display exists, which
is how the study runs and how the tests run) and changes no global state: each drawing happens inside a
``matplotlib.rc_context`` (so the ggplot style is undone afterwards) with interactive mode off (so nothing is
shown even under an interactive backend), and every figure opened while drawing is closed on the way out,
also when Optuna raises. Importing the module draws nothing and configures nothing.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import optuna
from matplotlib import pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PHASES = ("search", "final")
"""A trial is a search trial (an Optuna trial of its group's study) or a final run (the chosen configuration
retrained on the full training set; not an Optuna trial)."""

SEARCH_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
"""The Optuna states a search trial's record can hold (``TrialState`` names)."""

LEADING_COLUMNS = ("group", "phase", "number")
TRAILING_COLUMNS = ("seed", "optuna_state", "status", "iterations", "val_error", "test_error", "val_top5_error",
                    "test_top5_error", "wall_seconds", "run_id")
"""The columns of ``trials.csv``, in order, around one column per searched field (``lr``, ``weight_decay``, ...)."""

OBJECTIVE_NAME = "validation error (%)"
DPI = 110
FIGURE_KINDS = ("history", "landscape", "importance")

_STYLE: dict[str, Any] = {"figure.figsize": (8.0, 5.0), "axes.titlesize": "medium", "axes.labelsize": "medium",
                          "figure.titlesize": "medium"}
"""Applied on top of Optuna's ggplot style while drawing (a slice plot of two parameters is as wide as one
figure: Optuna gives each panel half of ``figure.figsize``)."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study as MLflow recorded it."""

    group: str                 # e.g. "resnet20-A"
    phase: str                 # "search" or "final"
    number: int                # order of the trial within its group and phase (0, 1, ...), by start time
    run_id: str
    values: Mapping[str, Any]  # the searched fields' values by name, e.g. {"lr": 0.1, "weight_decay": 1e-4}
    seed: int
    state: str                 # search: "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING"; final: "" (not an Optuna trial)
    status: str                # the study's status words: "completed" | "stopped early" | "failed" | "running"
    iterations: int            # engine iterations trained (last evaluated iteration)
    val_error: float | None    # last validation error, % (None for final runs, which hold out nothing)
    test_error: float | None   # last test error, %
    wall_seconds: float | None  # run end - run start
    intermediate: Mapping[int, float] = field(default_factory=dict)  # engine iteration -> val_error, %
    val_top5_error: float | None = None   # last top-5 validation error, % (ImageNet; None on CIFAR)
    test_top5_error: float | None = None  # last top-5 test error, % (ImageNet; None on CIFAR)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"trial {self.run_id}: phase {self.phase!r} is not one of {', '.join(PHASES)}")
        allowed = SEARCH_STATES if self.phase == "search" else ("",)
        if self.state not in allowed:
            raise ValueError(f"trial {self.run_id}: a {self.phase} trial's state is one of {allowed}, "
                             f"not {self.state!r}")

    @property
    def params(self) -> dict[str, Any]:
        """The searched hyperparameters of this trial, by their names in the search space."""
        return dict(self.values)


@dataclass(frozen=True)
class SearchFigures:
    """What :func:`plot_search` drew for one group: the PNGs ``written`` and, per figure kind that was not
    drawn (``history``, ``landscape``, ``importance``), a one-line reason in ``skipped``. ``landscape`` says
    which landscape was drawn (``"contour"`` or ``"slice"``), ``None`` when none was."""

    group: str
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    landscape: str | None = None


# ----------------------------------------------------------------------------------------------- trials.csv


def _ordered(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Groups in first-appearance order, search before final within a group, then by number."""
    first_seen: dict[str, int] = {}
    for record in records:
        first_seen.setdefault(record.group, len(first_seen))
    return sorted(records, key=lambda r: (first_seen[r.group], PHASES.index(r.phase), r.number))


def _cell(value: object) -> str:
    """A CSV cell: empty for None; floats as their shortest round-trip text (``repr``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_trials_csv(records: Sequence[TrialRecord], path: Path) -> Path:
    """Write ``trials.csv``: one row per record, columns :data:`LEADING_COLUMNS`, one per searched field (in the
    order first met), :data:`TRAILING_COLUMNS` (``optuna_state`` is the record's ``state``, empty for final runs);
    groups in first-appearance order, search rows before final rows within a group, then by number. None is an
    empty cell; floats are written exactly (they read back equal)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(name for record in records for name in record.values))
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*LEADING_COLUMNS, *names, *TRAILING_COLUMNS])
        for r in _ordered(records):
            writer.writerow([_cell(value) for value in (
                r.group, r.phase, r.number, *(r.values.get(name) for name in names), r.seed, r.state, r.status,
                r.iterations, r.val_error, r.test_error, r.val_top5_error, r.test_top5_error, r.wall_seconds,
                r.run_id)])
    return path


def _optional_float(text: str) -> float | None:
    return None if text == "" else float(text)


def parse_value(text: str) -> Any:
    """A value written as text (a CSV cell, an MLflow param) back as what it was: an int, a float, a bool, None
    (empty) or the text itself."""
    if text in ("", "None"):
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_trials_csv(path: Path) -> list[TrialRecord]:
    """The records of a ``trials.csv`` written by :func:`write_trials_csv`, in the file's order (the
    intermediate values are not in the table: they are left empty)."""
    with Path(path).open(newline="") as stream:
        reader = csv.DictReader(stream)
        columns = tuple(reader.fieldnames or ())
        names = columns[len(LEADING_COLUMNS):len(columns) - len(TRAILING_COLUMNS)]
        if (columns[:len(LEADING_COLUMNS)] != LEADING_COLUMNS
                or columns[len(columns) - len(TRAILING_COLUMNS):] != TRAILING_COLUMNS):
            raise ValueError(f"{path}: columns {reader.fieldnames} are not those of trials.csv: {LEADING_COLUMNS}, "
                             f"the searched fields, {TRAILING_COLUMNS}")
        return [
            TrialRecord(group=row["group"], phase=row["phase"], number=int(row["number"]), run_id=row["run_id"],
                        values={name: parse_value(row[name]) for name in names}, seed=int(row["seed"]),
                        state=row["optuna_state"], status=row["status"], iterations=int(row["iterations"]),
                        val_error=_optional_float(row["val_error"]), test_error=_optional_float(row["test_error"]),
                        wall_seconds=_optional_float(row["wall_seconds"]),
                        val_top5_error=_optional_float(row["val_top5_error"]),
                        test_top5_error=_optional_float(row["test_top5_error"]))
            for row in reader
        ]


# ------------------------------------------------------------------------------------------ the group's study


def _covering(space: Mapping[str, BaseDistribution], records: Sequence[TrialRecord]) -> dict[str, BaseDistribution]:
    """``space``, each range widened just enough to hold every record's value (see :func:`group_study`)."""
    covering: dict[str, BaseDistribution] = {}
    for name, distribution in space.items():
        values = [record.params[name] for record in records]
        if not isinstance(distribution, (FloatDistribution, IntDistribution)):
            covering[name] = distribution
            continue
        low, high = min([distribution.low, *values]), max([distribution.high, *values])
        if (low, high) == (distribution.low, distribution.high):
            covering[name] = distribution
        else:
            covering[name] = type(distribution)(low, high, log=distribution.log, step=distribution.step)
    return covering


def group_study(group: str, records: Sequence[TrialRecord],
                space: Mapping[str, BaseDistribution]) -> optuna.Study:
    """Rebuild ``group``'s Optuna study (direction minimize, in memory) from its search records.

    Trials are added in the order of their ``number`` (so Optuna's trial numbers are the records' order,
    gaps closed): a COMPLETE trial with its ``val_error`` as value; a PRUNED trial without a value but with
    the validation errors it reported as intermediate values (engine iteration -> error, NaN values dropped:
    a diverged evaluation has no place on a curve); FAIL and RUNNING trials without a value. Each trial's
    ``user_attrs`` carry its ``run_id``, ``seed``, ``status``, ``iterations``, ``test_error`` and
    ``wall_seconds``. Final runs and other groups' records are ignored.

    ``space`` is the search space (:func:`study.search.search_space`). A record outside it -- an enqueued
    initial point (the spec's ``initial_points``, e.g. ``lr=5.0``) may lie beyond the sampled range -- is
    accepted: the rebuilt study's distribution of that parameter is widened to the smallest range that holds
    every record (log scale and step kept), so plots show the point where it was trained.

    Raises ``ValueError`` when ``space`` is not over the records' searched fields or a COMPLETE record has no
    finite validation error (the search tells a trial COMPLETE only with one: such a record is not a fact).
    """
    members = sorted((r for r in records if r.group == group and r.phase == "search"), key=lambda r: r.number)
    for record in members:
        if set(record.values) != set(space):
            raise ValueError(f"the search space is over {sorted(space)}, {group} trial {record.number}'s values over "
                             f"{sorted(record.values)}")
    distributions = _covering(space, members)
    study = optuna.create_study(study_name=group, direction="minimize")
    for record in members:
        state = TrialState[record.state]
        if state == TrialState.COMPLETE and (record.val_error is None or not math.isfinite(record.val_error)):
            raise ValueError(f"{group} trial {record.number} (run {record.run_id}) is COMPLETE without a finite "
                             f"validation error ({record.val_error})")
        study.add_trial(optuna.trial.create_trial(
            params=record.params,
            distributions=distributions,
            value=record.val_error if state == TrialState.COMPLETE else None,
            state=state,
            intermediate_values={int(step): float(error) for step, error in record.intermediate.items()
                                 if not math.isnan(error)},
            user_attrs={"run_id": record.run_id, "seed": record.seed, "status": record.status,
                        "iterations": record.iterations, "test_error": record.test_error,
                        "wall_seconds": record.wall_seconds},
        ))
    return study


# ------------------------------------------------------------------------------------------------ the figures


@contextmanager
def _optuna_drawing() -> Iterator[None]:
    """Where Optuna draws: its ExperimentalWarning silenced (its matplotlib plots have been marked experimental
    since 2.2; this is the one place they are called), its ggplot style confined to an ``rc_context``,
    interactive mode off, and every figure opened inside closed on the way out (also when drawing raises)."""
    before = set(plt.get_fignums())
    try:
        with warnings.catch_warnings(), matplotlib.rc_context(_STYLE), plt.ioff():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _axes_list(drawn: Axes | np.ndarray) -> list[Axes]:
    """Optuna returns one Axes, or an array of them (a slice plot of several parameters)."""
    return list(np.ravel(drawn)) if isinstance(drawn, np.ndarray) else [drawn]


def _tick_label(value: float, _position: float) -> str:
    """``0.01``, ``0.2``, ``1`` for learning rates; ``5e-05`` for weight decays."""
    return f"{value:.0e}" if value < 1e-2 else f"{value:g}"


def _log_axes(axes: Sequence[Axes], space: Mapping[str, optuna.distributions.BaseDistribution],
              max_labels: int) -> None:
    """Log scale on every axis that shows a log-distributed parameter (Optuna sets it too; kept explicit), with
    ticks at 1-2-5, 1-3 or 1 per decade -- the densest that keeps at most ``max_labels`` labels -- written as
    plain numbers: matplotlib's default labels every minor tick of a range under two decades in overlapping
    ``3 x 10^-2`` notation."""
    logged = {name for name, d in space.items() if isinstance(d, (FloatDistribution, IntDistribution)) and d.log}
    for ax in axes:
        for axis, label, set_scale, limits in ((ax.xaxis, ax.get_xlabel(), ax.set_xscale, ax.get_xlim),
                                               (ax.yaxis, ax.get_ylabel(), ax.set_yscale, ax.get_ylim)):
            if label not in logged:
                continue
            set_scale("log")
            low, high = limits()
            decades = math.log10(high / low) if low > 0 and high > low else 1.0
            subs = next((subs for subs in ((1.0, 2.0, 5.0), (1.0, 3.0)) if decades * len(subs) + 1 <= max_labels),
                        (1.0,))
            axis.set_major_locator(LogLocator(base=10.0, subs=subs))
            axis.set_major_formatter(FuncFormatter(_tick_label))
            axis.set_minor_formatter(NullFormatter())


def _save(figure: Figure, path: Path) -> Path:
    """Save at :data:`DPI`, the bounding box tight around everything drawn (Optuna's legends and colour bars
    sit outside the axes)."""
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _census(study: optuna.Study) -> str:
    """``6 trials: 4 complete, 1 pruned, 1 failed`` (running trials named only when there are some)."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    parts = [f"{counts[TrialState.COMPLETE]} complete", f"{counts[TrialState.PRUNED]} pruned",
             f"{counts[TrialState.FAIL]} failed"]
    if counts[TrialState.RUNNING]:
        parts.append(f"{counts[TrialState.RUNNING]} running")
    return f"{len(trials)} trial{'s' if len(trials) != 1 else ''}: {', '.join(parts)}"


def _best_line(study: optuna.Study) -> str:
    best = study.best_trial
    values = ", ".join(f"{name.replace('_', ' ')}={value:.3g}" if isinstance(value, float) else
                       f"{name.replace('_', ' ')}={value}" for name, value in best.params.items())
    return f"best {best.value:.2f}% (trial {best.number}: {values})"


def _landscape_params(study: optuna.Study) -> list[str]:
    """The fields a landscape is drawn over: the first two searched (lr x weight decay by default)."""
    return list(study.best_trial.distributions)[:2]


def _draw_history(study: optuna.Study, group: str, path: Path) -> Path:
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=OBJECTIVE_NAME)
    ax.set_title(f"{group}: optimization history ({_census(study)})\n{_best_line(study)}")
    ax.set_xlabel("trial (order started within the group; pruned and failed trials have no point)")
    ax.set_xlim(-0.5, len(study.get_trials(deepcopy=False)) - 0.5)  # every trial's number, with or without a point
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(ax.figure, path)


def _contour_possible(complete: Sequence[optuna.trial.FrozenTrial]) -> bool:
    """Optuna's contour interpolates between points: it needs 3 of them, with 2 distinct values of each
    parameter (otherwise its panel is left blank)."""
    names = list(complete[0].distributions)[:2] if complete else []
    return (len(names) == 2 and len(complete) >= 3
            and all(len({t.params[name] for t in complete}) >= 2 for name in names))


def _draw_landscape(study: optuna.Study, group: str, path: Path, contour: bool) -> Path:
    params = _landscape_params(study)
    if contour:
        drawn = optuna.visualization.matplotlib.plot_contour(study, params=params, target_name=OBJECTIVE_NAME)
    else:
        with warnings.catch_warnings():
            # Optuna pads a panel's x limits around its points; one point gives equal limits, which matplotlib
            # warns about and widens. The limits are set to the searched range just below instead.
            warnings.filterwarnings("ignore", "Attempting to set identical low and high xlims", UserWarning)
            drawn = optuna.visualization.matplotlib.plot_slice(study, params=params, target_name=OBJECTIVE_NAME)
    axes = _axes_list(drawn)
    distributions = study.best_trial.distributions
    if not contour:
        for ax in axes:
            d = distributions.get(ax.get_xlabel())
            if isinstance(d, (FloatDistribution, IntDistribution)) and d.log:
                pad = (d.high / d.low) ** 0.03
                ax.set_xlim(d.low / pad, d.high * pad)
            elif isinstance(d, (FloatDistribution, IntDistribution)):
                pad = 0.03 * (d.high - d.low)
                ax.set_xlim(d.low - pad, d.high + pad)
    _log_axes(axes, distributions, max_labels=8 if contour else 5)
    figure = axes[0].figure
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if contour:
        best = study.best_trial
        axes[0].scatter([best.params[params[0]]], [best.params[params[1]]], marker="*", s=220, c="gold",
                        edgecolors="black", linewidths=1.0, zorder=5)
        over = " x ".join(name.replace("_", " ") for name in params)
        axes[0].set_title(f"{group}: validation error (%) over {over}, interpolated between "
                          f"{complete} complete trials (dots)\n{_best_line(study)}, the star")
    else:
        figure.suptitle(f"{group}: validation error (%) against each hyperparameter over its searched range\n"
                        f"({complete} complete trial{'s' if complete != 1 else ''}; a contour needs 3 with distinct "
                        f"values) -- {_best_line(study)}")
    return _save(figure, path)


def _importance_problem(study: optuna.Study) -> str | None:
    """Why the importances of ``study`` cannot be told, or None when they can.

    Optuna's default evaluator (PED-ANOVA) rarely raises: when the trials cannot tell the parameters apart it
    warns (a ``UserWarning``: "Parameter importances will be equal") and returns equal importances, which
    would be a figure of nothing. Both count as "cannot be computed" here, with Optuna's words as the reason.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError) as error:
            return f"importance could not be computed: {type(error).__name__}: {error}"
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            return f"importance could not be computed: {warning.message}"
    return None


def _draw_importance(study: optuna.Study, group: str, path: Path) -> Path:
    ax = optuna.visualization.matplotlib.plot_param_importances(study, target_name=OBJECTIVE_NAME)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    ax.set_title(f"{group}: hyperparameter importance for {OBJECTIVE_NAME}\n"
                 f"(PED-ANOVA over {complete} complete trials; few trials make it a rough guide)", loc="left")
    return _save(ax.figure, path)


def plot_search(study: optuna.Study, folder: Path, prefix: str) -> SearchFigures:
    """Draw Optuna's analyses of one group's ``study`` (as rebuilt by :func:`group_study`) into ``folder``.

    * ``{prefix}_history.png``: the optimization history (each complete trial's validation error and the best
      so far), drawn when at least 1 trial is COMPLETE;
    * ``{prefix}_landscape.png``: the validation error over the first two searched fields (lr x weight decay by
      default; log axes for log ranges) -- a contour when at least 3 trials are COMPLETE (with 2 distinct values
      of each), else a slice plot (error against each of them), drawn when at least 1 trial is COMPLETE;
    * ``{prefix}_importance.png``: the hyperparameter importances (PED-ANOVA), drawn when at least 2 COMPLETE
      trials differ in value and the importances can be computed.

    Titles name the group (the study's name, as :func:`group_study` sets it). A figure not drawn is named in
    ``skipped`` with a one-line reason (a group with no complete trial gets no figure at all). PNGs at
    :data:`DPI` dpi; no figure stays open.
    """
    group = study.study_name
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    census = _census(study)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    landscape: str | None = None

    if not complete:
        for kind, least in (("history", "1 complete trial"), ("landscape", "1 complete trial"),
                            ("importance", "2 complete trials")):
            skipped[kind] = f"{kind} needs at least {least}; this group has 0 ({census})"
        return SearchFigures(group, written, skipped, landscape)

    with _optuna_drawing():
        written.append(_draw_history(study, group, folder / f"{prefix}_history.png"))
    contour = _contour_possible(complete)
    with _optuna_drawing():
        written.append(_draw_landscape(study, group, folder / f"{prefix}_landscape.png", contour))
    landscape = "contour" if contour else "slice"

    if len(complete) < 2:
        skipped["importance"] = f"importance needs at least 2 complete trials; this group has {len(complete)}"
    elif len({t.value for t in complete}) < 2:
        skipped["importance"] = (f"importance needs complete trials with different validation errors; all "
                                 f"{len(complete)} have {complete[0].value:.2f}%")
    elif (problem := _importance_problem(study)) is not None:
        skipped["importance"] = problem
    else:
        with _optuna_drawing():
            written.append(_draw_importance(study, group, folder / f"{prefix}_importance.png"))
    return SearchFigures(group, written, skipped, landscape)


def _file_name(group: str) -> str:
    """A group's name as a file-name part (anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", group)


def plot_all(records: Sequence[TrialRecord], space: Mapping[str, BaseDistribution],
             folder: Path) -> list[SearchFigures]:
    """:func:`plot_search` for every group that has search records, in first-appearance order, each from
    :func:`group_study`, with prefix ``search_<group>``."""
    groups = list(dict.fromkeys(r.group for r in records if r.phase == "search"))
    return [plot_search(group_study(group, records, space), folder, f"search_{_file_name(group)}")
            for group in groups]
