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
    builder arguments the name itself pins down (e.g. the depth of ``resnet56``).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    options: Mapping[str, Any]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    paper_error: float | None = None
    paper_params: str | None = None
    reference: str = ""

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
            raise ConfigError(
                f"{name} fixes {', '.join(pinned)}={info.fixed[pinned[0]]!r}; "
                f"choose another architecture (e.g. the cifar_resnet family takes depth=...)"
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
