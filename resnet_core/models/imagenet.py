"""The ImageNet networks of the paper (He et al. 2015, Sec. 3.4 and 4.1, Table 1, Fig. 3).

Table 1: conv1 is "7x7, 64, stride 2", followed by a "3x3 max pool, stride 2"; then four stages conv2_x to
conv5_x of basic blocks (18 and 34 layers) or bottleneck blocks (50, 101, 152 layers) with widths 64, 128,
256, 512 on 56x56, 28x28, 14x14 and 7x7 maps; "downsampling is performed by conv3_1, conv4_1, and conv5_1
with a stride of 2"; the network ends with "average pool, 1000-d fc, softmax". The paper's plain nets (Fig. 3
middle, Table 2) are the same layers without shortcuts. Module names follow torchvision, so its state
dictionaries load into these models unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_core.errors import ConfigError
from resnet_core.models.blocks import BasicBlock, Bottleneck, Shortcut, StrideIn, make_stages
from resnet_core.models.init import init_he

Block = type[BasicBlock] | type[Bottleneck]

STAGE_WIDTHS = (64, 128, 256, 512)
"""Widths of conv2_x ... conv5_x (Table 1); bottleneck blocks output four times as many channels."""

TABLE_1: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
"""Depth -> (block, blocks per stage conv2_x ... conv5_x), the columns of Table 1."""


def weighted_layers(block: Block) -> int:
    """Convolutions on a block's residual path: 2 for a basic block, 3 for a bottleneck (Fig. 5)."""
    return 3 if issubclass(block, Bottleneck) else 2


class ImageNetResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max pool), four stages of ``layers`` blocks, global average pool, classifier.

    ``shortcut`` is option A, B (the paper's choice for ResNet-50/101/152, Table 3) or C (a projection on
    every block); ``residual=False`` builds the plain net (Table 2): identical layers without shortcuts.
    ``stride_in`` places the stride of downsampling bottlenecks (:class:`StrideIn`); basic blocks have a
    single placement, so for them it is validated and has no effect.
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, ...] | list[int],
        num_classes: int = 1000,
        shortcut: Shortcut | str = Shortcut.B,
        residual: bool = True,
        stride_in: StrideIn | str = StrideIn.CONV1X1,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        if len(layers) != len(STAGE_WIDTHS) or any(count < 1 for count in layers):
            raise ConfigError(
                f"layers must be four positive block counts (conv2_x ... conv5_x of Table 1), got {list(layers)}"
            )
        option = Shortcut.parse(shortcut)
        placement = StrideIn.parse(stride_in)
        bottleneck = issubclass(block, Bottleneck)
        self.depth = 2 + weighted_layers(block) * sum(layers)
        self.residual = residual
        self.shortcut = option
        self.stride_in = placement if bottleneck else None
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        # Table 1 gives only the kernel and stride; padding 1 is torchvision's and fb.resnet.torch's choice.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        placement_arg = {"stride_in": placement} if bottleneck else {}
        # conv2_1 follows the pool (stride 1); conv3_1, conv4_1 and conv5_1 halve the map (Table 1).
        stages, in_channels = make_stages(block, STAGE_WIDTHS[0], STAGE_WIDTHS, layers, shortcut=option,
                                          residual=residual, **placement_arg)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def imagenet_resnet(
    depth: int,
    num_classes: int = 1000,
    shortcut: Shortcut | str = Shortcut.B,
    residual: bool = True,
    stride_in: StrideIn | str = StrideIn.CONV1X1,
) -> ImageNetResNet:
    """The Table 1 network of ``depth`` (18, 34, 50, 101 or 152), or a one-line ConfigError."""
    if depth not in TABLE_1:
        valid = ", ".join(str(d) for d in TABLE_1)
        raise ConfigError(f"depth {depth} is not in Table 1: ImageNet ResNets have depth {valid}")
    block, layers = TABLE_1[depth]
    return ImageNetResNet(block, layers, num_classes, shortcut=shortcut, residual=residual, stride_in=stride_in)
