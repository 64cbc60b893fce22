"""What a study's driver needs of its data, whichever pipeline trains it: the number of classes, the input and
normalisation of a released model, and test images for the report's analyses.

The trials read the data themselves (the engine's pipelines); the driver only checks it before anything starts and
then uses it for the end of the study: the models it releases (:mod:`study.final_models`) and the layer responses of
paper Fig. 7 (:mod:`study.publish`).

* :class:`CifarData` (Sec. 4.2): the whole set in memory, as :func:`resnet_core.load_image_dataset` reads it; a
  released model takes 32x32 uint8 images, normalised inside as its final run trained (statistics of all training
  images: a final run holds nothing out).
* :class:`ImageFolderData` (Sec. 3.4): an ImageNet-style folder, listed but not decoded; a released model takes the
  uint8 centre crop of the test view (shorter side resized, ``image_size`` crop), normalised inside as the engine
  does (the per-pixel mean of the paper preset, recomputed here from the same training images, or the torchvision
  preset's channel statistics). The study checks what the engine allows but a comparison cannot: ``val/`` must hold
  every class of ``train/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch

from resnet_core import ImageDataset, TrainConfig
from resnet_core.data.augment import Normalizer
from resnet_core.data.imagenet import ImageFolderIndex, read_image
from resnet_core.errors import DataError

RESPONSE_IMAGES = 500
"""ImageNet val images whose layer responses (Fig. 7) the report draws: the paper draws Fig. 7 for CIFAR-10 only
(Sec. 4.2), on its 10k test images; on ImageNet a fixed spread of val images keeps the driver's work small."""


class StudyData(Protocol):
    """The data of a study, as its driver uses it."""

    dataset: str
    num_classes: int
    train_images: int
    description: str

    def example_images(self, config: TrainConfig, count: int) -> torch.Tensor:
        """``count`` test images as a released model takes them: uint8 (count, 3, H, W)."""
        ...

    def normalizer(self, config: TrainConfig) -> Normalizer:
        """The input normalisation a final run of ``config`` trained with (no held-out images)."""
        ...

    def test_batches(self, config: TrainConfig, batch_size: int = 500) -> Iterator[torch.Tensor]:
        """The test images of the report's analyses, uint8 as :meth:`example_images` gives them, in batches."""
        ...


@dataclass
class CifarData:
    """A CIFAR set held in memory (Sec. 4.2)."""

    data: ImageDataset
    dataset: str = "cifar10"
    _normalizers: dict[str, Normalizer] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def train_images(self) -> int:
        return len(self.data.train_labels)

    @property
    def description(self) -> str:
        return self.data.description

    def example_images(self, config: TrainConfig, count: int) -> torch.Tensor:
        return self.data.test_images[:count]

    def normalizer(self, config: TrainConfig) -> Normalizer:
        kind = config.normalization
        if kind not in self._normalizers:  # fitted once per kind, however many groups share it
            self._normalizers[kind] = Normalizer.fit(self.data.train_images, kind)
        return self._normalizers[kind]

    def test_batches(self, config: TrainConfig, batch_size: int = 500) -> Iterator[torch.Tensor]:
        images = self.data.test_images
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]


@dataclass
class ImageFolderData:
    """An ImageNet-style folder (Sec. 3.4), listed by :func:`resnet_core.data.imagenet.scan_image_folders`."""

    index: ImageFolderIndex
    dataset: str = "imagenet"
    _normalizers: dict[tuple[str, int, int], Normalizer] = field(default_factory=dict, repr=False)
    _response_crops: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)
    """The :data:`RESPONSE_IMAGES` centre crops by crop side, decoded once for every group's model."""

    def __post_init__(self) -> None:
        missing = sorted(set(self.index.classes) - {self.index.classes[label] for _, label in self.index.val})
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"val/ of {self.index.root} lacks class folders that train/ has ({shown}): the test "
                            "error would leave those classes out; add their val images or remove their train/ "
                            "folders (--set dataset.path=PATH for another copy)")

    @property
    def num_classes(self) -> int:
        return self.index.num_classes

    @property
    def train_images(self) -> int:
        return len(self.index.train)

    @property
    def description(self) -> str:
        return self.index.description

    def _view(self, config: TrainConfig) -> Callable[[torch.Tensor], torch.Tensor]:
        from resnet_core.data.imagenet_transforms import ImageSizes, eval_view

        return eval_view(ImageSizes.scaled(config.image_size))

    def _spread(self, count: int) -> list[str]:
        """``count`` val images spread evenly over the (sorted, so class by class) val list."""
        samples = self.index.val
        step = max(len(samples) / max(count, 1), 1.0)
        return [samples[int(i * step)][0] for i in range(min(count, len(samples)))]

    def example_images(self, config: TrainConfig, count: int) -> torch.Tensor:
        view = self._view(config)
        return torch.stack([view(read_image(self.index.root / path)) for path in self._spread(count)])

    def normalizer(self, config: TrainConfig) -> Normalizer:
        from resnet_core.data.imagenet_transforms import (
            IMAGENET_CHANNEL_MEAN,
            IMAGENET_CHANNEL_STD,
            ImageSizes,
            pixel_mean,
        )

        key = (config.preset, config.image_size, config.mean_images)
        if key not in self._normalizers:
            if config.preset == "paper":  # the engine's own computation over the same images (a final run holds
                sizes = ImageSizes.scaled(config.image_size)  # nothing out), so the mean is the one it trained with
                mean = pixel_mean(self.index.root, list(self.index.train), sizes, limit=config.mean_images)
                self._normalizers[key] = Normalizer(mean)
            else:
                self._normalizers[key] = Normalizer(torch.tensor(IMAGENET_CHANNEL_MEAN)[:, None, None],
                                                    torch.tensor(IMAGENET_CHANNEL_STD)[:, None, None])
        return self._normalizers[key]

    def test_batches(self, config: TrainConfig, batch_size: int = 500) -> Iterator[torch.Tensor]:
        if config.image_size not in self._response_crops:
            view = self._view(config)
            self._response_crops[config.image_size] = torch.stack(
                [view(read_image(self.index.root / path)) for path in self._spread(RESPONSE_IMAGES)])
        crops = self._response_crops[config.image_size]
        for start in range(0, len(crops), batch_size):
            yield crops[start:start + batch_size]


def load_study_data(name: str, path: str, *, download: bool, cache_dir: str | None, path_option: str) -> StudyData:
    """The data of a study's ``dataset`` section, checked: one-line :class:`~resnet_core.errors.DataError` for what a
    user can fix."""
    if name == "imagenet":
        from resnet_core.data.imagenet import scan_image_folders

        return ImageFolderData(scan_image_folders(path, cache_dir=cache_dir))
    from resnet_core import load_image_dataset

    return CifarData(load_image_dataset(path, dataset=name, download=download, cache_dir=cache_dir,
                                        path_option=path_option), name)


__all__ = ["RESPONSE_IMAGES", "CifarData", "ImageFolderData", "StudyData", "load_study_data"]
