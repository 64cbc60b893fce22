"""A trained network packaged for use outside the engine: raw images in, class scores out.

The engine feeds its networks normalised float inputs (CIFAR: "the per-pixel mean subtracted", Sec. 4.2).
:class:`ImageClassifier` carries that normalisation inside, so whoever loads a released model passes images
as the dataset stores them -- uint8, (N, 3, H, W), any batch size -- and gets logits (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """``net`` behind the training run's input normalisation: ``(images / 255 - mean) / std`` (``std`` only for
    the ``channel`` normalisation option), then the network's logits."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", (torch.ones_like(self.mean) if std is None else std.detach().float()).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.float() / 255.0 - self.mean) / self.std)
