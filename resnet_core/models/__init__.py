"""Models of He et al. 2015: blocks, the CIFAR networks (Sec. 4.2) and a name -> builder registry."""

from __future__ import annotations

from typing import Any

from torch import nn

from resnet_core.models import cifar_zoo  # noqa: F401  (registers the CIFAR models)
from resnet_core.models.blocks import BasicBlock, Shortcut, ZeroPadShortcut
from resnet_core.models.cifar import CifarResNet
from resnet_core.models.registry import MODELS, ModelInfo


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` set its options (``None`` = model default).

    >>> create_model("resnet56", shortcut="B", num_classes=100)  # doctest: +SKIP
    """
    return MODELS.create(name, **overrides)


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family (``"cifar"``)."""
    return MODELS.names(family)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``: family, options, the paper's depth, parameters and error."""
    return MODELS.info(name)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters, the figure of paper Table 6."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ModelInfo",
    "Shortcut",
    "ZeroPadShortcut",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
]
