"""Batches for CIFAR-sized data held whole on the training device (paper Sec. 4.2 recipe).

The training stream is a pure function of ``(seed, rank, iteration)``: epoch ``e`` is a permutation drawn
from ``(seed, e)``, iteration ``i`` takes its slice of that permutation, and the crops and flips of
iteration ``i`` come from a generator seeded by ``(seed, rank, i)``. Resuming at iteration ``i`` therefore
needs no saved data-loader state and reproduces the uninterrupted run exactly. Under ``torch.distributed``
each rank takes a disjoint part of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from resnet_core.data.augment import Normalizer, random_crop_flip
from resnet_core.errors import ConfigError

PAPER_PADDING = 4
"""Pixels of zero padding before the random crop (Sec. 4.2)."""


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images (N, C, H, W) with int64 labels (N,), on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> LabelledImages:
        return LabelledImages(self.images.to(device), self.labels.to(device))


def holdout_split(
    images: torch.Tensor, labels: torch.Tensor, val_size: int, seed: int = 0
) -> tuple[LabelledImages, LabelledImages | None]:
    """Split training images into (train, validation) with a fixed random hold-out of ``val_size`` images.

    The hold-out depends only on ``seed`` (default 0, not the training seed), so every run of a study
    validates on the same images. The paper chose its CIFAR schedule on a 45k/5k split (Sec. 4.2).
    """
    if val_size == 0:
        return LabelledImages(images, labels), None
    if val_size >= len(labels):
        raise ConfigError(
            f"val_split {val_size} leaves no training images (the training set has {len(labels)}); "
            "use fewer, e.g. 5000 of CIFAR's 50000"
        )
    train_index, val_index = holdout_indices(len(labels), val_size, seed)
    return (
        LabelledImages(images[train_index], labels[train_index]),
        LabelledImages(images[val_index], labels[val_index]),
    )


def holdout_indices(size: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices, each sorted: a fixed random hold-out of ``val_size`` of ``size`` items."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values


def stream_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class TrainBatches:
    """Augmented training batches, indexed by iteration, produced on the device that holds the images."""

    def __init__(
        self,
        data: LabelledImages,
        normalizer: Normalizer,
        batch_size: int,
        *,
        seed: int,
        augment: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size != 0:
            raise ConfigError(
                f"batch_size {batch_size} does not divide among {world_size} workers: "
                f"use a multiple of {world_size}"
            )
        if batch_size > len(data):
            raise ConfigError(f"batch_size {batch_size} exceeds the {len(data)} training images: use a smaller one")
        self.data = data
        self.normalizer = normalizer
        self.global_batch = batch_size
        self.local_batch = batch_size // world_size
        self.seed = seed
        self.augment = augment
        self.rank = rank
        self.device = data.images.device
        # The last incomplete batch of an epoch is dropped, so every step sees the same batch shape.
        self.batches_per_epoch = len(data) // batch_size
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)
        self._order_host = self._order
        self._generator = torch.Generator(device=self.device)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch))
            order = torch.randperm(len(self.data), generator=generator)
            if self.device.type == "cuda":  # an asynchronous copy from pinned memory: the host does not wait
                order = order.pin_memory()
                self._order_host = order  # kept alive until the copy has run
            self._order = order.to(self.device, non_blocking=True)
            self._epoch = epoch
        return self._order

    def indices(self, iteration: int) -> torch.Tensor:
        """Indices (into the training images) of this rank's part of batch ``iteration``."""
        epoch, step = divmod(iteration, self.batches_per_epoch)
        start = step * self.global_batch + self.rank * self.local_batch
        return self._epoch_order(epoch)[start : start + self.local_batch]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs float32 (B, C, H, W), labels int64 (B,)) for 0-based ``iteration`` on this rank."""
        index = self.indices(iteration)
        images = self.normalizer(self.data.images[index])
        if self.augment:
            self._generator.manual_seed(stream_seed(self.seed, self.rank, iteration, 1))
            images = random_crop_flip(images, PAPER_PADDING, self._generator)
        return images, self.data.labels[index]


def eval_batches(
    data: LabelledImages, normalizer: Normalizer, batch_size: int, *, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share (every ``world_size``-th image) of ``data``, normalised and not augmented (Sec. 4.2)."""
    index = torch.arange(rank, len(data), world_size, device=data.images.device)
    for start in range(0, len(index), batch_size):
        part = index[start : start + batch_size]
        yield normalizer(data.images[part]), data.labels[part]
