"""The training configuration: one frozen, typed, validated value saved with every run.

Defaults are the paper's CIFAR-10 recipe (He et al. 2015, Sec. 4.2): "We use a weight decay of 0.0001 and
momentum of 0.9 ... mini-batch size of 128 ... We start with a learning rate of 0.1, divide it by 10 at
32k and 48k iterations, and terminate training at 64k iterations". Every departure from the paper is a
named field whose default is the paper's behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_core.errors import ConfigError

NORMALIZATIONS = ("pixel_mean", "channel")
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")

# Fields a resumed run may change; every other field must match the checkpoint's configuration.
RESUMABLE_CHANGES = frozenset(
    {"iterations", "device", "eval_every", "checkpoint_every", "eval_batch_size", "data", "download", "cache_dir"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run. Construct it, or use :meth:`from_dict` for untyped input."""

    # --- model (Sec. 4.2) ---
    arch: str = "resnet20"
    depth: int | None = None
    """Depth for the 6n+2 families (``cifar_resnet``, ``cifar_plain``); named models fix their own depth."""
    shortcut: str | None = None
    """Shortcut option A, B or C (Table 3); None keeps the model's default (A on CIFAR, Sec. 4.2)."""

    # --- data (Sec. 4.2) ---
    data: str = "data"
    """Path to the data: an official CIFAR archive, a class-folder tree, or a .tar.gz of one."""
    dataset: str = "cifar10"
    """Which official set to look for or download when ``data`` holds none: cifar10 or cifar100."""
    download: bool = True
    val_split: int = 0
    """Training images held out for validation; the paper chose its schedule on a 45k/5k split (Sec. 4.2)."""
    normalization: str = "pixel_mean"
    """pixel_mean: "the per-pixel mean subtracted" (Sec. 4.2, paper). channel: per-channel mean/std."""
    augment: bool = True
    """Paper: 4-pixel padding, random 32x32 crop, random horizontal flip (Sec. 4.2); False trains on raw images."""
    cache_dir: str | None = None

    # --- optimisation (Sec. 3.4, 4.2) ---
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    iterations: int = 64_000
    milestones: tuple[int, ...] = (32_000, 48_000)
    lr_decay: float = 0.1
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
    bf16: bool = False
    """bf16 autocast on CUDA; the paper trains in fp32 (off by default)."""

    def __post_init__(self) -> None:
        _check_types(self)
        positive = ("batch_size", "iterations", "eval_every", "eval_batch_size", "checkpoint_every",
                    "warmup_window")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
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
        if self.shortcut is not None and self.shortcut.upper() not in ("A", "B", "C"):
            raise ConfigError(f"unknown shortcut option {self.shortcut!r}: use A, B or C (paper Table 3)")

    # ------------------------------------------------------------------ conversion
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from untyped input (JSON, YAML, CLI); unknown keys fail with the list of valid ones."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown config key {', '.join(unknown)}: valid keys are {', '.join(cls.field_names())}"
            )
        return cls(**{key: _coerce(cls, key, value) for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated (unknown keys rejected)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def save_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(path.read_text()))

    def changes_from(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: name -> (other's value, this value)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (theirs[key], mine[key]) for key in mine if mine[key] != theirs[key]}


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


__all__ = ["NORMALIZATIONS", "RESUMABLE_CHANGES", "TrainConfig"]
