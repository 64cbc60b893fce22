"""Building blocks of the paper's networks (He et al. 2015, Sec. 3.2-3.3, Fig. 2 and Fig. 3).

A *basic block* is the two-layer residual function of Fig. 2 / Fig. 5 (left): two 3x3 convolutions, each
followed by batch normalisation (Sec. 3.4: "BN right after each convolution and before activation"), with
the shortcut added before the second ReLU. A *bottleneck block* (Sec. 4.1 "Deeper Bottleneck
Architectures", Fig. 5 right) stacks 1x1, 3x3 and 1x1 convolutions: the 1x1 layers reduce and then restore
(x4) the channels, so the 3x3 layer works on the narrow width. With ``residual=False`` the same layers form
the block of the paper's *plain* networks (Sec. 4.1, Fig. 3 middle): no shortcut and no addition.

Shortcut options (Sec. 3.3 and Table 3):

* **A** -- identity; where dimensions grow, the input is subsampled with stride 2 and zero channels are
  appended (:class:`ZeroPadShortcut`). No parameters. The paper's choice for CIFAR-10 (Sec. 4.2).
* **B** -- identity where dimensions match, a 1x1 projection (+BN) only where they grow.
* **C** -- a 1x1 projection (+BN) on every block.

Attribute names follow torchvision (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``,
``downsample``) so that state dictionaries line up with the most used PyTorch models.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.errors import ConfigError


class Shortcut(str, Enum):
    """The shortcut options of paper Table 3, one member per name in :data:`resnet_core.options.SHORTCUT_OPTIONS`
    (which the configuration, the command lines and the study read; a test keeps the two equal)."""

    A = "A"  # zero-padding identity
    B = "B"  # projection where dimensions grow
    C = "C"  # projection everywhere

    @classmethod
    def parse(cls, value: str | Shortcut) -> Shortcut:
        """Return the option named by ``value`` ("A", "b", ...), or raise a one-line ConfigError."""
        try:
            return cls(str(value.value if isinstance(value, Shortcut) else value).upper())
        except ValueError:
            valid = ", ".join(option.value for option in cls)
            raise ConfigError(f"unknown shortcut option {value!r}: use one of {valid} (paper Table 3)") from None


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (the following BN supplies the shift)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias, as used by projection shortcuts (Eqn. 2) and bottlenecks."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A where dimensions grow: stride-``stride`` subsampling, then zero channels appended.

    The paper (Sec. 3.3) only says "extra zero entries padded for increasing dimensions" and "performed with
    a stride of 2". Published code lays the zeros out differently: fb.resnet.torch (the authors' endorsed
    Torch code) appends them after the input channels, as done here; a widely used PyTorch port splits them
    half before and half after. The layouts differ only by a permutation of the block's output channels,
    and every layer that reads them is randomly initialised, so they train identically in distribution.
    Subsampling keeps the top-left pixel of each 2x2 window, which is what a stride-2 1x1 identity does.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"zero-padding shortcut cannot shrink {in_channels} to {out_channels} channels")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def make_shortcut(option: Shortcut | str, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut of one block under ``option`` (an option or its name, "A", "b", ...); ``None`` means the plain
    identity ``x``."""
    option = Shortcut.parse(option)  # a name compared with ``is`` against the enum would silently build option A
    grows = stride != 1 or in_channels != out_channels
    if option is Shortcut.C or (option is Shortcut.B and grows):
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    if grows:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut, Fig. 2 / Fig. 5 (left): y = ReLU(F(x) + shortcut(x)).

    ``residual=False`` gives the plain block (Sec. 4.1): the same layers, no shortcut, no addition.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        shortcut: Shortcut | str = Shortcut.A,
        residual: bool = True,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.residual = residual
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # torchvision's name for the shortcut branch; None is the identity (or no shortcut when plain).
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class StrideIn(str, Enum):
    """Which convolution of a downsampling bottleneck (conv3_1, conv4_1, conv5_1 of Table 1) has stride 2.

    The paper only says that "downsampling is performed by conv3_1, conv4_1, and conv5_1 with a stride of 2"
    (Table 1). The authors' released Caffe models put the stride on the first 1x1 convolution; torchvision
    moved it to the 3x3 convolution ("ResNet v1.5"), which costs more multiply-adds (4.1 vs 3.8 x10^9 for
    ResNet-50) and, per NVIDIA's reference implementation, is about 0.5 points more accurate (top-1). Basic
    blocks have no 1x1 layer: their first 3x3 convolution always takes the stride.
    """

    CONV1X1 = "1x1"  # the paper's models (stride on conv1, the first 1x1)
    CONV3X3 = "3x3"  # torchvision's v1.5 (stride on conv2, the 3x3)

    @classmethod
    def parse(cls, value: str | StrideIn) -> StrideIn:
        """Return the placement named by ``value`` ("1x1", "3X3", ...), or raise a one-line ConfigError."""
        try:
            return cls(str(value.value if isinstance(value, StrideIn) else value).lower())
        except ValueError:
            raise ConfigError(
                f"unknown stride_in {value!r}: use 1x1 (the paper's models: stride on the first 1x1 convolution) "
                "or 3x3 (torchvision's v1.5: stride on the 3x3 convolution)"
            ) from None


class Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 - 1x1 (restore, x4) conv-BN layers with a shortcut, Fig. 5 (right).

    ``channels`` is the width of the 1x1 and 3x3 layers (64, 128, 256, 512 in Table 1); the block outputs
    ``4 * channels``. ``stride_in`` chooses which convolution carries the stride (:class:`StrideIn`); the
    shortcut subsamples on its own (a stride-2 1x1 projection, or option A's slicing). ``residual=False``
    gives the plain block (Sec. 4.1): the same layers, no shortcut, no addition.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        shortcut: Shortcut | str = Shortcut.A,
        residual: bool = True,
        stride_in: StrideIn | str = StrideIn.CONV1X1,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        placement = StrideIn.parse(stride_in)
        stride_1x1, stride_3x3 = (stride, 1) if placement is StrideIn.CONV1X1 else (1, stride)
        self.residual = residual
        self.stride_in = placement
        self.conv1 = conv1x1(in_channels, channels, stride_1x1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride_3x3)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        # Option A's zero padding also serves the stride-1 growth of the first block (64 -> 256 channels);
        # the paper's bottleneck nets use option B (Table 3 caption), where that block has a projection.
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def make_stages(block: type[BasicBlock] | type[Bottleneck], in_channels: int, widths: Sequence[int],
                counts: Sequence[int], **block_options: object) -> tuple[list[nn.Sequential], int]:
    """The stages of a network: ``counts[i]`` blocks of width ``widths[i]``; the first block of every stage but
    the first halves the map with stride 2 (CIFAR: Sec. 4.2; ImageNet: conv3_1, conv4_1, conv5_1 of Table 1).
    Returns the stages and the channels the last one outputs. ``block_options`` (shortcut, residual,
    stride_in) go to every block."""
    stages: list[nn.Sequential] = []
    for index, (width, count) in enumerate(zip(widths, counts)):
        blocks = []
        for block_index in range(count):
            stride = 2 if index > 0 and block_index == 0 else 1
            blocks.append(block(in_channels, width, stride, **block_options))
            in_channels = width * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, in_channels
