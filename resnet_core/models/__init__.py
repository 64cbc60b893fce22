"""Models of He et al. 2015: blocks, the CIFAR (Sec. 4.2) and ImageNet (Sec. 3.4) networks, a name -> builder
registry, and their complexity (parameters, multiply-adds)."""

from __future__ import annotations

from typing import Any

from torch import nn

from resnet_core.models import cifar_zoo, imagenet_zoo  # noqa: F401  (register the CIFAR and ImageNet models)
from resnet_core.models.blocks import BasicBlock, Bottleneck, Shortcut, StrideIn, ZeroPadShortcut
from resnet_core.models.cifar import CifarResNet
from resnet_core.models.complexity import count_parameters, describe, multiply_adds
from resnet_core.models.imagenet import ImageNetResNet, imagenet_resnet
from resnet_core.models.registry import MODELS, ModelInfo


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` set its options (``None`` = model default).

    >>> create_model("resnet56", shortcut="B", num_classes=100)  # doctest: +SKIP
    >>> create_model("resnet50", stride_in="3x3")  # doctest: +SKIP
    """
    return MODELS.create(name, **overrides)


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family: ``"cifar"`` (Sec. 4.2: resnet20 ... resnet1202, their
    plain twins, the 6n+2 families) or ``"imagenet"`` (Table 1: resnet18 ... resnet152, plain18, plain34 and
    the torchvision-placement resnet50_v1_5 ... resnet152_v1_5)."""
    return MODELS.names(family)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``: family, options, the paper's depth, parameters, multiply-adds and error."""
    return MODELS.info(name)


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ImageNetResNet",
    "ModelInfo",
    "Shortcut",
    "StrideIn",
    "ZeroPadShortcut",
    "count_parameters",
    "create_model",
    "describe",
    "imagenet_resnet",
    "list_models",
    "model_info",
    "multiply_adds",
]
