"""The training configuration: one frozen, typed, validated value saved with every run.

Defaults are the paper's CIFAR-10 recipe (He et al. 2015, Sec. 4.2): "We use a weight decay of 0.0001 and
momentum of 0.9 ... mini-batch size of 128 ... We start with a learning rate of 0.1, divide it by 10 at
32k and 48k iterations, and terminate training at 64k iterations". The ImageNet recipe (Sec. 3.4) is
:data:`IMAGENET_RECIPE`: "SGD with a mini-batch size of 256. The learning rate starts from 0.1 and is
divided by 10 when the error plateaus, and the models are trained for up to 60 x 10^4 iterations. We use a
weight decay of 0.0001 and a momentum of 0.9. We do not use dropout". :meth:`TrainConfig.from_dict` and
:meth:`TrainConfig.for_dataset` start from the recipe of the ``dataset`` they are given. Every departure
from the paper is a named field whose default is the paper's behaviour.

:class:`TrainConfig` is a pydantic dataclass: each field's type and constraints (``Annotated[..., Field(...)]``)
are checked by pydantic, in strict mode (no bool for an int, no string for a number) except for the conversions
untyped input needs: an int for a float, and a list or a ``"32000,48000"`` string for a list of integers. Every
mistake is a :class:`~resnet_core.errors.ConfigError` with one line naming the field, what was given and what is
accepted. Each field's attribute docstring is its description; :func:`field_specs` and
:func:`train_config_schema` publish the fields (for the command line, :mod:`resnet_core.engine.cli`, and for
the study's search spaces).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from resnet_core.errors import ConfigError
from resnet_core.options import (
    DATASETS,
    PRESETS,
    CompileMode,
    Dataset,
    EvalCrops,
    Preset,
    ShortcutOption,
    StrideIn,
)

Normalization = Literal["pixel_mean", "channel"]
LrSchedule = Literal["step", "plateau"]

NORMALIZATIONS: tuple[str, ...] = typing.get_args(Normalization)
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES: tuple[str, ...] = typing.get_args(LrSchedule)

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

SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("arch", "depth", "shortcut", "stride_in"),
    "data": ("data", "dataset", "download", "val_split", "normalization", "augment", "cache_dir"),
    "imagenet": IMAGENET_ONLY,
    "optimisation": ("batch_size", "lr", "momentum", "weight_decay", "iterations", "milestones", "lr_decay",
                     "epochs", "milestone_epochs", "lr_schedule", "plateau_patience", "plateau_threshold",
                     "lr_reference_batch", "warmup", "warmup_lr", "warmup_until_error", "warmup_window"),
    "run": ("seed", "device", "eval_every", "eval_batch_size", "checkpoint_every", "checkpoint_seconds"),
    "speed": ("bf16", "channels_last", "compile", "fused_sgd", "threads"),
}
"""Each field's section, in the order the fields are declared (the command line's argument groups)."""


@dataclasses.dataclass(frozen=True)
class Accepts:
    """Annotation metadata: what a field's one-line error says it accepts, where its constraints alone would say
    it less clearly (e.g. "a finite number of seconds >= 0" rather than ">= 0")."""

    text: str


def _int_list(value: Any) -> Any:
    """Untyped input for a list of integers: ``"32000,48000"`` (or space-separated) becomes ``(32000, 48000)``,
    a list a tuple; the items are then checked (strictly) by pydantic."""
    if isinstance(value, str):
        parts = [part for part in value.replace(",", " ").split() if part]
        return tuple(int(part) if part.lstrip("+-").isdigit() else part for part in parts)
    return tuple(value) if isinstance(value, list) else value


def _upper(value: Any) -> Any:
    """Choices given in any case (``shortcut="b"``) in the case the field stores."""
    return value.upper() if isinstance(value, str) else value


IntList = Annotated[tuple[int, ...], BeforeValidator(_int_list)]
PositiveInt = Annotated[int, Field(gt=0)]

_T = TypeVar("_T")


def _one_line_errors(cls: type[_T]) -> type[_T]:
    """Wrap the pydantic dataclass's ``__init__`` so that a :class:`pydantic.ValidationError` becomes a one-line
    :class:`ConfigError` (direct construction, :func:`dataclasses.replace` and :meth:`TrainConfig.from_dict`
    alike)."""
    validate: Callable[..., None] = cls.__init__  # type: ignore[misc]

    @functools.wraps(validate)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as error:
            raise _config_error(error, kwargs) from None

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


@_one_line_errors
@pydantic_dataclass(frozen=True, config=ConfigDict(use_attribute_docstrings=True, strict=True, extra="forbid",
                                                   allow_inf_nan=False))
class TrainConfig:
    """Everything that decides one training run.

    Constructed directly, the defaults are the CIFAR recipe (Sec. 4.2); :meth:`for_dataset` and
    :meth:`from_dict` (untyped input: JSON, YAML, CLI) start from the recipe of the given ``dataset``.
    """

    # --- model (Sec. 4.2) ---
    arch: str = "resnet20"
    """Registered model name: resnet20 ... resnet1202, plain20 ..., or the 6n+2 families cifar_resnet / cifar_plain
    (CIFAR, Sec. 4.2); resnet18 ... resnet152, plain18, plain34 (ImageNet, Table 1)."""
    depth: int | None = None
    """Depth for the 6n+2 families (``cifar_resnet``, ``cifar_plain``); named models fix their own depth."""
    shortcut: Annotated[ShortcutOption | None, Field(title="shortcut option"), BeforeValidator(_upper)] = None
    """Shortcut option A, B or C (Table 3; any case); None keeps the model's default (A on CIFAR, Sec. 4.2)."""
    stride_in: StrideIn | None = None
    """Where a downsampling bottleneck strides: "1x1" (the paper's first 1x1 convolution) or "3x3"
    (torchvision's "v1.5"); None keeps the model's default (ImageNet bottleneck nets only)."""

    # --- data (Sec. 4.2; ImageNet Sec. 3.4) ---
    data: str = "data"
    """Path to the data: an official CIFAR archive (python or binary version, a folder or its .tar.gz), a
    class-folder tree ``train/<class>/*``, ``test/<class>/*``, or a .tar.gz of one; for ``imagenet`` a folder (or
    .tar.gz) holding ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``."""
    dataset: Dataset = "cifar10"
    """cifar10 / cifar100: the CIFAR pipeline (data held on the device; which official set to look for or
    download when ``data`` holds none). imagenet: the ImageNet pipeline (files decoded by DataLoader workers)."""
    download: bool = True
    """Download the official CIFAR archive into ``data`` when it holds none; False: fail with the path instead
    (ImageNet is never downloaded)."""
    val_split: Annotated[int, Field(ge=0)] = 0
    """Training images held out for validation; the paper chose its schedule on a 45k/5k split (Sec. 4.2)."""
    normalization: Normalization = "pixel_mean"
    """pixel_mean: "the per-pixel mean subtracted" (Sec. 4.2, paper). channel: per-channel mean/std."""
    augment: bool = True
    """Paper: 4-pixel padding, random 32x32 crop, random horizontal flip (Sec. 4.2); False trains on raw images."""
    cache_dir: str | None = None
    """Where decoded image folders are cached; None: $RESNET_CORE_CACHE, else ~/.cache/resnet_core."""

    # --- ImageNet input pipeline (Sec. 3.4); CIFAR runs leave these at their defaults ---
    preset: Preset = "paper"
    """paper: shorter side random in [256, 480], random crop, flip, AlexNet PCA colour augmentation, per-pixel
    mean (Sec. 3.4). torchvision: random-resized crop and flip, per-channel mean/std (an option)."""
    image_size: PositiveInt = 224
    """Crop side (the paper's 224, Sec. 3.4); the resize sizes scale with it (64 -> shorter side in [73, 137],
    evaluation at 73)."""
    eval_crops: EvalCrops | None = None
    """1 (centre crop) or 10 (the paper's 10-crop testing, Sec. 3.4); None: the preset's (paper 10, torchvision 1)."""
    workers: Annotated[int | None, Field(ge=0)] = None
    """DataLoader worker processes per rank; None: the CPUs of this process, at most 8."""
    skip_corrupt: bool = False
    """Skip (and count) images that cannot be decoded instead of stopping with the file's name."""
    mean_images: PositiveInt = 10_000
    """Training images averaged into the per-pixel mean of the paper preset (a fixed random subset)."""

    # --- optimisation (CIFAR Sec. 4.2, ImageNet Sec. 3.4) ---
    batch_size: PositiveInt = 128
    """Images per SGD mini-batch, over all ranks: 128 on CIFAR (Sec. 4.2), 256 on ImageNet (Sec. 3.4)."""
    lr: Annotated[float, Field(gt=0)] = 0.1
    """Initial learning rate: 0.1 (CIFAR Sec. 4.2, ImageNet Sec. 3.4); see ``lr_reference_batch`` for scaling it
    with the batch."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """SGD momentum: 0.9 (CIFAR Sec. 4.2, ImageNet Sec. 3.4)."""
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    """L2 weight decay: 0.0001 (CIFAR Sec. 4.2, ImageNet Sec. 3.4)."""
    iterations: PositiveInt = 64_000
    """Training iterations (mini-batches): 64k on CIFAR (Sec. 4.2), up to 600k on ImageNet (Sec. 3.4)."""
    milestones: IntList = (32_000, 48_000)
    """Iterations at which the step schedule divides the rate: 32k and 48k on CIFAR (Sec. 4.2); a comma list."""
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Factor applied to the rate at each milestone or plateau: the paper divides by 10 (CIFAR Sec. 4.2, ImageNet
    Sec. 3.4)."""
    epochs: PositiveInt | None = None
    """Train for this many epochs (passes over the training images) instead of ``iterations``."""
    milestone_epochs: IntList = ()
    """Step milestones in epochs (e.g. 30,60,90 on ImageNet) instead of ``milestones`` in iterations."""
    lr_schedule: LrSchedule = "step"
    """step: divide at ``milestones`` (Sec. 4.2). plateau: divide when the held-out error plateaus (Sec. 3.4)."""
    plateau_patience: PositiveInt = 5
    """Evaluations without an improvement of ``plateau_threshold`` points before the rate is divided (the
    paper says only "when the error plateaus", Sec. 3.4)."""
    plateau_threshold: Annotated[float, Field(ge=0)] = 0.1
    """Error points (percent) by which an evaluation must beat the best so far to count as an improvement for
    the plateau schedule (not from the paper)."""
    lr_reference_batch: PositiveInt | None = None
    """When set, the rate is ``lr * batch_size / lr_reference_batch`` (linear scaling, Goyal et al. 2017; the
    paper trains at its reference batch only). The ImageNet recipe sets 256, so lr 0.1 means 0.1 at batch 256."""
    warmup: bool | None = None
    """Start at ``warmup_lr`` until the training error is below ``warmup_until_error`` percent, then return to
    ``lr`` (Sec. 4.2, ResNet-110). None: the paper's choice, on for depth >= 110."""
    warmup_lr: Annotated[float, Field(gt=0)] = 0.01
    """The warm-up rate: 0.01 (Sec. 4.2, ResNet-110)."""
    warmup_until_error: Annotated[float, Field(gt=0, le=100)] = 80.0
    """Training error (percent) below which warm-up ends: the paper's "about 80%" (Sec. 4.2)."""
    warmup_window: PositiveInt = 50
    """Iterations whose mean training error decides the end of warm-up (the paper gives no window)."""

    # --- run ---
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of the weight initialisation, the data order and the augmentation (not from the paper)."""
    device: Annotated[str, Field(title="device", pattern=r"^(auto|(cpu|cuda|mps)(:\d+)?)$"),
                      Accepts("auto, cpu, cuda, cuda:N or mps")] = "auto"
    """auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps."""
    eval_every: PositiveInt = 1000
    """Iterations between evaluations on the test (and validation) split; each adds a row to metrics.csv."""
    eval_batch_size: PositiveInt = 1000
    """Images per forward pass when evaluating (no effect on the result)."""
    checkpoint_every: PositiveInt = 1000
    """Iterations between checkpoints (a full, atomic copy of the run's state)."""
    checkpoint_seconds: Annotated[float, Field(ge=0), Accepts("a finite number of seconds >= 0")] = 0.0
    """Also write a checkpoint once this many seconds of wall time have passed since the last one was written
    (or since the run started or resumed); 0: only every ``checkpoint_every`` iterations. Not from the paper:
    it only bounds what an interruption loses when evaluations (and their checkpoints) are far apart."""

    # --- execution speed (:mod:`resnet_core.engine.step`); none changes the computation except bf16 ---
    bf16: bool = False
    """bf16 autocast (CUDA, or CPUs with bf16 instructions); the paper trains in fp32 (off by default)."""
    channels_last: bool | None = None
    """NHWC memory format for the convolutions; None: on for CUDA and CPU (measured to pay), off for MPS."""
    compile: Annotated[CompileMode, Field(title="compile mode")] = "none"
    """none (eager), or a torch.compile mode: default, reduce-overhead (adds CUDA graphs), max-autotune.
    Off by default: compiling costs tens of seconds per run, which short study trials do not win back."""
    fused_sgd: bool | None = None
    """One fused kernel for the SGD update; None: on for CUDA (where it pays), off elsewhere."""
    threads: Annotated[int | None, Field(gt=0), Accepts("a positive number of CPU threads")] = None
    """Intra-op CPU threads; None: OMP_NUM_THREADS if set, else the CPUs this process may run on."""

    @field_validator("milestones", "milestone_epochs")
    @classmethod
    def _increasing(cls, value: tuple[int, ...], info: Any) -> tuple[int, ...]:
        if any(m <= 0 for m in value) or list(value) != sorted(set(value)):
            unit, example = ("iterations", "the paper uses 32000,48000") if info.field_name == "milestones" else (
                "epochs", "e.g. 30,60")
            raise ConfigError(f"{info.field_name} must be increasing positive {unit}, got {list(value)} ({example})")
        return value

    def __post_init__(self) -> None:
        """The rules that involve more than one field (each field's own are its annotation's)."""
        if self.milestone_epochs and self.milestones:
            raise ConfigError("milestones and milestone_epochs both given: set one (milestones=() to use epochs)")
        if self.dataset != "imagenet":
            changed = [name for name in IMAGENET_ONLY if getattr(self, name) != _DEFAULTS[name]]
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
        """The fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from untyped input (JSON, YAML, CLI) over the recipe of ``values["dataset"]``; an unknown key
        fails with the closest valid one (or the list of valid ones)."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(_unknown_keys(unknown))
        merged = {**recipe(values.get("dataset", _DEFAULTS["dataset"])), **values}
        if "milestone_epochs" in values and "milestones" not in values:
            merged["milestones"] = ()  # epochs replace the recipe's iteration milestones
        return cls(**merged)

    @classmethod
    def for_dataset(cls, dataset: str, **changes: Any) -> TrainConfig:
        """The paper's recipe for ``dataset`` (CIFAR: Sec. 4.2, ImageNet: Sec. 3.4) with ``changes`` applied."""
        return cls.from_dict({"dataset": dataset, **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for the integer lists), as saved in a run's config.json."""
        values = dataclasses.asdict(self)  # type: ignore[call-overload]
        values["milestones"] = list(self.milestones)
        values["milestone_epochs"] = list(self.milestone_epochs)
        return values

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated (unknown keys rejected)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def load_json(cls, path: Path) -> TrainConfig:
        """The configuration saved (by :meth:`to_dict`) in the JSON file ``path``."""
        return cls.from_dict(json.loads(path.read_text()))

    def changes_from(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: name -> (other's value, this value)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (theirs[key], mine[key]) for key in mine if mine[key] != theirs[key]}


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # type: ignore[arg-type]
if [name for names in SECTIONS.values() for name in names] != list(_DEFAULTS):
    raise TypeError("SECTIONS must list every TrainConfig field once, in declaration order")


def recipe(dataset: Any) -> dict[str, Any]:
    """The fields in which ``dataset``'s paper recipe differs from the class defaults (the CIFAR recipe)."""
    return dict(IMAGENET_RECIPE) if dataset == "imagenet" else {}


# ---------------------------------------------------------------------- the fields, for other code
@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One :class:`TrainConfig` field, described for code that generates options or checks search spaces."""

    name: str
    kind: str
    """int, float, bool, str, choice (a Literal: see ``choices``) or int_list (a tuple of integers)."""
    default: Any
    """The class default (the CIFAR recipe, Sec. 4.2) as a JSON value: a list for int_list."""
    optional: bool
    """Whether None is accepted (it then means "automatic" or "the model's default": see ``help``)."""
    choices: tuple[Any, ...] | None
    """The accepted values of a choice (without None), (True, False) for a bool, else None."""
    help: str
    """The field's docstring on one line."""
    section: str
    """The group it belongs to: a key of :data:`SECTIONS` (model, data, imagenet, optimisation, run, speed)."""


def field_specs() -> dict[str, FieldSpec]:
    """Every :class:`TrainConfig` field by name, in declaration order."""
    return dict(_field_specs())


@functools.cache
def _field_specs() -> dict[str, FieldSpec]:
    sections = {name: section for section, names in SECTIONS.items() for name in names}
    specs: dict[str, FieldSpec] = {}
    for name, info in TrainConfig.__pydantic_fields__.items():  # type: ignore[attr-defined]
        kind, optional, choices = _kind(info.annotation)
        default = list(info.default) if isinstance(info.default, tuple) else info.default
        specs[name] = FieldSpec(name, kind, default, optional, choices, " ".join((info.description or "").split()),
                                sections[name])
    return specs


def _kind(annotation: Any) -> tuple[str, bool, tuple[Any, ...] | None]:
    """(kind, optional, choices) of a field's type."""
    arms = [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arms = list(typing.get_args(annotation))
    optional = type(None) in arms
    (inner,) = [arm for arm in arms if arm is not type(None)]
    while typing.get_origin(inner) is Annotated:
        inner = typing.get_args(inner)[0]
    if typing.get_origin(inner) is Literal:
        return "choice", optional, typing.get_args(inner)
    if typing.get_origin(inner) is tuple:
        return "int_list", optional, None
    if inner is bool:
        return "bool", optional, (True, False)
    return inner.__name__, optional, None


def train_config_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`TrainConfig` (pydantic's), each property described by the field's docstring
    (on one line, as in :attr:`FieldSpec.help`)."""
    schema = TypeAdapter(TrainConfig).json_schema()
    for name, spec in _field_specs().items():
        schema["properties"][name]["description"] = spec.help
    return schema


def default_note(name: str) -> str:
    """The default of field ``name`` as the command line and the error messages show it, with the ImageNet
    recipe's value where it differs: ``default: 128; ImageNet recipe: 256``."""
    note = f"default: {format_value(_DEFAULTS[name])}"
    if name in IMAGENET_RECIPE:
        note += f"; ImageNet recipe: {format_value(IMAGENET_RECIPE[name])}"
    return note


def format_value(value: Any) -> str:
    """A field value as typed on the command line: lists comma-separated (an empty list: ``""``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) if value else '""'
    return str(value)


# ---------------------------------------------------------------------- one-line errors
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _unknown_keys(unknown: Sequence[str]) -> str:
    names = TrainConfig.field_names()
    close = difflib.get_close_matches(unknown[0], names, n=1)
    if close:
        return f"unknown config key {unknown[0]}: did you mean {close[0]}?"
    return f"unknown config key {', '.join(unknown)}: valid keys are {', '.join(names)}"


def _config_error(error: ValidationError, given: Mapping[str, Any]) -> ConfigError:
    """The first of pydantic's errors as one line: the field, what was given, what it accepts and its default.
    A :class:`ConfigError` raised by a validator or ``__post_init__`` is passed on as it is."""
    first = error.errors(include_url=False)[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return ConfigError(str(cause))
    location = first.get("loc") or ()
    name = str(location[0]) if location else ""
    if first["type"] == "unexpected_keyword_argument":
        return ConfigError(_unknown_keys([name]))
    specs = _field_specs()
    if name not in specs:
        return ConfigError(f"invalid configuration{f' ({name})' if name else ''}: {first['msg']}")
    spec, value = specs[name], given.get(name, first["input"])
    info = TrainConfig.__pydantic_fields__[name]  # type: ignore[attr-defined]
    noun = info.title or name
    metadata = _metadata(info.metadata, info.annotation)
    accepts = next((item.text for item in metadata if isinstance(item, Accepts)), None)
    if first["type"] == "literal_error" and spec.choices is not None:
        if all(isinstance(choice, str) for choice in spec.choices):
            problem = f"unknown {noun} {value!r}: use one of {', '.join(spec.choices)}"
        else:
            problem = f"{name} must be {' or '.join(str(choice) for choice in spec.choices)}, got {value!r}"
    elif first["type"] == "string_pattern_mismatch":
        problem = f"unknown {noun} {value!r}: use {accepts or first['msg']}"
    elif first["type"] in _RANGE_ERRORS:
        finite = "a finite number " if first["type"] == "finite_number" and accepts is None else ""
        problem = f"{name} must be {finite}{accepts or _range(spec.kind, metadata)}, got {value!r}"
    else:
        expected = "a list of integers" if spec.kind == "int_list" else f"of type {spec.kind}"
        problem = f"{name} must be {expected}{' or None' if spec.optional else ''}, got {value!r}"
    return ConfigError(f"{problem} ({default_note(name)})")


def _metadata(metadata: Sequence[Any], annotation: Any) -> list[Any]:
    """A field's annotation metadata, also that within a union's arms (``PositiveInt | None``) and within the
    ``Field(...)`` objects among them."""
    found: list[Any] = []
    pending = list(metadata)
    arms = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    for arm in arms:
        if typing.get_origin(arm) is Annotated:
            pending += list(typing.get_args(arm)[1:])
    while pending:
        item = pending.pop(0)
        found.append(item)
        pending += list(getattr(item, "metadata", None) or [])
    return found


def _range(kind: str, metadata: Sequence[Any]) -> str:
    """The bounds of a field's constraints in words: "> 0", "in [0, 1)", "a positive integer"."""
    bounds = {attr: getattr(item, attr) for item in metadata for attr in ("gt", "ge", "lt", "le")
              if getattr(item, attr, None) is not None}
    if kind == "int" and bounds == {"gt": 0}:
        return "a positive integer"
    low = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds['ge']}" if "ge" in bounds else None
    high = f"{bounds['lt']})" if "lt" in bounds else f"{bounds['le']}]" if "le" in bounds else None
    if low and high:
        return f"in {low}, {high}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{symbols[attr]} {bound}" for attr, bound in bounds.items()) or "a finite number"


__all__ = ["DATASETS", "IMAGENET_RECIPE", "LR_SCHEDULES", "NORMALIZATIONS", "PRESETS", "RESUMABLE_CHANGES",
           "SECTIONS", "FieldSpec", "TrainConfig", "default_note", "field_specs", "format_value", "recipe",
           "train_config_schema"]
