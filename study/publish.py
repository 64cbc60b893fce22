"""The end of a study: everything the study recorded, drawn and written into its report, and the report
made the study's MLflow run (params, metrics, description, artifacts).

Every table and figure is drawn from records -- the trial runs as MLflow holds them
(:meth:`~study.tracking.StudyTracker.trial_records`), the group results and the final models -- so a
report can be redrawn without retraining:

* ``trials.csv``: every trial with its group, values, Optuna state, iterations, errors, wall time, run id;
* ``fig6_training_curves.png``: paper Fig. 6 for the chosen configuration of every group;
* ``error_vs_depth.png``: paper Fig. 6 / Table 6 as error against depth, with the seeds' spread;
* ``fig7_layer_responses.png`` and ``layer_responses.csv``: paper Fig. 7 (Sec. 4.2) for every group's model;
* ``search/search_<group>_{history,landscape,importance}.png``: Optuna's own analyses of each group's search;
* ``answer.json``: the residual-vs-plain and A-vs-B differences and depth trends with confidence intervals.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from resnet_core import model_info
from resnet_core.analysis import layer_responses, plot_layer_responses, write_responses_csv
from study.answer import answer
from study.figures import GroupCurve, curves_figure, network_label, plot_training_curves
from study.final_models import FinalModel, normalised_test_images
from study.report import GroupResult, ReportFigure, StudyBudget, report_markdown, write_report
from study.search import search_space
from study.search_analysis import TrialRecord, plot_all, write_trials_csv
from study.spec import StudySpec
from study.study_data import RESPONSE_IMAGES, StudyData
from study.tracking import REPORT_ARTIFACTS, StudyTracker

log = logging.getLogger(__name__)

def spec_params(spec: StudySpec) -> dict[str, str]:
    """The spec's values as flat MLflow params: ``search.lr.low``, ``train.iterations``, ..."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)

    walk("", spec.to_dict())
    return flat


def group_metrics(results: Sequence[GroupResult]) -> dict[str, float]:
    """Per group: the chosen values, their validation error, and the final seeds' test error mean and std."""
    metrics: dict[str, float] = {}
    for result in results:
        numeric = {name: value for name, value in {"lr": result.lr, "weight_decay": result.weight_decay,
                                                   **result.values}.items()
                   if isinstance(value, (int, float))}  # a categorical value is in the report and the trials' params
        values = {**numeric, "val_error": result.val_error,
                  "test_error_mean": result.test_mean, "test_error_std": result.test_std,
                  "val_top5_error": result.val_top5_error, "test_top5_error_mean": result.test_top5_mean,
                  "test_top5_error_std": result.test_top5_std,
                  "final_seeds": len(result.test_errors), "trials": result.trials,
                  "stopped_early": result.stopped_early}
        metrics.update({f"{result.group}/{key}": float(value) for key, value in values.items() if value is not None})
    return metrics


def group_curves(spec: StudySpec, results: Sequence[GroupResult], records: Sequence[TrialRecord],
                 tracker: StudyTracker) -> list[GroupCurve]:
    """The curves of each group's chosen configuration: its first-seed final run (training and test error), or,
    without final runs, its chosen search trial (training and validation error)."""
    curves = []
    for result in results:
        final = [r for r in records if r.group == result.group and r.phase == "final" and r.seed == spec.train.seed]
        chosen = [r for r in records if r.group == result.group and r.phase == "search"
                  and r.values == result.values]
        record, held_out = (final[0], "test") if final else ((chosen[0], "val") if chosen else (None, "test"))
        rows = tracker.metric_rows(record.run_id) if record is not None else []
        curves.append(GroupCurve(result.group, result.depth, result.residual, result.shortcut, rows, held_out,
                                 result.settings))
    return curves


