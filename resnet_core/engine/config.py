"""The training configuration: one frozen, typed, validated value saved with every run.

Defaults are the paper's CIFAR-10 recipe (He et al. 2015, Sec. 4.2): "We use a weight decay of 0.0001 and
momentum of 0.9 ... mini-batch size of 128 ... We start with a learning rate of 0.1, divide it by 10 at
32k and 48k iterations, and terminate training at 64k iterations". The ImageNet recipe (Sec. 3.4) is
:data:`IMAGENET_RECIPE`: "SGD with a mini-batch size of 256. The learning rate starts from 0.1 and is
divided by 10 when the error plateaus, and the models are trained for up to 60 x 10^4 iterations. We use a
weight decay of 0.0001 and a momentum of 0.9. We do not use dropout". :meth:`TrainConfig.from_dict` and
:meth:`TrainConfig.for_dataset` start from the recipe of the ``dataset`` they are given. Every departure
from the paper is a named field whose default is the paper's behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_core.errors import ConfigError
from resnet_core.options import EVAL_CROPS, PRESETS, check_options

NORMALIZATIONS = ("pixel_mean", "channel")
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
CIFAR_DATASETS = ("cifar10", "cifar100")
DATASETS = (*CIFAR_DATASETS, "imagenet")
LR_SCHEDULES = ("step", "plateau")

IMAGENET_RECIPE: dict[str, Any] = {
    "batch_size": 256,
    "iterations": 600_000,  # "trained for up to 60 x 10^4 iterations" (Sec. 3.4)
    "lr_schedule": "plateau",  # "divided by 10 when the error plateaus" (Sec. 3.4)
    "milestones": (),
    "lr_reference_batch": 256,  # lr 0.1 is the paper's rate for batch 256; other batches scale it linearly
    "warmup": False,  # the lr-0.01 warm-up is the paper's CIFAR ResNet-110 recipe only (Sec. 4.2)
    "eval_every": 5_000,  # about one epoch of ImageNet's 1.28M images at batch 256
    "checkpoint_every": 5_000,
    "eval_batch_size": 100,  # images; with 10-crop testing that is 1,000 crops per forward pass
}
"""The fields in which the ImageNet recipe (Sec. 3.4) differs from the CIFAR one (Sec. 4.2)."""

# Fields that only the ImageNet pipeline reads, with their defaults; a CIFAR run must leave them alone.
IMAGENET_ONLY = ("preset", "image_size", "eval_crops", "workers", "skip_corrupt", "mean_images")

# Fields a resumed run may change; every other field must match the checkpoint's configuration.
RESUMABLE_CHANGES = frozenset(
    {"iterations", "epochs", "device", "eval_every", "checkpoint_every", "checkpoint_seconds", "eval_batch_size",
     "data", "download", "cache_dir", "workers", "channels_last", "compile", "fused_sgd", "threads"}
)
"""Resumable: how long, where and how fast a run executes; not what it computes (bf16 does change that)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run.

    Constructed directly, the defaults are the CIFAR recipe (Sec. 4.2); :meth:`for_dataset` and
    :meth:`from_dict` (untyped input: JSON, YAML, CLI) start from the recipe of the given ``dataset``.
    """

    # --- model (Sec. 4.2) ---
    arch: str = "resnet20"
    depth: int | None = None
    """Depth for the 6n+2 families (``cifar_resnet``, ``cifar_plain``); named models fix their own depth."""
    shortcut: str | None = None
    """Shortcut option A, B or C (Table 3); None keeps the model's default (A on CIFAR, Sec. 4.2)."""
    stride_in: str | None = None
    """Where a downsampling bottleneck strides: "1x1" (the paper's first 1x1 convolution) or "3x3"
    (torchvision's "v1.5"); None keeps the model's default (ImageNet bottleneck nets only)."""

    # --- data (Sec. 4.2; ImageNet Sec. 3.4) ---
    data: str = "data"
    """Path to the data: an official CIFAR archive, a class-folder tree, or a .tar.gz of one; for
    ``imagenet`` a folder (or .tar.gz) holding ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``."""
    dataset: str = "cifar10"
    """cifar10 / cifar100: the CIFAR pipeline (data held on the device; which official set to look for or
    download when ``data`` holds none). imagenet: the ImageNet pipeline (files decoded by DataLoader workers)."""
    download: bool = True
    val_split: int = 0
    """Training images held out for validation; the paper chose its schedule on a 45k/5k split (Sec. 4.2)."""
    normalization: str = "pixel_mean"
    """pixel_mean: "the per-pixel mean subtracted" (Sec. 4.2, paper). channel: per-channel mean/std."""
    augment: bool = True
    """Paper: 4-pixel padding, random 32x32 crop, random horizontal flip (Sec. 4.2); False trains on raw images."""
    cache_dir: str | None = None

    # --- ImageNet input pipeline (Sec. 3.4); CIFAR runs leave these at their defaults ---
    preset: str = "paper"
    """paper: shorter side random in [256, 480], random crop, flip, AlexNet PCA colour augmentation, per-pixel
    mean (Sec. 3.4). torchvision: random-resized crop and flip, per-channel mean/std (an option)."""
    image_size: int = 224
    """Crop side; the resize sizes scale with it (64 -> shorter side in [73, 137], evaluation at 73)."""
    eval_crops: int | None = None
    """1 (centre crop) or 10 (the paper's 10-crop testing, Sec. 3.4); None: the preset's (paper 10, torchvision 1)."""
    workers: int | None = None
    """DataLoader worker processes per rank; None: the CPUs of this process, at most 8."""
    skip_corrupt: bool = False
    """Skip (and count) images that cannot be decoded instead of stopping with the file's name."""
    mean_images: int = 10_000
    """Training images averaged into the per-pixel mean of the paper preset (a fixed random subset)."""

    # --- optimisation (Sec. 3.4, 4.2) ---
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    iterations: int = 64_000
    milestones: tuple[int, ...] = (32_000, 48_000)
    lr_decay: float = 0.1
    epochs: int | None = None
    """Train for this many epochs (passes over the training images) instead of ``iterations``."""
    milestone_epochs: tuple[int, ...] = ()
    """Step milestones in epochs (e.g. 30,60,90 on ImageNet) instead of ``milestones`` in iterations."""
    lr_schedule: str = "step"
    """step: divide at ``milestones`` (Sec. 4.2). plateau: divide when the held-out error plateaus (Sec. 3.4)."""
    plateau_patience: int = 5
    """Evaluations without an improvement of ``plateau_threshold`` points before the rate is divided (the
    paper says only "when the error plateaus", Sec. 3.4)."""
    plateau_threshold: float = 0.1
    lr_reference_batch: int | None = None
    """When set, the rate is ``lr * batch_size / lr_reference_batch`` (linear scaling, Goyal et al. 2017; the
    paper trains at its reference batch only). The ImageNet recipe sets 256, so lr 0.1 means 0.1 at batch 256."""
    warmup: bool | None = None
    """Start at ``warmup_lr`` until the training error is below ``warmup_until_error`` %, then return to
    ``lr`` (Sec. 4.2, ResNet-110). None: the paper's choice, on for depth >= 110."""
    warmup_lr: float = 0.01
    warmup_until_error: float = 80.0
    warmup_window: int = 50
    """Iterations whose mean training error decides the end of warm-up (the paper gives no window)."""

    # --- run ---
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1000
    eval_batch_size: int = 1000
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 0.0
    """Also write a checkpoint once this many seconds of wall time have passed since the last one was written
    (or since the run started or resumed); 0: only every ``checkpoint_every`` iterations. Not from the paper:
    it only bounds what an interruption loses when evaluations (and their checkpoints) are far apart."""

    # --- execution speed (:mod:`resnet_core.engine.step`); none changes the computation except bf16 ---
    bf16: bool = False
    """bf16 autocast (CUDA, or CPUs with bf16 instructions); the paper trains in fp32 (off by default)."""
    channels_last: bool | None = None
    """NHWC memory format for the convolutions; None: on for CUDA and CPU (measured to pay), off for MPS."""
    compile: str = "none"
    """none (eager), or a torch.compile mode: default, reduce-overhead (adds CUDA graphs), max-autotune.
    Off by default: compiling costs tens of seconds per run, which short study trials do not win back."""
    fused_sgd: bool | None = None
    """One fused kernel for the SGD update; None: on for CUDA (where it pays), off elsewhere."""
    threads: int | None = None
    """Intra-op CPU threads; None: OMP_NUM_THREADS if set, else the CPUs this process may run on."""

    def __post_init__(self) -> None:
        _check_types(self)
        positive = ("batch_size", "iterations", "eval_every", "eval_batch_size", "checkpoint_every",
                    "warmup_window", "image_size", "mean_images", "plateau_patience")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (math.isfinite(self.checkpoint_seconds) and self.checkpoint_seconds >= 0):
            raise ConfigError(f"checkpoint_seconds must be a finite number of seconds >= 0, got "
                              f"{self.checkpoint_seconds}: use e.g. 600, or 0 for checkpoints every "
                              "checkpoint_every iterations only")
        for name in ("lr", "warmup_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)} (the paper uses 0.1 / 0.01)")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay} (the paper uses 1e-4)")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum} (the paper uses 0.9)")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], got {self.lr_decay} (the paper divides by 10: 0.1)")
        if not 0 < self.warmup_until_error <= 100:
            raise ConfigError(f"warmup_until_error is a percentage in (0, 100], got {self.warmup_until_error}")
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(
                f"milestones must be increasing positive iterations, got {list(self.milestones)} "
                "(the paper uses 32000,48000)"
            )
        if self.val_split < 0:
            raise ConfigError(f"val_split must be >= 0 images, got {self.val_split}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"unknown normalization {self.normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        if self.device.split(":")[0] not in DEVICE_KINDS:
            raise ConfigError(f"unknown device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        check_options(compile=self.compile, threads=self.threads)
        if self.shortcut is not None and self.shortcut.upper() not in ("A", "B", "C"):
            raise ConfigError(f"unknown shortcut option {self.shortcut!r}: use A, B or C (paper Table 3)")
        self._check_imagenet_and_schedule()

    def _check_imagenet_and_schedule(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}: use one of {', '.join(DATASETS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}: use step (Sec. 4.2) or plateau (Sec. 3.4)")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}: use one of {', '.join(PRESETS)}")
        if self.eval_crops is not None and self.eval_crops not in EVAL_CROPS:
            raise ConfigError(f"eval_crops must be 1 (centre crop) or 10 (the paper's 10-crop), got {self.eval_crops}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0 DataLoader processes, got {self.workers}")
        if self.plateau_threshold < 0:
            raise ConfigError(f"plateau_threshold must be >= 0 error points, got {self.plateau_threshold}")
        if self.lr_reference_batch is not None and self.lr_reference_batch <= 0:
            raise ConfigError(f"lr_reference_batch must be a positive batch size, got {self.lr_reference_batch}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs}")
        epochs = self.milestone_epochs
        if any(m <= 0 for m in epochs) or list(epochs) != sorted(set(epochs)):
            raise ConfigError(f"milestone_epochs must be increasing positive epochs, got {list(epochs)} (e.g. 30,60)")
        if epochs and self.milestones:
            raise ConfigError("milestones and milestone_epochs both given: set one (milestones=() to use epochs)")
        if self.dataset != "imagenet":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            changed = [name for name in IMAGENET_ONLY if getattr(self, name) != defaults[name]]
            if changed:
                raise ConfigError(f"{changed[0]} applies to the ImageNet pipeline only: add dataset=imagenet "
                                  f"(--dataset imagenet) or drop it")

    @property
    def is_imagenet(self) -> bool:
        """Whether this run uses the ImageNet pipeline (files, DataLoader workers) rather than CIFAR's."""
        return self.dataset == "imagenet"

    @property
    def crops(self) -> int:
        """Crops per evaluated image: ``eval_crops``, else the preset's (10-crop for the paper, Sec. 3.4)."""
        if self.eval_crops is not None:
            return self.eval_crops
        return 10 if self.preset == "paper" and self.is_imagenet else 1

    @property
    def scaled_lr(self) -> float:
        """The base rate in use: ``lr``, scaled linearly by ``batch_size / lr_reference_batch`` when that is set."""
        if self.lr_reference_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.lr_reference_batch

    def with_epochs_resolved(self, iterations_per_epoch: int) -> TrainConfig:
        """A copy whose ``iterations`` / ``milestones`` come from ``epochs`` / ``milestone_epochs``, if set."""
        changes: dict[str, Any] = {}
        if self.epochs is not None:
            changes["iterations"] = self.epochs * iterations_per_epoch
        if self.milestone_epochs:
            changes["milestones"] = tuple(epoch * iterations_per_epoch for epoch in self.milestone_epochs)
            changes["milestone_epochs"] = ()
        return dataclasses.replace(self, **changes) if changes else self

    # ------------------------------------------------------------------ conversion
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from untyped input (JSON, YAML, CLI) over the recipe of ``values["dataset"]``; unknown keys
        fail with the list of valid ones."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown config key {', '.join(unknown)}: valid keys are {', '.join(cls.field_names())}"
            )
        merged = {**recipe(values.get("dataset", cls.dataset)), **values}
        if "milestone_epochs" in values and "milestones" not in values:
            merged["milestones"] = ()  # epochs replace the recipe's iteration milestones
        return cls(**{key: _coerce(cls, key, value) for key, value in merged.items()})

    @classmethod
    def for_dataset(cls, dataset: str, **changes: Any) -> TrainConfig:
        """The paper's recipe for ``dataset`` (CIFAR: Sec. 4.2, ImageNet: Sec. 3.4) with ``changes`` applied."""
        return cls.from_dict({"dataset": dataset, **changes})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        values["milestone_epochs"] = list(self.milestone_epochs)
        return values

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated (unknown keys rejected)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def load_json(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(path.read_text()))

    def changes_from(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: name -> (other's value, this value)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (theirs[key], mine[key]) for key in mine if mine[key] != theirs[key]}


def recipe(dataset: Any) -> dict[str, Any]:
    """The fields in which ``dataset``'s paper recipe differs from the class defaults (the CIFAR recipe)."""
    return dict(IMAGENET_RECIPE) if dataset == "imagenet" else {}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert JSON/CLI-shaped values (lists, ints for floats) to the field's type; reject the rest."""
    expected = _field_type(cls, name)
    if expected == tuple[int, ...]:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list of integers, got {value!r}")
        try:
            return tuple(_strict_int(name, item) for item in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _strict_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(name)
    if isinstance(value, str):
        return int(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(name)
    return int(value)


def _check_types(config: TrainConfig) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        expected = _field_type(type(config), f.name)
        if not _matches(value, expected):
            raise ConfigError(f"{f.name} must be of type {_type_name(expected)}, got {value!r}")


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, int) for v in value)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, float)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", str(expected)).replace("typing.", "")


__all__ = ["DATASETS", "IMAGENET_RECIPE", "NORMALIZATIONS", "PRESETS", "RESUMABLE_CHANGES", "TrainConfig", "recipe"]
