"""The CIFAR-10 networks of the paper (He et al. 2015, Sec. 4.2, Table 6).

"The first layer is 3x3 convolutions. Then we use a stack of 6n layers with 3x3 convolutions on the
feature maps of sizes {32, 16, 8} respectively, with 2n layers for each feature map size. The numbers of
filters are {16, 32, 64} respectively. The subsampling is performed by convolutions with a stride of 2.
The network ends with a global average pooling, a 10-way fully-connected layer, and softmax. There are
totally 6n+2 stacked weighted layers." With shortcut option A "the residual models have exactly the same
depth, width, and number of parameters as the plain counterparts".
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_core.errors import ConfigError
from resnet_core.models.blocks import BasicBlock, Shortcut, conv3x3, make_stages
from resnet_core.models.init import init_he

STAGE_WIDTHS = (16, 32, 64)
"""Filters of the three stages, on 32x32, 16x16 and 8x8 feature maps (Sec. 4.2)."""


def blocks_per_stage(depth: int) -> int:
    """n such that depth = 6n + 2, or a one-line ConfigError naming the valid depths."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ConfigError(
            f"depth {depth} is not 6n+2 with n >= 1: CIFAR ResNets have depth 8, 14, 20, 26, 32, ... "
            "(paper Sec. 4.2 uses 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


class CifarResNet(nn.Module):
    """A 6n+2-layer CIFAR network: stem conv, three stages of n basic blocks, global pool, classifier.

    ``residual=False`` builds the plain twin (Sec. 4.2, Fig. 6 left): identical layers without shortcuts.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        shortcut: Shortcut | str = Shortcut.A,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        n = blocks_per_stage(depth)
        option = Shortcut.parse(shortcut)
        self.depth = depth
        self.residual = residual
        self.shortcut = option
        self.conv1 = conv3x3(3, STAGE_WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        # n blocks per stage; the first block of stages 2 and 3 halves the map with a stride-2 convolution.
        stages, in_channels = make_stages(BasicBlock, STAGE_WIDTHS[0], STAGE_WIDTHS, (n,) * len(STAGE_WIDTHS),
                                          shortcut=option, residual=residual)
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))