def paper_errors(spec: StudySpec, results: Sequence[GroupResult]) -> dict[int, float]:
    """Table 6's CIFAR-10 errors of the ResNets (option A) at the study's depths, as reference markers."""
    if spec.dataset.name != "cifar10":
        return {}
    errors = {}
    for result in results:
        if result.residual:
            error = model_info(result.arch).paper_error
            if error is not None:
                errors[result.depth] = error
    return errors


def draw_layer_responses(spec: StudySpec, models: Sequence[FinalModel], data: StudyData,
                         folder: Path) -> list[ReportFigure]:
    """Fig. 7 for every group's final model, on the test images; a CSV of the values next to it."""
    if not models:
        return []
    responses = {}
    for index, model in enumerate(models, 1):
        log.info("layer responses (Fig. 7) of %s (%d of %d)", model.group.key, index, len(models))
        label = network_label(model.group.depth, model.group.residual, model.group.shortcut, dict(model.group.settings))
        responses[label] = layer_responses(model.net, normalised_test_images(spec, data, model))
    write_responses_csv(responses, folder / "layer_responses.csv")
    plot_layer_responses(responses, folder / "fig7_layer_responses.png", title="Std of layer responses (paper Fig. 7)")
    images = ("the test images" if spec.dataset.name != "imagenet" else
              f"{RESPONSE_IMAGES} val images' centre crops (the paper draws Fig. 7 for CIFAR-10 only)")
    return [ReportFigure("fig7_layer_responses.png", "Layer responses (paper Fig. 7, Sec. 4.2): std of each 3x3 "
                         f"layer's output after BN, before ReLU/addition, on {images}; top in layer order, "
                         "bottom sorted by magnitude (values in layer_responses.csv)")]


def publish_report(spec: StudySpec, tracker: StudyTracker, results: Sequence[GroupResult], budget: StudyBudget,
                   models: Sequence[FinalModel], data: StudyData) -> list[str]:
    """Draw and write the report, make it the study's run (params, metrics, description, artifacts); returns the
    answer's sentences."""
    records = tracker.trial_records(list(spec.search.space))
    answered = answer(results, dataset=spec.dataset.name)
    sentences = answered.sentences()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_trials_csv(records, folder / "trials.csv")
        (folder / "answer.json").write_text(json.dumps(answered.as_dict(), indent=2) + "\n")
        figures = [ReportFigure("fig6_training_curves.png", f"Training curves (paper "
                                f"{curves_figure(spec.dataset.name)}): training error "
                                "(dashed) and test error (bold) of each group's chosen configuration; plain nets "
                                "left, ResNets right")]
        plot_training_curves(group_curves(spec, results, records, tracker), folder / figures[0].path,
                             title=f"study {spec.name}", dataset=spec.dataset.name)
        figures += draw_layer_responses(spec, models, data, folder)
        notes = [] if models else ["layer responses (Fig. 7): no final model (train.final_seeds is 0)"]
        space = search_space(spec.search)
        (folder / "search").mkdir()
        for drawn in plot_all(records, space, folder / "search"):
            figures += [ReportFigure(str(path.relative_to(folder)), f"{drawn.group}: Optuna's {_kind(path)}")
                        for path in drawn.written]
            notes += [f"{drawn.group} {kind}: {reason}" for kind, reason in drawn.skipped.items()]
        shown = write_report(results, folder, spec.name, budget, answer=sentences, figures=figures, notes=notes,
                             paper_errors=paper_errors(spec, results))
        description = report_markdown(results, spec.name, budget, answer=sentences, figures=shown, notes=notes,
                                      link=lambda path: tracker.artifact_url(f"{REPORT_ARTIFACTS}/{path}"))
        tracker.publish_study(spec_params(spec), group_metrics(results), description, folder)
    return sentences


def _kind(path: Path) -> str:
    """A search figure's kind, from its file name: ``search_resnet20-A_history.png`` -> ``optimisation history``."""
    kind = path.stem.rsplit("_", 1)[-1]
    return {"history": "optimisation history", "landscape": "landscape",
            "importance": "parameter importance"}.get(kind, kind)
