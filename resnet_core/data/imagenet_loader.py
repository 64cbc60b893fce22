"""DataLoaders of the ImageNet pipeline (paper Sec. 3.4): training batches indexed by iteration, evaluation.

Training: every epoch is a :class:`~torch.utils.data.DistributedSampler` permutation drawn from
``(seed, epoch)`` (disjoint shares for the ranks under ``torch.distributed``, a single share alone), cut into
local batches of ``batch_size / world_size`` images. The sampler hands the dataset ``(epoch, index)`` keys,
and the dataset seeds each image's augmentation from them, so batch ``i`` is a pure function of
``(seed, rank, i)`` whatever the number of worker processes: a run resumed at iteration ``i`` reproduces the
uninterrupted one, as the CIFAR batches do. Decoding and augmentation run in DataLoader worker processes.

Evaluation: rank ``r`` of ``w`` scores images ``r, r + w, ...`` (no padding, so every image counts once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import count
from typing import TypeVar

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from resnet_core.data.imagenet import ImageFolderDataset, collate_skipping
from resnet_core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

T = TypeVar("T")


class EpochKeySampler(Sampler[tuple[int, int]]):
    """Endless ``(epoch, index)`` keys of one rank, from a given global iteration on.

    Epoch ``e``'s order is ``DistributedSampler(seed=seed).set_epoch(e)`` (drop_last, so every rank holds
    the same number of images); its step ``s`` is the slice ``[s * local_batch, (s + 1) * local_batch)``.
    """

    def __init__(self, dataset: ImageFolderDataset, local_batch: int, *, seed: int, rank: int, world_size: int) -> None:
        self.epoch_order = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                              drop_last=True)
        self.local_batch = local_batch
        self.batches_per_epoch = self.epoch_order.num_samples // local_batch
        self.start = 0
        self._cached: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """This rank's image indices for ``epoch``, in order."""
        if self._cached is None or self._cached[0] != epoch:
            self.epoch_order.set_epoch(epoch)
            self._cached = (epoch, list(self.epoch_order))
        return self._cached[1]

    def indices(self, iteration: int) -> list[int]:
        """The image indices of this rank's part of batch ``iteration``."""
        epoch, step = divmod(iteration, self.batches_per_epoch)
        return self.order(epoch)[step * self.local_batch : (step + 1) * self.local_batch]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for iteration in count(self.start):
            epoch = iteration // self.batches_per_epoch
            for index in self.indices(iteration):
                yield epoch, index


class LoaderBatches:
    """Training batches ``batch(iteration)`` from DataLoader workers, on ``device``.

    Batches come from one endless DataLoader iterator; asking for another iteration than the next one (a
    resume) restarts the iterator there. ``skipped`` counts the corrupt images left out (``skip_corrupt``).
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        batch_size: int,
        *,
        seed: int,
        device: torch.device,
        workers: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size != 0:
            raise ConfigError(f"batch_size {batch_size} does not divide among {world_size} workers: "
                              f"use a multiple of {world_size}")
        local_batch = batch_size // world_size
        self.sampler = EpochKeySampler(dataset, local_batch, seed=seed, rank=rank, world_size=world_size)
        if self.sampler.batches_per_epoch == 0:
            raise ConfigError(f"batch_size {batch_size} exceeds the {len(dataset)} training images: use a smaller one")
        self.batches_per_epoch = self.sampler.batches_per_epoch
        self.device = device
        self.workers = workers
        self.dataset = dataset
        self.local_batch = local_batch
        self.skipped = 0
        self._iterator: Iterator[tuple[torch.Tensor, torch.Tensor, int]] | None = None
        self._next = -1

    def indices(self, iteration: int) -> list[int]:
        """Image indices (into the training list) of this rank's part of batch ``iteration``."""
        return self.sampler.indices(iteration)

    def _restart(self, iteration: int) -> None:
        self.sampler.start = iteration
        loader = DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler,
                            num_workers=self.workers, collate_fn=collate_skipping,
                            pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.workers else None)
        self._iterator = iter(loader)
        self._next = iteration

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs float32 (B, 3, S, S), labels int64 (B,)) for 0-based ``iteration`` on this rank."""
        if self._iterator is None or iteration != self._next:
            self._restart(iteration)
        assert self._iterator is not None
        images, labels, skipped = _unwrap_worker_error(self._iterator.__next__)
        self._next += 1
        if skipped:
            self.skipped += skipped
            log.warning("batch %d: %d corrupt image(s) skipped (%d so far)", iteration, skipped, self.skipped)
        if len(labels) == 0:
            raise DataError(f"batch {iteration} holds no readable image: every file of it is corrupt; "
                            "check the training folder")
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def close(self) -> None:
        """Stop the worker processes."""
        self._iterator = None


class LoaderEvalSet:
    """Evaluation batches of one split: this rank's every ``world_size``-th image, ``batch_size`` at a time."""

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, *, device: torch.device, workers: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.loader = DataLoader(Subset(dataset, range(rank, len(dataset), world_size)), batch_size=batch_size,
                                 num_workers=workers, collate_fn=collate_skipping,
                                 pin_memory=device.type == "cuda")
        self.device = device
        self.skipped = 0

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs (B, 3, S, S) or (B, crops, 3, S, S), labels (B,)) on the device."""
        iterator = iter(self.loader)
        while True:
            try:
                images, labels, skipped = _unwrap_worker_error(iterator.__next__)
            except StopIteration:
                return
            self.skipped += skipped
            if len(labels):
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def _unwrap_worker_error(pull: Callable[[], T]) -> T:
    """Call ``pull``; a DataError raised in a worker process comes back as its own one-line message.

    DataLoader re-raises a worker's exception with the worker's traceback folded into the message; the user
    needs only the last line, which names the file and the fix.
    """
    try:
        return pull()
    except DataError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        last = lines[-1] if lines else str(error)
        prefix = f"{type(error).__name__}: "
        raise type(error)(last[len(prefix):] if last.startswith(prefix) else last) from None
