"""Each group's final model: read back from its last checkpoint, released through the MLflow Model Registry,
and kept for the report's analysis of layer responses (paper Fig. 7).

The model of a group is its chosen configuration (the search's best validation error) trained on the whole
training set with the study's first final seed (``train.seed``); the other seeds only give the spread of the
test error. It is logged packaged with its input normalisation (:class:`resnet_core.models.serving.ImageClassifier`:
uint8 images in, logits out, any batch size) and registered as ``<study>-<group>`` with the alias ``best`` --
the best configuration of the search, not a seed picked by its test error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune
from torch import nn

from resnet_core import TrainConfig, create_model
from resnet_core.data.augment import Normalizer
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.models.serving import ImageClassifier
from study.report import GroupResult, format_values
from study.spec import Group, StudySpec
from study.study_data import StudyData
from study.tracking import StudyTracker

log = logging.getLogger(__name__)

ALIAS = "best"
EXAMPLE_IMAGES = 8
"""Test images logged as the model's input example (more than 1, so the exported batch size stays dynamic)."""


@dataclass(frozen=True)
class FinalModel:
    """The first-seed final model of one group and the MLflow run that trained it."""

    group: Group
    run_id: str
    seed: int
    net: nn.Module
    normalizer: Normalizer
    """The input normalisation its final run trained with (fitted on all training images: a final run holds
    nothing out)."""
    test_error: float | None = None
    """The test error (%) its final run reported last (top-1)."""
    config: TrainConfig | None = None
    """The engine configuration its final run trained with (its input size and preset on ImageNet); None: the
    spec's (a model made outside a study)."""
    test_top5_error: float | None = None
    """The top-5 test error (%) its final run reported last (ImageNet; None on CIFAR)."""


def registered_name(study: str, group: str) -> str:
    """The Model Registry name of a group's model, e.g. ``cifar10-depth-resnet56-A``."""
    return f"{study}-{group}"


def last_checkpoint_path(result: tune.Result) -> str | None:
    """Where a finished trial's last checkpoint is: Tune's own copy for a trial that trained in its own process (it
    reports its checkpoints to Tune), else the path Ray Train's report carried (``TuneReportCallback`` adds
    ``checkpoint_path`` to the metrics of a worker group's report and keeps the checkpoint in Ray Train's storage)."""
    if result.checkpoint is not None:
        return result.checkpoint.path
    return (result.metrics or {}).get("checkpoint_path")


def final_models(spec: StudySpec, grid: tune.ResultGrid | None, tracker: StudyTracker,
                 data: StudyData) -> list[FinalModel]:
    """Per group (in the spec's order), the network of its first-seed final run, from that run's last checkpoint,
    with the normalisation it trained with (computed once per kind, however many groups share it)."""
    groups = {group.key: group for group in spec.study_groups()}
    found: dict[str, FinalModel] = {}
    for result in grid or []:
        final = (result.config or {}).get("final", {})
        path = last_checkpoint_path(result)
        if final.get("seed") != spec.train.seed or not path or final.get("group") not in groups:
            continue
        run_id = tracker.find_trial_run(result.metrics["trial_id"])
        if run_id is None:
            continue
        state = load_checkpoint(Path(path) / CHECKPOINT_NAME)
        group = groups[final["group"]]
        net = create_model(group.arch, shortcut=group.shortcut, num_classes=state["model"]["fc.weight"].shape[0])
        net.load_state_dict(state["model"])
        config = TrainConfig.from_dict(state["config"])  # every engine checkpoint holds its run's configuration
        errors = {key: None if result.metrics.get(key) is None else float(result.metrics[key])
                  for key in ("test_error", "test_top5_error")}
        found[group.key] = FinalModel(group, run_id, int(final["seed"]), net.eval(), data.normalizer(config),
                                      errors["test_error"], config, errors["test_top5_error"])
    return [found[key] for key in groups if key in found]


def released_model(model: FinalModel) -> ImageClassifier:
    """The network behind the normalisation its final run trained with."""
    return ImageClassifier(model.net, model.normalizer.mean, model.normalizer.std).eval()


def signature(example: torch.Tensor, num_classes: int) -> Any:
    """uint8 images (any batch, C, H, W) of ``example``'s size -> float32 logits (any batch, classes)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    channels, height, width = example.shape[1:]
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype("uint8"), (-1, channels, height, width))]),
                          outputs=Schema([TensorSpec(np.dtype("float32"), (-1, num_classes))]))


def model_config(spec: StudySpec, model: FinalModel) -> TrainConfig:
    """The configuration ``model``'s final run trained with (that of its spec when its checkpoint held none)."""
    return model.config or spec.train_config(model.group, seed=model.seed, val_split=0)


def release(spec: StudySpec, models: Sequence[FinalModel], results: Sequence[GroupResult], tracker: StudyTracker,
            data: StudyData) -> dict[str, str]:
    """Log each final model on its run and register it (alias :data:`ALIAS`, tags carrying its errors and chosen
    values); returns group -> ``models:/<name>@best``."""
    by_group = {result.group: result for result in results}
    released = {}
    for model in models:
        result = by_group.get(model.group.key)
        if result is None:
            continue
        config = model_config(spec, model)
        example = data.example_images(config, EXAMPLE_IMAGES)
        view = (f"the {config.image_size}x{config.image_size} centre crop of the test view (shorter side resized "
                "first; one crop, not the 10 of the reported test error)" if config.is_imagenet else "as stored")
        uri = tracker.log_model(model.run_id, released_model(model), name="model", input_example=example.numpy(),
                                signature=signature(example, data.num_classes))
        tags = {"study": spec.name, "group": model.group.key, "arch": model.group.arch,
                "shortcut": model.group.shortcut or "none", "seed": model.seed, "lr": result.lr,
                "weight_decay": result.weight_decay, **result.settings, **result.values, "val_error": result.val_error,
                "iterations": spec.train.iterations, "dataset": spec.dataset.name,
                "input": f"uint8 images (N, C, H, W) {view}; normalisation inside"}
        if model.test_error is not None:
            tags["test_error"] = model.test_error
        if model.test_top5_error is not None:
            tags["test_top5_error"] = model.test_top5_error
        if result.test_mean is not None:
            tags.update(test_error_mean=result.test_mean, test_error_std=result.test_std,
                        final_seeds=len(result.test_errors))
        if result.test_top5_mean is not None:
            tags.update(test_top5_error_mean=result.test_top5_mean)
        name = registered_name(spec.name, model.group.key)
        description = (f"{model.group.key} of study {spec.name}: the search's best configuration "
                       f"({format_values(result.values)}) trained {spec.train.iterations:,} iterations on all "
                       f"{spec.dataset.name} training images with seed {model.seed}. Input: uint8 images "
                       f"(N, C, H, W) {view}; output: logits.")
        version = tracker.register_model(name, uri, model.run_id, ALIAS, description, tags)
        log.info("registered %s version %d as models:/%s@%s", name, version, name, ALIAS)
        released[model.group.key] = f"models:/{name}@{ALIAS}"
    return released


def normalised_test_images(spec: StudySpec, data: StudyData, model: FinalModel) -> Iterator[torch.Tensor]:
    """The test images, normalised as ``model`` was trained, in batches (for the layer responses of Fig. 7)."""
    for images in data.test_batches(model_config(spec, model)):
        yield model.normalizer(images)
