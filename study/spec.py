"""The study spec: what a study trains, what it searches, where it records, as frozen typed dataclasses.

A spec is a YAML file (``study/specs/*.yaml``) plus ``--set key.path=value`` overrides. Everything is
checked here, before any trial starts; each problem is a one-line :class:`SpecError` naming the key path.

Defaults follow He et al. 2015, Sec. 4.2 (CIFAR-10): a 45k/5k train/validation split, mini-batch 128,
momentum 0.9, 64k iterations with the learning rate divided by 10 at 32k and 48k (fractions 0.5 and 0.75)
and per-pixel mean subtraction. The paper fixes lr 0.1 and weight decay 1e-4; the default log-uniform
search ranges contain both, so the search can find the paper's recipe. A study of ``dataset.name: imagenet``
starts from the ImageNet recipe instead (Sec. 3.4, :data:`IMAGENET_STUDY_DEFAULTS`): mini-batch 256 over all
of a trial's workers, the rate divided by 10 when the held-out error plateaus, up to 600k iterations.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, with_config

from resnet_core import ConfigError, ResnetCoreError, TrainConfig, list_models, model_info
from resnet_core.engine.config import RESUMABLE_CHANGES, field_specs
from resnet_core.options import CIFAR_DATASETS, COMPILE_MODES, DATASET_TITLES, DATASETS, SHORTCUT_OPTIONS

SHORTCUTS = SHORTCUT_OPTIONS
SAMPLERS = ("tpe", "gp", "random")
"""Optuna samplers by name (study.search.make_sampler); chosen by benchmarks/sampler_choice.py."""
EARLY_STOPPING = ("asha", "none")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # YAML 1.1 reads 1e-4 as a string
STUDY_OWNED = {"arch": "groups.archs", "shortcut": "groups.shortcuts", "data": "dataset.path",
               "dataset": "dataset.name", "download": "dataset.download", "cache_dir": "dataset.cache_dir",
               "val_split": "dataset.val_split", "checkpoint_every": "train.eval_every",
               "checkpoint_seconds": "train.checkpoint_minutes", "epochs": "train.iterations",
               "milestone_epochs": "train.milestones"}
"""TrainConfig fields the spec sets under another key (the key that sets each); every other field may be given
under ``train:`` by its own name."""
NOT_VARIED = frozenset({*STUDY_OWNED, *RESUMABLE_CHANGES, "milestones", "seed"})
"""Fields a study may not search or cross: those the spec owns, the budget (iterations, milestones, evaluations),
the seeds, and how fast or where a run executes (which do not change what it computes)."""
LOG_BY_DEFAULT = ("lr", "weight_decay")
"""Searched on a log scale unless the range says ``log: false`` (scale parameters; the spec has always searched
them log-uniformly). Every other range is uniform unless it says ``log: true``."""
IMAGENET_STUDY_DEFAULTS: dict[str, dict[str, Any]] = {
    "dataset": {"val_split": 10_000},
    "train": {"batch_size": 256, "iterations": 600_000, "milestones": [], "eval_every": 5_000},
}
"""The keys in which a study of ``dataset.name: imagenet`` starts from the paper's ImageNet recipe (Sec. 3.4) rather
than the CIFAR one: "SGD with a mini-batch size of 256 ... divided by 10 when the error plateaus, and the models are
trained for up to 60 x 10^4 iterations" (the plateau schedule and the rate's linear scaling with the batch come with
the engine's ImageNet recipe); an evaluation about every 5k iterations (an epoch at batch 256 is 5k); 10k training
images held out for the search (the paper reports the 50k val images, which a search must not tune on). A key the
spec gives keeps its value."""
FAMILY_OF_DATASET = {**{name: "cifar" for name in CIFAR_DATASETS}, "imagenet": "imagenet"}
"""Which architectures (registry family) each dataset's pipeline feeds: 32x32 CIFAR nets (Sec. 4.2), 224x224
ImageNet nets (Table 1)."""
PINNED_SHORTCUT = re.compile(r"(?P<arch>.+)-(?P<option>[A-Za-z])")
"""``resnet50-B`` under ``groups.archs``: one architecture with its own shortcut option, whatever
``groups.shortcuts`` says (Table 3's ResNet-50 is option B only)."""
WORKER_GROUP_MODES = ("auto", "always")
"""``resources.worker_group``: when a trial trains in a Ray Train worker group (see :class:`ResourcesSpec`)."""
T = TypeVar("T")
DOCUMENTED = ConfigDict(use_attribute_docstrings=True)
"""Each key's docstring becomes its description in the spec's JSON Schema (:mod:`study.spec_schema`)."""


class SpecError(ResnetCoreError, ValueError):
    """The study spec is invalid; the one-line message names the key path (e.g. ``search.lr.low``) and the fix."""


def _require(condition: object, message: str) -> None:
    if not condition:
        raise SpecError(message)


def _at_least(section: str, spec: object, minimums: Mapping[str, int]) -> None:
    for name, minimum in minimums.items():
        value = getattr(spec, name)
        _require(value >= minimum, f"{section}.{name} must be >= {minimum}, got {value}")


def _one_of(key: str, value: str, choices: Sequence[str]) -> None:
    _require(value in choices, f"{key}={value!r} is unknown: use one of {', '.join(choices)}")


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class SearchRange:
    """How one TrainConfig field is searched: a range ``{low, high}`` (``log``: log scale, ``step``: a grid) for a
    numeric field, or ``{choices: [...]}`` for any field."""

    low: float | None = None
    high: float | None = None
    log: bool | None = None
    """None: log scale for :data:`LOG_BY_DEFAULT` (lr, weight_decay), uniform otherwise."""
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def is_log(self, name: str) -> bool:
        return self.log if self.log is not None else name in LOG_BY_DEFAULT

    def extremes(self) -> dict[str, Any]:
        """The values a study must be able to train (key -> value): ``low`` and ``high``, or every choice."""
        if self.choices is not None:
            return {f"choices[{i}]": choice for i, choice in enumerate(self.choices)}
        return {"low": self.low, "high": self.high}

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(str(choice) for choice in self.choices) + "}"
        return f"[{self.low}, {self.high}]"

    def check(self, key: str, name: str) -> None:
        """The range makes sense for field ``name``'s type (the values themselves are checked by TrainConfig)."""
        kind = field_kind(name)
        if self.choices is not None:
            _require(self.low is None and self.high is None and self.step is None and self.log is None,
                     f"{key}: give either choices or low/high, not both")
            _require(len(self.choices) >= 1, f"{key}.choices is empty: list at least one value")
            _require(len(set(map(repr, self.choices))) == len(self.choices), f"{key}.choices repeats a value")
            return
        _require(kind in (int, float), f"{key}: {name} is not numeric, so it has no range: search it with "
                                       f"{{choices: [...]}}")
        _require(self.low is not None and self.high is not None, f"{key} needs low and high (or choices), e.g. "
                                                                 f"{{low: 0.8, high: 0.99}}")
        if kind is int:
            for bound in ("low", "high", "step"):
                value = getattr(self, bound)
                _require(value is None or float(value).is_integer(), f"{key}.{bound}={value}: {name} is an "
                                                                     "integer, so its range is in whole numbers")
        if self.is_log(name):
            _require(self.low > 0, f"{key}.low must be > 0 for a log-uniform range, got {self.low}")
            _require(self.step is None, f"{key}: a log-scale range takes no step: drop step or set log: false")
        _require(self.low < self.high, f"{key}.low={self.low} >= {key}.high={self.high}: empty or inverted "
                                       "range; need low < high")
        _require(self.step is None or self.step > 0, f"{key}.step must be > 0, got {self.step}")

    def to_dict(self) -> dict[str, Any]:
        """The spec's form: only the keys that were given."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items() if value is not None}


def field_kind(name: str) -> type:
    """A TrainConfig field's value type, without None: ``int``, ``float``, ``bool``, ``str`` or ``tuple``."""
    described = field_specs()[name]
    if described.kind == "choice":
        return type(described.choices[0])
    return {"int": int, "float": float, "bool": bool, "str": str, "int_list": tuple}[described.kind]


def _default_space() -> dict[str, SearchRange]:
    """The paper fixes lr 0.1 and weight decay 1e-4 (Sec. 4.2); these log-uniform ranges hold both."""
    return {"lr": SearchRange(0.01, 0.5), "weight_decay": SearchRange(1e-5, 1e-3)}


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class DatasetSpec:
    name: str = "cifar10"
    """cifar10 or cifar100 (the CIFAR pipeline, Sec. 4.2), or imagenet: any ImageNet-style folder or .tar.gz with
    train/<wnid>/ and val/<wnid>/ (full ImageNet, a subset, Imagenette, Tiny ImageNet; the classes are read from
    the data; val/ is the test set, as the paper reports ImageNet's val images, Sec. 4.1)."""
    path: str = "data"
    val_split: int = 5000
    """Held-out training images; the search minimises their error (the paper's 45k/5k split, Sec. 4.2; ImageNet
    studies default to 10000)."""
    download: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        _one_of("dataset.name", self.name, DATASETS)
        _require(self.path, "dataset.path is empty: give the directory or archive holding the data")
        _require(self.val_split >= 1, f"dataset.val_split={self.val_split} must be >= 1: the search objective is "
                                      "the validation error, so hold out images (the paper used 5000, Sec. 4.2)")


def study_architectures() -> dict[str, list[str]]:
    """The architectures a study may name, by registry family: every registered net of fixed depth."""
    usable: dict[str, list[str]] = {}
    for name in list_models():
        info = model_info(name)
        if "depth" in info.fixed:
            usable.setdefault(info.family, []).append(name)
    return usable


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class GroupsSpec:
    """Architectures x shortcut options (x any other crossed field); each combination is tuned separately (plain
    nets have no shortcut)."""

    archs: tuple[str, ...] = field(metadata={"hint": "list the architectures, e.g. [resnet20, plain20] (CIFAR) or "
                                                     "[resnet18, plain18] (ImageNet)"})
    """Registered architectures of one family: CIFAR (resnet20 ... resnet1202, plain20 ...) or ImageNet
    (resnet18 ... resnet152, plain18, plain34). ``resnet50-B`` pins a residual net to one shortcut option,
    whatever ``shortcuts`` says."""
    shortcuts: tuple[str, ...] = ("A",)
    """Option A, zero-padding identity shortcuts, is the paper's CIFAR choice (Sec. 4.2) and that of its ImageNet
    Table 2; B/C: Table 3."""
    cross: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, metadata={"extras": "groups"})
    """Any other TrainConfig field by name with a list of values (``batch_size: [128, 256]``): every group is
    repeated for each value, each tuned separately."""

    def __post_init__(self) -> None:
        usable = [name for names in study_architectures().values() for name in names]
        _require(self.archs, f"groups.archs is empty: list at least one architecture of {', '.join(usable)}")
        for i, entry in enumerate(self.archs):
            self._checked_entry(f"groups.archs[{i}]", entry, usable)
        families = {model_info(arch).family for arch, _ in self.entries()}
        _require(len(families) == 1, f"groups.archs={list(self.archs)} mixes CIFAR and ImageNet architectures: a "
                                     "study trains one dataset, so list architectures of one family")
        _require(self.shortcuts, "groups.shortcuts is empty: use one or more of A, B, C (paper Table 3)")
        for i, option in enumerate(self.shortcuts):
            _require(option in SHORTCUTS, f"groups.shortcuts[{i}]: unknown shortcut option {option!r}: use "
                                          f"{', '.join(SHORTCUTS)} (paper Table 3)")
        for name, values in self.cross.items():
            _require(values, f"groups.{name} is empty: list the values to cross, e.g. {name}: [a, b]")
            _require(len(set(map(repr, values))) == len(values), f"groups.{name} repeats a value")

    @staticmethod
    def _checked_entry(key: str, entry: str, usable: Sequence[str]) -> None:
        """``entry`` is one of the ``usable`` architectures, or one of them pinned to an option (``resnet50-B``)."""
        known, every = set(usable), ", ".join(usable)
        if entry in known:
            return
        _require(entry not in set(list_models()), f"{key}: {entry} has no fixed depth: use one of {every}")
        pinned = PINNED_SHORTCUT.fullmatch(entry)
        _require(pinned is not None and pinned["arch"] in known,
                 f"{key}: unknown architecture {entry!r}: use one of {every} (or e.g. resnet50-B for one shortcut "
                 "option)")
        arch, option = pinned["arch"], pinned["option"]
        _require(model_info(arch).residual, f"{key}: {arch} is a plain net (no shortcuts, paper Fig. 3 middle), so it "
                                            f"takes no option {option}: write {arch}")
        _require(option in SHORTCUTS, f"{key}: unknown shortcut option {option!r} of {arch}: use "
                                      f"{', '.join(f'{arch}-{o}' for o in SHORTCUTS)} (paper Table 3)")

    def entries(self) -> list[tuple[str, str | None]]:
        """``(architecture, its pinned shortcut option or None)`` of every ``archs`` entry, in order."""
        found = []
        for entry in self.archs:
            pinned = PINNED_SHORTCUT.fullmatch(entry)
            if pinned is not None and entry not in set(list_models()):
                found.append((pinned["arch"], pinned["option"]))
            else:
                found.append((entry, None))
        return found

    @property
    def family(self) -> str:
        """The registry family of the architectures: ``cifar`` or ``imagenet``."""
        return model_info(self.entries()[0][0]).family


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class SearchSpec:
    space: Mapping[str, SearchRange] = field(default_factory=_default_space, metadata={"extras": "search"})
    """TrainConfig fields by name with their :class:`SearchRange`; ``lr`` and ``weight_decay`` by default
    (``lr: null`` fixes lr at ``train.lr`` or the paper's 0.1)."""
    trials_per_group: int = 8
    """Trials per group; 0: no search, every group trains the one ``initial_points`` entry (the paper's protocol:
    one recipe for every network, Sec. 4.2), straight to the final retraining."""
    sampler: str = "tpe"
    """tpe (multivariate TPE), gp (Gaussian process) or random; the first trials of each group are random either
    way (about a third of trials_per_group, at least 2: study.search.startup_trials)."""
    seed: int = 0
    early_stopping: str = "asha"
    grace_evals: int = 2
    """Evaluations a trial always gets before ASHA may stop it."""
    reduction_factor: int = 3
    initial_points: tuple[dict[str, Any], ...] = ()
    """Points (a value of every searched field) tried first in every group; they count toward
    ``trials_per_group``."""

    @property
    def searches(self) -> bool:
        """Whether the study searches at all (``trials_per_group: 0`` trains the initial point only)."""
        return self.trials_per_group > 0

    def fixed_point(self) -> dict[str, Any]:
        """Without a search, the values every group trains: the one initial point (nothing when nothing is searched)."""
        return dict(self.initial_points[0]) if self.initial_points else {}

    @property
    def lr(self) -> SearchRange | None:
        return self.space.get("lr")

    @property
    def weight_decay(self) -> SearchRange | None:
        return self.space.get("weight_decay")

    def __post_init__(self) -> None:
        for name, span in self.space.items():
            span.check(f"search.{name}", name)
        _at_least("search", self, {"trials_per_group": 0, "seed": 0, "grace_evals": 1, "reduction_factor": 2})
        _one_of("search.sampler", self.sampler, SAMPLERS)
        _one_of("search.early_stopping", self.early_stopping, EARLY_STOPPING)
        _require(self.searches or len(self.initial_points) == 1 or not self.space,
                 "search.trials_per_group=0 (no search) trains one configuration in every group: give it as one "
                 "search.initial_points entry, e.g. [{lr: 0.1, weight_decay: 1.0e-4}]")
        _require(len(self.initial_points) <= max(self.trials_per_group, 1),
                 f"search.initial_points has {len(self.initial_points)} points but search.trials_per_group is "
                 f"{self.trials_per_group}: raise trials_per_group or drop points")
        points = tuple(self._checked_point(point, f"search.initial_points[{i}]")
                       for i, point in enumerate(self.initial_points))
        object.__setattr__(self, "initial_points", points)

    def _checked_point(self, point: Mapping[str, Any], key: str) -> dict[str, Any]:
        names = ", ".join(self.space) or "none (nothing is searched)"
        unknown = sorted(set(point) - set(self.space))
        _require(not unknown, f"unknown key {key}.{unknown[0] if unknown else ''}: valid keys are the searched "
                              f"fields {names}")
        checked = {}
        for name, span in self.space.items():
            _require(name in point, f"{key}.{name} is required: give every searched field ({names})")
            value = point[name] if span.choices is not None else _convert(point[name], field_kind(name), key)
            _require(span.contains(value), f"{key}.{name}={value} is outside search.{name} {span.describe()}: "
                                           "widen the range or move the point")
            checked[name] = value
        return checked


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class TrainSpec:
    iterations: int = 64_000
    """Iterations per trial: the paper's 64k on CIFAR (Sec. 4.2); an ImageNet study defaults to its "up to 60 x
    10^4" (Sec. 3.4)."""
    batch_size: int = 128
    """Images per SGD step over all of a trial's workers: 128 on CIFAR (Sec. 4.2), 256 on ImageNet (Sec. 3.4)."""
    milestones: tuple[float, ...] = (0.5, 0.75)
    """Fractions of ``iterations`` where the lr drops 10x: the paper's 32k and 48k of 64k (Sec. 4.2). An ImageNet
    study defaults to none, its rate divided when the error plateaus (Sec. 3.4; ``lr_schedule: step`` with fractions
    such as [0.33, 0.67] gives a schedule in epochs, e.g. 30 and 60 of 90)."""
    eval_every: int = 2000
    """Iterations between evaluations (2000 on CIFAR; 5000, about an epoch at batch 256, on ImageNet)."""
    final_seeds: int = 3
    """Retrainings of each group's best point on the full training set; 0 skips them."""
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    momentum: float = 0.9
    normalization: str = "pixel_mean"
    channels_last: bool | None = None
    """NHWC memory format; None: on for CUDA and CPU (resnet_core.engine.step)."""
    compile: str = "none"
    """torch.compile mode of every trial's model (none, default, reduce-overhead, max-autotune)."""
    checkpoint_minutes: float = 5.0
    """A trial also checkpoints after this many minutes of training since its last checkpoint (besides every
    evaluation), so an interruption or a failed worker costs at most that much work; 0: at evaluations only."""
    overrides: Mapping[str, Any] = field(default_factory=dict, metadata={"extras": "train"})
    """Any other TrainConfig field by name (``lr_decay: 0.2``, ``warmup: false``): every run of the study gets it."""

    def __post_init__(self) -> None:
        _at_least("train", self, {"iterations": 1, "eval_every": 1, "final_seeds": 0})
        _require(self.checkpoint_minutes >= 0, f"train.checkpoint_minutes={self.checkpoint_minutes} must be >= 0 "
                                               "(0 checkpoints at evaluations only)")
        _one_of("train.compile", self.compile, COMPILE_MODES)
        for i, fraction in enumerate(self.milestones):
            _require(0 < fraction < 1, f"train.milestones[{i}]={fraction} is not a fraction in (0, 1) of "
                                       "train.iterations (the paper's 32k/48k of 64k are 0.5, 0.75)")
        _require(all(a < b for a, b in pairwise(self.milestones)),
                 f"train.milestones must be increasing, got {list(self.milestones)}")
        _require(all(m > 0 for m in self.milestone_iterations()),
                 f"train.milestones={list(self.milestones)} round to iteration 0 at train.iterations="
                 f"{self.iterations}: raise iterations or the fractions")

    def milestone_iterations(self) -> tuple[int, ...]:
        """The milestones in iterations, deduplicated: (0.5, 0.75) of 64000 -> (32000, 48000)."""
        return tuple(dict.fromkeys(round(f * self.iterations) for f in self.milestones))


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class ResourcesSpec:
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent_trials: int = 0
    """0: as many trials at once as the resources allow."""
    worker_group: str = "auto"
    """Where a trial trains. ``auto``: a trial of one worker trains in the trial's own process (Ray Train's local
    mode, ``num_workers=0``: no worker group, controller or helper actors to start, which on a small machine cost
    more time than a short trial trains; a failed or interrupted trial restarts from its last checkpoint through
    Tune), and a trial of several workers in a Ray Train worker group. ``always``: every trial in a worker group,
    one worker too (Ray Train restarts a failed worker group itself)."""

    def __post_init__(self) -> None:
        gpus = self.gpus_per_worker
        _at_least("resources", self, {"workers_per_trial": 1, "gpus_per_worker": 0, "max_concurrent_trials": 0})
        _one_of("resources.worker_group", self.worker_group, WORKER_GROUP_MODES)
        _require(self.cpus_per_worker > 0, f"resources.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        _require(gpus <= 1 or gpus.is_integer(), f"resources.gpus_per_worker={gpus}: fractional GPUs only below "
                                                 "one; use a value in [0, 1] or a whole number")

    def per_worker(self) -> dict[str, float]:
        """The Ray resources one worker holds: its CPUs, and its GPU share where it has one."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker > 0 else {})}

    @property
    def trains_in_trial_process(self) -> bool:
        """Whether a trial's training runs in the trial's own process rather than a Ray Train worker group."""
        return self.workers_per_trial == 1 and self.worker_group == "auto"


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class Group:
    """One tuned unit: an architecture, for residual nets a shortcut option, and the values of crossed fields."""

    arch: str
    shortcut: str | None
    depth: int
    residual: bool
    settings: tuple[tuple[str, Any], ...] = ()
    """``(field, value)`` of every field crossed under ``groups:`` (e.g. ``(("batch_size", 256),)``)."""

    @property
    def key(self) -> str:
        """``resnet20-A``, ``resnet56-B``; plain nets have no shortcut: ``plain20``; crossed fields follow:
        ``resnet20-A-batch_size256``."""
        base = self.arch if self.shortcut is None else f"{self.arch}-{self.shortcut}"
        return base + "".join(f"-{name}{value}" for name, value in self.settings)


@with_config(DOCUMENTED)
@dataclass(frozen=True)
class StudySpec:
    name: str = field(metadata={"hint": "name the study (letters, digits, '-', '_', '.')"})
    dataset: DatasetSpec
    groups: GroupsSpec
    search: SearchSpec
    train: TrainSpec
    resources: ResourcesSpec
    mlflow: MlflowSpec
    storage: str | None = None
    """Where Ray Tune keeps trial results: a local path (made absolute) or a URI such as s3://bucket/dir."""

    def __post_init__(self) -> None:
        _require(_NAME.fullmatch(self.name) and self.name not in (".", ".."),
                 f"name={self.name!r} is not usable as a directory or experiment name: use letters, digits, "
                 "'-', '_' and '.' only")
        family, wanted = self.groups.family, FAMILY_OF_DATASET[self.dataset.name]
        if family != wanted:
            usable = ", ".join(study_architectures().get(wanted, []))
            other = "imagenet" if family == "imagenet" else "cifar10"
            kind = "an ImageNet" if family == "imagenet" else "a CIFAR"
            raise SpecError(f"groups.archs: {self.groups.archs[0]} is {kind} architecture but dataset.name="
                            f"{self.dataset.name}: use "
                            f"{DATASET_TITLES[self.dataset.name]} architectures ({usable}) or dataset.name={other}")
        batch, workers = self.train.batch_size, self.resources.workers_per_trial
        _require(batch % workers == 0, f"train.batch_size={batch} is not divisible by resources.workers_per_trial="
                                       f"{workers}: each worker takes an equal share of the batch")
        self._check_device()
        _require(self.search.searches or self.train.final_seeds > 0,
                 "search.trials_per_group=0 and train.final_seeds=0 train nothing: set train.final_seeds >= 1")
        evals = math.ceil(self.train.iterations / min(self.train.eval_every, self.train.iterations))
        _require(self.search.early_stopping == "none" or self.search.grace_evals <= evals,
                 f"search.grace_evals={self.search.grace_evals} exceeds the {evals} evaluations of a trial "
                 "(train.iterations / train.eval_every): lower it")
        self._check_varied_fields()
        groups = self.study_groups()
        for group in groups:
            self._check_trains(group, ranges=group == groups[0])

    def _check_varied_fields(self) -> None:
        """A field is set in one place only: searched, crossed or fixed under ``train:``."""
        for name in self.search.space:
            _require(name not in self.groups.cross, f"search.{name}: {name} is also crossed under groups.{name}: "
                                                    "search it or cross it, not both")
            _require(name not in self.train.overrides, f"search.{name}: {name} is also fixed by train.{name}: drop "
                                                       f"one (search.{name}: null fixes it)")
        for name in self.groups.cross:
            _require(name not in self.train.overrides, f"groups.{name}: {name} is also fixed by train.{name}: drop "
                                                       "one")

    def _check_trains(self, group: Group, ranges: bool) -> None:
        """The group's run is a valid TrainConfig; with ``ranges``, also at each range's ends and each choice."""
        base = {name: next(iter(span.extremes().values())) for name, span in self.search.space.items()}
        try:
            self.train_config(group, base, seed=self.train.seed)
        except ConfigError as error:
            raise SpecError(self._located(str(error))) from None
        for name, span in self.search.space.items() if ranges else ():
            for which, value in span.extremes().items():
                try:
                    self.train_config(group, {**base, name: value}, seed=self.train.seed)
                except ConfigError as error:
                    raise SpecError(f"search.{name}.{which}={value}: {error}") from None

    def _located(self, message: str) -> str:
        """Prefix a TrainConfig error with the spec key of the field it names: ``unknown device ..`` ->
        ``train.device: unknown device ..``."""
        sources = {**{name: f"train.{name}" for name in TrainConfig.field_names()}, **STUDY_OWNED,
                   **{name: f"groups.{name}" for name in self.groups.cross},
                   **{name: f"search.{name}" for name in self.search.space}}
        hits = [(m.start(), name) for name in sources if (m := re.search(rf"\b{name}\b", message)) is not None]
        return f"{sources[min(hits)[1]]}: {message}" if hits else f"train: {message}"

    def _check_device(self) -> None:
        """``train.device`` is where every trial trains (study.trial.worker_device); ``cuda`` needs GPUs reserved.
        (``cpu`` with GPUs reserved trains on the CPU as asked, leaving the reserved GPUs idle.)"""
        device, gpus = self.train.device.split(":")[0], self.resources.gpus_per_worker
        _require(device != "cuda" or gpus > 0, f"train.device={self.train.device} but resources.gpus_per_worker=0 "
                                               "reserves no GPU for it: set resources.gpus_per_worker (e.g. 1) or "
                                               "train.device=auto")

    def study_groups(self) -> list[Group]:
        """archs x shortcuts x crossed values, in spec order; a plain net gives one group whatever the shortcuts."""
        crossed = [[(name, value) for value in values] for name, values in self.groups.cross.items()]
        groups: list[Group] = []
        for arch, pinned in self.groups.entries():
            info = model_info(arch)
            options = (pinned,) if pinned else self.groups.shortcuts
            for option in options if info.residual else (None,):
                for settings in itertools.product(*crossed):
                    group = Group(arch, option, int(info.depth or 0), info.residual, tuple(settings))
                    if group not in groups:
                        groups.append(group)
        return groups

    def train_config(self, group: Group, values: Mapping[str, Any] | None = None, *, seed: int,
                     val_split: int | None = None, **searched: Any) -> TrainConfig:
        """The run of one trial: the spec's ``train:`` values, then the group's, then the searched ``values`` (also
        given by name: ``lr=0.1``); ``val_split=0`` retrains on the full training set."""
        data, train = self.dataset, self.train
        eval_every = min(train.eval_every, train.iterations)
        fixed = {"arch": group.arch, "shortcut": group.shortcut, "data": data.path, "dataset": data.name,
                 "download": data.download, "cache_dir": data.cache_dir,
                 "val_split": data.val_split if val_split is None else val_split,
                 "normalization": train.normalization, "batch_size": train.batch_size, "momentum": train.momentum,
                 "iterations": train.iterations, "milestones": train.milestone_iterations(), "seed": int(seed),
                 "device": train.device, "eval_every": eval_every, "checkpoint_every": eval_every, "bf16": train.bf16,
                 "channels_last": train.channels_last, "compile": train.compile,
                 "checkpoint_seconds": 60.0 * train.checkpoint_minutes}
        if data.name == "imagenet":
            fixed["workers"] = loader_workers(self.resources.cpus_per_worker)
        chosen = {name: _typed(name, value) for name, value in {**(values or {}), **searched}.items()}
        return TrainConfig.from_dict({**fixed, **train.overrides, **dict(group.settings), **chosen})

    def tracking_uri(self, cwd: Path) -> str:
        """The MLflow URI; default ``sqlite:///<cwd>/mlflow.db``. Relative sqlite paths are made absolute."""
        uri = self.mlflow.tracking_uri or "sqlite:///mlflow.db"
        prefix = "sqlite:///"
        if uri.startswith(prefix) and uri[len(prefix):] != ":memory:":
            return prefix + str((Path(cwd) / uri[len(prefix):]).resolve())
        return uri

    def experiment_name(self) -> str:
        return self.mlflow.experiment or self.name

    def storage_path(self, cwd: Path) -> str:
        """Ray Tune's storage: default ``<cwd>/ray_results``; local paths made absolute, URIs kept."""
        storage = self.storage or "ray_results"
        if "://" in storage:
            return storage
        return str((Path(cwd) / Path(storage).expanduser()).resolve())

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (lists, not tuples), in the spec's own form (searched, crossed and ``train:``
        fields by name); ``spec_from_dict(spec.to_dict()) == spec``."""
        return _plain(_section(self))


def loader_workers(cpus_per_worker: float) -> int:
    """DataLoader processes of an ImageNet trial's worker, from the CPUs Ray gives the worker: all but the one that
    trains (on a GPU: feeds it), none below two CPUs (the worker then decodes its images itself). The engine's own
    default counts the CPUs of the machine, which a worker of a shared node does not own; ``train.workers`` sets it."""
    return max(int(cpus_per_worker) - 1, 0)


def _section(value: Any) -> Any:
    """A spec dataclass as the mapping a YAML file holds: an extras field's entries under their own names (a
    default search range that was dropped as ``null``), ranges with only the keys given."""
    if isinstance(value, SearchRange):
        return value.to_dict()
    if not dataclasses.is_dataclass(value):
        return value
    data: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if f.metadata.get("extras"):
            defaults = f.default_factory() if f.default_factory is not dataclasses.MISSING else {}
            data.update({name: None for name in defaults if name not in inner})
            data.update({name: _section(item) for name, item in inner.items()})
        else:
            data[f.name] = _section(inner)
    return data


def _typed(name: str, value: Any) -> Any:
    """A searched or sampled value as its field's type (an integer range's ends are read as floats)."""
    if field_kind(name) is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------- resuming
RESUMABLE_KEYS = ("dataset.path", "dataset.cache_dir", "dataset.download", "train.checkpoint_minutes", "resources",
                  "mlflow", "storage", *sorted(f"train.{name}" for name in RESUMABLE_CHANGES
                                               - {"iterations", "epochs", "eval_every"} - set(STUDY_OWNED)))
"""Keys (or sections) a resumed study may change: where data and records live, and how fast and where trials
run. Any other change would mix results of two different studies under one name."""


def changed_keys(stored: Mapping[str, Any], spec: StudySpec) -> list[tuple[str, Any, Any]]:
    """``(key path, stored value, new value)`` for every search-relevant key whose value differs."""
    try:
        before = spec_from_dict(stored).to_dict()  # fills defaults of keys added since, like the new spec
    except SpecError:
        before = _plain(dict(stored))
    old, new = _flatten(before), _flatten(spec.to_dict())
    keys = sorted(set(old) | set(new), key=lambda key: (key.split(".")[0], key))
    return [(key, old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)
            and not any(key == keep or key.startswith(f"{keep}.") for keep in RESUMABLE_KEYS)]


def check_resumable(stored_yaml: str | None, spec: StudySpec) -> None:
    """A study resumed with other search-relevant values stops with one line naming them and the ways out."""
    if stored_yaml is None:
        return
    loaded = yaml.safe_load(stored_yaml)
    stored = loaded if isinstance(loaded, Mapping) else {}
    changes = changed_keys(stored, spec)
    _check_same_trial_place(stored, spec)
    if changes:
        listed = ", ".join(f"{key} ({before!r} -> {after!r})" for key, before, after in changes[:6])
        more = f" and {len(changes) - 6} more" if len(changes) > 6 else ""
        raise SpecError(f"study {spec.name!r} was started with other values of {listed}{more}: resume it with the "
                        f"spec it was started with, or start a new study with --set name=NEW_NAME")


def _check_same_trial_place(stored: Mapping[str, Any], spec: StudySpec) -> None:
    """Resources may change on resume, but not where a trial trains: a worker group's checkpoints are Ray Train's,
    an in-process trial's are Tune's, and a trial that moved would not find its own and start over. A study stored
    without ``resources.worker_group`` was started when every trial had a worker group: ``always``."""
    stored_resources = stored.get("resources")
    if isinstance(stored_resources, Mapping) and "worker_group" not in stored_resources:
        stored = {**stored, "resources": {**stored_resources, "worker_group": "always"}}
    try:
        before = spec_from_dict(stored).resources
    except SpecError:
        return
    now = spec.resources
    if before.trains_in_trial_process != now.trains_in_trial_process:
        raise SpecError(f"study {spec.name!r} was started with resources.workers_per_trial={before.workers_per_trial} "
                        f"and resources.worker_group={before.worker_group} (its trials train in "
                        f"{'their own process' if before.trains_in_trial_process else 'a worker group'}, where their "
                        f"checkpoints are): resume it with --set resources.workers_per_trial={before.workers_per_trial}"
                        f" --set resources.worker_group={before.worker_group}, or start a new study with "
                        "--set name=NEW_NAME")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = _join(prefix, str(key))
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


# ---------------------------------------------------------------------------------------------- loading
def default_spec_path() -> Path:
    """The paper's CIFAR-10 depth study, ``study/specs/cifar10_depth.yaml``."""
    return Path(__file__).parent / "specs" / "cifar10_depth.yaml"


