"""The study's report: per group the chosen lr and weight decay, validation error, test error mean +- std
over the final seeds, parameters -- as a table, JSON, and a figure of error against depth in the manner of
paper Fig. 6 / Table 6 (residual vs plain, shortcut A vs B)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class GroupResult:
    """The outcome of one (architecture, shortcut) group."""

    group: str
    arch: str
    depth: int
    residual: bool
    shortcut: str | None
    params: int | None
    lr: float
    weight_decay: float
    val_error: float
    trials: int
    stopped_early: int
    test_errors: tuple[float, ...] = field(default_factory=tuple)
    paper_error: float | None = None

    @property
    def test_mean(self) -> float | None:
        return statistics.fmean(self.test_errors) if self.test_errors else None

    @property
    def test_std(self) -> float | None:
        return statistics.stdev(self.test_errors) if len(self.test_errors) > 1 else (0.0 if self.test_errors else None)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "test_errors": list(self.test_errors), "test_mean": self.test_mean,
                "test_std": self.test_std}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(results: Sequence[GroupResult]) -> str:
    """A Markdown table, one row per group, in the order of the spec."""
    header = ("| group | depth | shortcut | params | lr | weight decay | val error % | test error % (mean ± std, n) "
              "| paper % | trials (stopped) |")
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        test = "-" if r.test_mean is None else f"{r.test_mean:.2f} ± {r.test_std:.2f} (n={len(r.test_errors)})"
        lines.append(
            f"| {r.group} | {r.depth} | {r.shortcut or 'none (plain)'} | "
            f"{'-' if r.params is None else f'{r.params:,}'} | {r.lr:.4g} | {r.weight_decay:.3g} | "
            f"{_fmt(r.val_error)} | {test} | {_fmt(r.paper_error)} | {r.trials} ({r.stopped_early}) |"
        )
    return "\n".join(lines)


def plot_error_vs_depth(results: Sequence[GroupResult], path: Path, title: str) -> Path:
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
        spreads = [r.test_std or 0.0 for r in members]
        axes.errorbar(depths, errors, yerr=spreads, marker="o", capsize=3, label=label,
                      linestyle="--" if label == "plain" else "-")
    axes.set_xscale("log")
    depths = sorted({r.depth for r in results})
    axes.set_xticks(depths, [str(d) for d in depths])
    return _finish(figure, axes, path, "depth (layers)", "CIFAR-10 test error (%)", title)


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


def write_report(results: Sequence[GroupResult], folder: Path, study: str) -> Path:
    """report.md, report.json and error_vs_depth.png in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    table = format_table(results)
    (folder / "report.md").write_text(f"# Study {study}\n\n{table}\n")
    (folder / "report.json").write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    plot_error_vs_depth(results, folder / "error_vs_depth.png", title=f"study {study}")
    return folder
