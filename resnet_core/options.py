"""Names of the choices a run offers that more than one layer needs, kept free of heavy imports (no torch, no
torchvision), so that the configuration can name and check them without loading what executes them."""

from __future__ import annotations

from typing import Literal, get_args

from resnet_core.errors import ConfigError

Dataset = Literal["cifar10", "cifar100", "imagenet"]
DATASETS: tuple[str, ...] = get_args(Dataset)
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
"""Every dataset a run may name, with the title figures and messages give it (Sec. 4.2: CIFAR-10; Sec. 3.4:
ImageNet 2012)."""
CIFAR_DATASETS = ("cifar10", "cifar100")
"""Those read by the CIFAR pipeline (official archives, class-folder trees): :mod:`resnet_core.data.sources`."""

ShortcutOption = Literal["A", "B", "C"]
SHORTCUT_OPTIONS: tuple[str, ...] = get_args(ShortcutOption)
"""The shortcut options of paper Table 3 (Sec. 3.3): A zero-padding identity, B projections where dimensions grow,
C projections everywhere. Built by :class:`resnet_core.models.blocks.Shortcut`; everything else reads this list."""

StrideIn = Literal["1x1", "3x3"]
STRIDE_IN: tuple[str, ...] = get_args(StrideIn)
"""Where a downsampling bottleneck strides: on its first 1x1 convolution (the paper) or on its 3x3 (torchvision's
"v1.5")."""

CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
"""``none``: eager. The rest are ``torch.compile`` modes; ``reduce-overhead`` adds CUDA graphs."""

Preset = Literal["paper", "torchvision"]
PRESETS: tuple[str, ...] = get_args(Preset)
"""ImageNet augmentation recipes: the paper's (Sec. 3.4) and torchvision's reference ImageNet recipe."""

EvalCrops = Literal[1, 10]
EVAL_CROPS: tuple[int, ...] = get_args(EvalCrops)
"""Views per ImageNet test image: the centre crop, or the standard 10 crops (Sec. 3.4)."""


def check_options(*, compile: str, threads: int | None) -> None:
    """The device-independent checks of how a step executes, shared by
    :class:`~resnet_core.engine.config.TrainConfig` (on construction, before any device is chosen) and
    :meth:`resnet_core.engine.step.Execution.resolve`."""
    if compile not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {compile!r}: use one of {', '.join(COMPILE_MODES)}")
    if threads is not None and threads <= 0:
        raise ConfigError(f"threads must be a positive number of CPU threads, got {threads}")