def load_spec(path: str | Path | None = None, overrides: Sequence[str] = ()) -> StudySpec:
    """Read a YAML spec, apply ``key.path=value`` overrides in order, validate, return the spec."""
    file = default_spec_path() if path is None else Path(path)
    data = _read_yaml(file)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value, text)
    return spec_from_dict(data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"search.trials_per_group=4"`` -> ``(["search", "trials_per_group"], 4)``; the value is YAML."""
    key, sep, raw = text.partition("=")
    keys = [part.strip() for part in key.split(".")]
    _require(sep and all(keys), f"override {text!r} must look like key.path=value, e.g. search.trials_per_group=4")
    try:
        return keys, yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise SpecError(f"override {key.strip()}: value {raw!r} is not valid YAML: {_one_line(error)}") from None


def spec_from_dict(data: Mapping[str, Any]) -> StudySpec:
    """Build and validate a spec from untyped input; unknown keys fail with the list of valid ones. A study of
    ImageNet starts from the ImageNet recipe (:data:`IMAGENET_STUDY_DEFAULTS`) where the spec is silent."""
    return _build(StudySpec, with_recipe_defaults(data), "")


def with_recipe_defaults(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with the keys of :data:`IMAGENET_STUDY_DEFAULTS` it does not give, when its dataset is ImageNet."""
    dataset = data.get("dataset") if isinstance(data, Mapping) else None
    if not isinstance(dataset, Mapping) or dataset.get("name") != "imagenet":
        return data
    filled = dict(data)
    for section, defaults in IMAGENET_STUDY_DEFAULTS.items():
        given = filled.get(section)
        if given is None or isinstance(given, Mapping):
            filled[section] = {**defaults, **(given or {})}
    return filled


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file {file} not found: pass an existing YAML file (see study/specs/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"spec file {file} cannot be read: {_one_line(error)}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"spec file {file} is not valid YAML: {_one_line(error)}") from None
    _require(isinstance(data, dict), f"spec file {file}: the top level must be a mapping (name, dataset, groups, "
                                     f"...), got {type(data).__name__}")
    return data


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _set_path(data: dict[str, Any], keys: list[str], value: Any, text: str) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        _require(isinstance(child, dict), f"override {text!r}: {'.'.join(keys[:depth + 1])} is not a mapping, "
                                          f"so it has no key {keys[depth + 1]}")
        node = child
    node[keys[-1]] = value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _build(cls: type[T], data: Any, path: str) -> T:
    """Construct dataclass ``cls`` from a mapping: unknown keys, missing keys and types checked per key path. A
    section with an extras field (``train``, ``groups``, ``search``) also takes TrainConfig fields by name."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    extras = next((f for f in fields if f.metadata.get("extras")), None)
    names = [f.name for f in fields if f is not extras]
    where = f"under {path}" if path else "at the top level"
    _require(isinstance(data, Mapping), f"{path or 'the spec'} must be a mapping with keys {', '.join(names)}, "
                                        f"got {data!r}")
    for key in data:
        if key not in names and (extras is None or key not in TrainConfig.field_names()):
            known = names + (TrainConfig.field_names() if extras is not None else [])
            close = difflib.get_close_matches(str(key), known, n=1)
            training = " and any training option by name (python -m resnet_core.train --help)" if extras else ""
            raise SpecError(f"unknown key {_join(path, str(key))}: valid keys {where} are {', '.join(names)}{training}"
                            + (f"; did you mean {_join(path, close[0])}?" if close else ""))
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields:
        key = _join(path, f.name)
        if f is extras:
            values[f.name] = _extras(f, {k: v for k, v in data.items() if k not in names}, path)
        elif f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], key)
        elif dataclasses.is_dataclass(hints[f.name]) and f.default is dataclasses.MISSING:
            values[f.name] = _build(hints[f.name], {}, key)  # an omitted section takes its defaults
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{key} is required: {f.metadata.get('hint', 'give a value')}")
    return cls(**values)


def _extras(f: dataclasses.Field, given: Mapping[str, Any], path: str) -> dict[str, Any]:
    """TrainConfig fields given by name in section ``path``: searched ranges (``null`` drops a default one),
    crossed value lists, or fixed ``train:`` values."""
    section = f.metadata["extras"]
    values = dict(f.default_factory()) if f.default_factory is not dataclasses.MISSING else {}
    for name, value in given.items():
        key = _join(path, name)
        _require(name not in STUDY_OWNED, f"{key}: {name} is set by {STUDY_OWNED.get(name)}: set it there")
        _require(section == "train" or name not in NOT_VARIED,
                 f"{key}: {name} cannot be {'searched' if section == 'search' else 'crossed'}: the budget, seeds and "
                 "execution options are the same for every group; set it under train")
        if section == "search":
            if value is None:
                values.pop(name, None)
            else:
                values[name] = _build(SearchRange, value, key)
        elif section == "groups":
            values[name] = _convert(value, tuple[Any, ...], key)
        else:
            values[name] = _convert(value, Any, key)
    return values


def _convert(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` against the type ``hint``: ints pass as floats, lists become tuples, bools are not ints."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if hint is Any:  # a TrainConfig field's value: TrainConfig checks it; YAML 1.1 reads 1e-4 as a string
        exponent = isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip())
        return float(value) if exponent else tuple(value) if isinstance(value, list) else value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(value, next(arm for arm in args if arm is not type(None)), path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path)
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), f"{path} must be a list, got {value!r}")
        return tuple(_convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        _require(isinstance(value, Mapping), f"{path} must be a mapping, got {value!r}")
        return {str(key): _convert(item, args[1], _join(path, str(key))) for key, item in value.items()}
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), f"{path} must be a number, "
                                                                                   f"got {value!r}")
        _require(math.isfinite(value), f"{path} must be a finite number, got {value!r}")
        return float(value)
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), f"{path} must be an integer, got {value!r}")
        return value
    names = {bool: "true or false", str: "a string"}
    _require(isinstance(value, hint), f"{path} must be {names.get(hint, hint.__name__)}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


__all__ = ["IMAGENET_STUDY_DEFAULTS",
           "DatasetSpec", "Group", "GroupsSpec", "MlflowSpec", "ResourcesSpec", "SearchRange", "SearchSpec",
           "SpecError", "StudySpec", "TrainSpec", "changed_keys", "check_resumable", "default_spec_path", "load_spec",
           "loader_workers", "parse_override", "spec_from_dict", "study_architectures"]
