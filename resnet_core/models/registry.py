"""A registry that maps model names to builders, as timm and torchvision do.

Strings choose a model only here, at the edge: ``create_model("resnet56", shortcut="B")``. Each entry
keeps the paper's numbers as data (depth, published parameter count and error) next to its builder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from resnet_core.errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model name.

    ``options`` are the keyword arguments a caller may override (with their defaults); ``fixed`` are the
    builder arguments the name itself pins down (e.g. the depth of ``resnet56``). The paper's figures:
    ``paper_error`` is the CIFAR-10 test error (Table 6) for the ``cifar`` family and the ImageNet top-1
    validation error, 10-crop (Tables 2-3), for the ``imagenet`` family, whose ``paper_top5_error`` is the
    top-5 error where Table 3 gives it; ``paper_params`` is the count as printed (Table 6); ``paper_flops``
    is the multiply-adds in units of 10^9 (Table 1). ``input_size`` is the natural image side (32 for
    CIFAR, 224 for ImageNet crops).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    options: Mapping[str, Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    paper_error: float | None = None
    paper_params: str | None = None
    reference: str = ""
    paper_top5_error: float | None = None
    paper_flops: float | None = None
    input_size: int = 32

    @property
    def depth(self) -> int | None:
        return self.fixed.get("depth", self.options.get("depth"))

    @property
    def residual(self) -> bool:
        return bool(self.fixed.get("residual", self.options.get("residual", True)))


class ModelRegistry:
    """Name -> :class:`ModelInfo`. One instance, :data:`MODELS`, is filled when the model modules load."""

    def __init__(self) -> None:
        self._entries: dict[str, ModelInfo] = {}

    def register(self, info: ModelInfo) -> None:
        if info.name in self._entries:
            raise ValueError(f"model {info.name!r} is registered twice")
        self._entries[info.name] = info

    def names(self, family: str | None = None) -> list[str]:
        return [name for name, info in self._entries.items() if family is None or info.family == family]

    def info(self, name: str) -> ModelInfo:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown architecture {name!r}: use one of {', '.join(self._entries)}"
            ) from None

    def create(self, name: str, **overrides: Any) -> nn.Module:
        info = self.info(name)
        unset = {key: value for key, value in overrides.items() if value is not None}
        pinned = sorted(set(unset) & set(info.fixed))
        if pinned:
            hint = " (e.g. the cifar_resnet family takes depth=...)" if info.family == "cifar" else ""
            raise ConfigError(
                f"{name} fixes {', '.join(pinned)}={info.fixed[pinned[0]]!r}; choose another architecture{hint}"
            )
        unknown = sorted(set(unset) - set(info.options))
        if unknown:
            raise ConfigError(
                f"{name} has no option {', '.join(unknown)}: valid options are {', '.join(info.options)}"
            )
        return info.builder(**{**info.options, **unset, **info.fixed})


MODELS = ModelRegistry()


def register(info: ModelInfo) -> ModelInfo:
    """Add ``info`` to :data:`MODELS` and return it."""
    MODELS.register(info)
    return info


def freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view, so registered defaults cannot be changed by accident."""
    return MappingProxyType(dict(mapping))
