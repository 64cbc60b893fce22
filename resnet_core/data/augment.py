"""Preprocessing and augmentation of the paper's CIFAR experiments, on batched tensors (Sec. 4.2).

"The network inputs are 32x32 images, with the per-pixel mean subtracted." -- :class:`Normalizer`.
"We follow the simple data augmentation in [24] for training: 4 pixels are padded on each side, and a
32x32 crop is randomly sampled from the padded image or its horizontal flip. For testing, we only evaluate
the single view of the original 32x32 image." -- :func:`random_crop_flip`, drawn independently per image
but computed for the whole batch with one gather: no per-image Python work, on whatever device holds it.

Order: the mean is subtracted first and the padding is zeros of the normalised image (as the paper's text
reads and as fb.resnet.torch does), so padded pixels equal the mean image, not black.
"""

from __future__ import annotations

import torch

from resnet_core.errors import ConfigError


class Normalizer:
    """uint8 images (B, C, H, W) -> float32 inputs; statistics computed once on the training images.

    ``"pixel_mean"`` (paper): x/255 minus the mean image. ``"channel"`` (option): per-channel mean and std,
    the common modern choice.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None = None) -> None:
        self.mean = mean.float()
        self.std = None if std is None else std.float()

    @classmethod
    def fit(cls, images: torch.Tensor, kind: str = "pixel_mean", chunk: int = 10_000) -> Normalizer:
        """Statistics of ``images`` (uint8, N x C x H x W), accumulated in float64 chunk by chunk."""
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
            raise ValueError("Normalizer.fit expects a non-empty uint8 tensor of shape (N, C, H, W)")
        total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
        squares = torch.zeros_like(total)
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk].to(torch.float64) / 255.0
            total += part.sum(0)
            squares += (part * part).sum(0)
        pixel_mean = total / len(images)
        if kind == "pixel_mean":
            return cls(pixel_mean)
        if kind == "channel":
            count = len(images) * images.shape[2] * images.shape[3]
            mean = total.sum((1, 2)) / count
            var = squares.sum((1, 2)) / count - mean * mean
            return cls(mean[:, None, None], var.clamp_min(1e-12).sqrt()[:, None, None])
        raise ConfigError(f"unknown normalization {kind!r}: use pixel_mean (paper) or channel")

    def to(self, device: torch.device) -> Normalizer:
        return Normalizer(self.mean.to(device), None if self.std is None else self.std.to(device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0).sub_(self.mean)
        return x if self.std is None else x.div_(self.std)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding``, take a random crop of the original size, flip half the images.

    Offsets (0..2*padding in each axis) and flips are drawn per image from ``generator``; the crop and the
    flip are one advanced-indexing gather, so the cost does not depend on Python loops.
    """
    batch, channels, height, width = images.shape
    device = images.device
    if padding == 0:
        offsets_y = torch.zeros(batch, dtype=torch.long, device=device)
        offsets_x = offsets_y
    else:
        offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=device)
        offsets_y, offsets_x = offsets[0], offsets[1]
    flips = torch.rand(batch, generator=generator, device=device) < 0.5
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = offsets_y[:, None] + torch.arange(height, device=device)  # (B, H)
    cols = torch.arange(width, device=device)
    cols = torch.where(flips[:, None], width - 1 - cols, cols) + offsets_x[:, None]  # (B, W)
    batch_index = torch.arange(batch, device=device)[:, None, None, None]
    channel_index = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
