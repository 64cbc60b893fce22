"""The study's figures, each a function of what the study recorded (MLflow's metric histories, the group
results), so a report can be redrawn without retraining:

* :func:`plot_training_curves` -- paper Fig. 6: training error (dashed) and test error (bold) against
  iterations, plain nets on the left and ResNets on the right, one curve per depth;
* :func:`plot_error_vs_depth` -- test error against depth per family (mean +- std over the final seeds as
  error bars), residual vs plain and shortcut A vs B, with the paper's Table 6 errors as markers;
* :func:`plot_curves` -- the curves of one trial.

Matplotlib is used through its object interface (``Figure`` + the Agg canvas): importing this module
changes no global state and needs no display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from resnet_core.options import DATASET_TITLES

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from study.report import GroupResult

DATASET_NAMES = DATASET_TITLES


def curves_figure(dataset: str) -> str:
    """The paper's figure of training curves for ``dataset``: Fig. 4 (ImageNet, Sec. 4.1) or Fig. 6 (CIFAR-10, Sec.
    4.2)."""
    return "Fig. 4" if dataset == "imagenet" else "Fig. 6"
Row = Mapping[str, float]


@dataclass(frozen=True)
class GroupCurve:
    """The evaluations of one group's chosen configuration, for Fig. 6: ``rows`` hold ``iteration`` and the
    errors (%) of each evaluation; ``held_out`` says which error is the bold curve: ``test`` (a final run) or
    ``val`` (no final retraining: the best search trial's validation error)."""

    group: str
    depth: int
    residual: bool
    shortcut: str | None
    rows: Sequence[Row] = field(default_factory=tuple)
    held_out: str = "test"
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return network_label(self.depth, self.residual, self.shortcut, self.settings)


def network_label(depth: int, residual: bool, shortcut: str | None, settings: Mapping[str, Any] | None = None) -> str:
    """A network as the paper names it in its figures: ``ResNet-20 (A)``, ``plain-20``; a group's crossed
    settings follow: ``plain-20, batch_size 256``."""
    kind = f"ResNet-{depth}" if residual else f"plain-{depth}"
    return (f"{kind} ({shortcut})" if residual and shortcut else kind) + _settings_label(settings)


def _settings_label(settings: Mapping[str, Any] | None) -> str:
    return "".join(f", {name} {value}" for name, value in (settings or {}).items())


def _new_figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(1, columns, index + 1) for index in range(columns)]
    return figure, axes


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _style(axes: Axes, xlabel: str, ylabel: str, title: str) -> None:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")


def plot_training_curves(curves: Sequence[GroupCurve], path: Path, title: str, dataset: str = "cifar10") -> Path:
    """Paper Fig. 6: per panel (plain left, ResNets right) one colour per group, its training error dashed and
    its test error (validation error where no final run exists, said in the legend) bold."""
    figure, (plain, residual) = _new_figure(12.0, 4.6, columns=2)
    palette = [f"C{index}" for index in range(10)]
    for axes, members, name in ((plain, [c for c in curves if not c.residual], "plain networks"),
                                (residual, [c for c in curves if c.residual], "ResNets")):
        members = sorted(members, key=lambda c: (c.depth, c.shortcut or ""))
        for index, curve in enumerate(members):
            colour = palette[index % len(palette)]
            held_out = f"{curve.held_out}_error"
            for key, style, width, suffix in (("train_error", "--", 1.0, "train"),
                                              (held_out, "-", 2.2, "test" if curve.held_out == "test" else "val")):
                points = [(row["iteration"], row[key]) for row in curve.rows if row.get(key) is not None]
                if points:
                    xs, ys = zip(*points)
                    axes.plot(xs, ys, style, color=colour, linewidth=width, label=f"{curve.label} {suffix}")
        if not members:
            axes.text(0.5, 0.5, f"no {name} in this study", ha="center", va="center", transform=axes.transAxes)
        _style(axes, "iterations", f"{DATASET_NAMES.get(dataset, dataset)} error (%)", name)
    figure.suptitle(f"{title}: training error (dashed) and test error (bold), as paper {curves_figure(dataset)}")
    return _save(figure, path)


def plot_error_vs_depth(results: Sequence[GroupResult], path: Path, title: str, dataset: str = "cifar10",
                        paper_errors: Mapping[int, float] | None = None) -> Path:
    """Test error (mean +- std over the final seeds; validation error where no final seeds ran) against depth,
    one line per family (plain; ResNet per shortcut option); ``paper_errors`` (depth -> %) are drawn as
    markers labelled with their source (Table 6, CIFAR-10 ResNets with option A at 64k iterations)."""
    families: dict[str, list[GroupResult]] = {}
    for result in results:
        family = f"ResNet, option {result.shortcut}" if result.residual else "plain"
        families.setdefault(family + _settings_label(result.settings), []).append(result)
    figure, (axes,) = _new_figure(6.6, 4.4)
    for label, members in sorted(families.items()):
        members = sorted(members, key=lambda r: r.depth)
        tested = all(r.test_mean is not None for r in members)
        errors = [r.test_mean if tested else r.val_error for r in members]
        spreads = [(r.test_std or 0.0) if tested else 0.0 for r in members]
        seeds = min((len(r.test_errors) for r in members), default=0)
        kind = f"test, mean ± std of {seeds} seeds" if tested else "validation, best trial"
        axes.errorbar([r.depth for r in members], errors, yerr=spreads, marker="o", capsize=4,
                      linestyle="--" if label.startswith("plain") else "-", label=f"{label} ({kind})")
    if paper_errors:
        depths = sorted(paper_errors)
        axes.plot(depths, [paper_errors[d] for d in depths], "kx", markersize=9, mew=2,
                  label="paper Table 6 (ResNet, option A, 64k iterations)")
    depths = sorted({r.depth for r in results} | set(paper_errors or {}))
    axes.set_xscale("log")
    axes.set_xticks(depths, [str(d) for d in depths])
    axes.minorticks_off()
    _style(axes, "depth (layers)", f"{DATASET_NAMES.get(dataset, dataset)} error (%)", title)
    return _save(figure, path)


def plot_curves(rows: Sequence[Row], path: Path, title: str) -> Path:
    """Training, validation and test error of one trial against iterations (paper Fig. 6 style)."""
    figure, (axes,) = _new_figure(6.4, 4.0)
    for key, style in (("train_error", "--"), ("val_error", "-"), ("test_error", "-")):
        points = [(row["iteration"], row[key]) for row in rows if key in row]
        if points:
            axes.plot(*zip(*points), style, marker=".", label=key.replace("_", " "))
    _style(axes, "iterations", "error (%)", title)
    return _save(figure, path)
