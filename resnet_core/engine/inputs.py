"""What the engine trains and evaluates on: the CIFAR pipeline (Sec. 4.2) or the ImageNet one (Sec. 3.4).

Both give the engine the same two things: a training stream ``batch(iteration)`` (a pure function of the
seed, the rank and the iteration, so resuming is exact) and evaluation sets that yield batches.

* CIFAR: the whole set is held on the training device as uint8; batches are normalised (per-pixel mean)
  and augmented (pad-4 crops, flips) on the device (:mod:`resnet_core.data.batches`).
* ImageNet: files are decoded and augmented in DataLoader worker processes with the ``paper`` or
  ``torchvision`` preset (:mod:`resnet_core.data.imagenet_transforms`); evaluation uses the centre crop or
  the paper's 10-crop. For ImageNet, ``test`` is the ``val/`` folder (the paper reports ImageNet val errors,
  Tables 2-4) and ``val`` a hold-out of training images (``val_split``), as on CIFAR.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from resnet_core.data.augment import Normalizer
from resnet_core.data.batches import LabelledImages, TrainBatches, eval_batches, holdout_indices, holdout_split
from resnet_core.data.imagenet import ImageFolderDataset, ImageFolderIndex, scan_image_folders
from resnet_core.data.imagenet_loader import LoaderBatches, LoaderEvalSet
from resnet_core.data.sources import ImageDataset, load_image_dataset
from resnet_core.engine.config import TrainConfig
from resnet_core.engine.distributed import ProcessGroup, barrier, broadcast_object
from resnet_core.engine.step import affinity_cpus
from resnet_core.errors import ConfigError

MAX_DEFAULT_WORKERS = 8
"""DataLoader workers per rank when ``workers`` is not set (at most the CPUs this process may use)."""


class TrainStream(Protocol):
    batches_per_epoch: int

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of this rank's part of batch ``iteration``, on the training device."""
        ...


class EvalSet(Protocol):
    def batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the split: inputs (B, C, H, W), or (B, crops, C, H, W), and labels."""
        ...


@dataclass(frozen=True)
class Inputs:
    train: TrainStream
    test: EvalSet
    val: EvalSet | None
    num_classes: int
    train_images: int
    """Training images (after the hold-out), for epochs and logs."""
    description: str


class CifarEvalSet:
    """A CIFAR split on the device, scored in batches of ``batch_size`` (single view, Sec. 4.2)."""

    def __init__(self, data: LabelledImages, normalizer: Normalizer, batch_size: int, group: ProcessGroup) -> None:
        self.data, self.normalizer, self.batch_size, self.group = data, normalizer, batch_size, group

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return eval_batches(self.data, self.normalizer, self.batch_size, rank=self.group.rank,
                            world_size=self.group.world_size)


def cifar_inputs(config: TrainConfig, dataset: ImageDataset, group: ProcessGroup, device: torch.device) -> Inputs:
    """The CIFAR pipeline of Sec. 4.2 over ``dataset`` held in memory."""
    train, val = holdout_split(dataset.train_images, dataset.train_labels, config.val_split)
    # Statistics on the CPU in float64 (MPS has no float64), then everything moves to the device.
    normalizer = Normalizer.fit(train.images, config.normalization).to(device)
    train = train.to(device)
    test = LabelledImages(dataset.test_images, dataset.test_labels).to(device)
    batches = TrainBatches(train, normalizer, config.batch_size, seed=config.seed, augment=config.augment,
                           rank=group.rank, world_size=group.world_size)
    val_set = None if val is None else CifarEvalSet(val.to(device), normalizer, config.eval_batch_size, group)
    return Inputs(batches, CifarEvalSet(test, normalizer, config.eval_batch_size, group), val_set,
                  dataset.num_classes, len(train), dataset.description)


def default_workers() -> int:
    """CPUs this process may use, at most :data:`MAX_DEFAULT_WORKERS`."""
    return max(1, min(MAX_DEFAULT_WORKERS, affinity_cpus() or os.cpu_count() or 1))


def imagenet_inputs(config: TrainConfig, index: ImageFolderIndex, group: ProcessGroup,
                    device: torch.device) -> Inputs:
    """The ImageNet pipeline of Sec. 3.4 over the image files listed in ``index``."""
    # torchvision's transforms only here: importing them costs every CIFAR process (each study trial's workers)
    # about a second of start-up for nothing.
    from resnet_core.data.imagenet_transforms import ImageSizes, eval_transform, pixel_mean, train_transform

    workers = default_workers() if config.workers is None else config.workers
    sizes = ImageSizes.scaled(config.image_size)
    train_samples, val_samples = list(index.train), None
    if config.val_split:
        if config.val_split >= len(train_samples):
            raise ConfigError(f"val_split {config.val_split} leaves no training images (the training set has "
                              f"{len(train_samples)}); use fewer")
        train_index, val_index = holdout_indices(len(train_samples), config.val_split)
        train_samples, val_samples = ([train_samples[i] for i in train_index.tolist()],
                                      [train_samples[i] for i in val_index.tolist()])
    mean_image = None
    if config.preset == "paper":  # the per-pixel mean of the training images (Sec. 3.4), computed once
        if group.is_main:
            mean_image = pixel_mean(index.root, train_samples, sizes, limit=config.mean_images, workers=workers)
        mean_image = broadcast_object(mean_image, group)
    augment = (train_transform(config.preset, sizes, mean_image) if config.augment
               else eval_transform(config.preset, sizes, mean_image, crops=1))
    evaluation = eval_transform(config.preset, sizes, mean_image, crops=config.crops)

    def files(samples: list[tuple[str, int]], transform: Callable[[torch.Tensor], torch.Tensor]) -> ImageFolderDataset:
        return ImageFolderDataset(index.root, samples, transform, seed=config.seed, skip_corrupt=config.skip_corrupt)

    def scored(samples: list[tuple[str, int]]) -> LoaderEvalSet:
        return LoaderEvalSet(files(samples, evaluation), config.eval_batch_size, device=device, workers=workers,
                             rank=group.rank, world_size=group.world_size)

    train = LoaderBatches(files(train_samples, augment), config.batch_size, seed=config.seed, device=device,
                          workers=workers, rank=group.rank, world_size=group.world_size)
    return Inputs(train, scored(list(index.val)), None if val_samples is None else scored(val_samples),
                  len(index.classes), len(train_samples), index.description)


def load_inputs(config: TrainConfig, data: ImageDataset | ImageFolderIndex | None, group: ProcessGroup,
                device: torch.device) -> Inputs:
    """Read ``config.data`` (unless ``data`` is given) and build the dataset's pipeline on ``device``."""
    if data is None:
        # Rank 0 first, so a download, extraction or cache build happens once; the others then read its result.
        if not group.is_main:
            barrier(group)
        if config.is_imagenet:
            data = scan_image_folders(config.data, cache_dir=config.cache_dir)
        else:
            data = load_image_dataset(config.data, dataset=config.dataset, download=config.download,
                                      cache_dir=config.cache_dir)
        if group.is_main:
            barrier(group)
    if isinstance(data, ImageFolderIndex):
        if not config.is_imagenet:
            raise ConfigError("an ImageNet folder index was given to a CIFAR run: set dataset=imagenet")
        return imagenet_inputs(config, data, group, device)
    if config.is_imagenet:
        raise ConfigError("dataset=imagenet reads image files: pass the folder as data= (config.data), "
                          "not images held in memory")
    return cifar_inputs(config, data, group, device)
