"""Preprocessing and augmentation of the paper's ImageNet experiments, per image (He et al. 2015, Sec. 3.4).

"The image is resized with its shorter side randomly sampled in [256, 480] for scale augmentation [41]. A
224x224 crop is randomly sampled from an image or its horizontal flip, with the per-pixel mean subtracted
[21]. The standard color augmentation in [21] is used." -- the ``"paper"`` preset of :func:`train_transform`;
the colour augmentation is AlexNet's PCA lighting noise (:class:`Lighting`). "In testing, for comparison
studies we adopt the standard 10-crop testing [21]." -- :func:`eval_transform` with ``crops=10``.

The ``"torchvision"`` preset is the common modern recipe (RandomResizedCrop, flip, per-channel mean and
std), offered as an option. Everything runs on uint8 (3, H, W) tensors with ``torchvision.transforms.v2``
(no PIL), draws from torch's CPU generator (so :class:`~resnet_core.data.imagenet.ImageFolderDataset` can
seed it per sample), and converts to float in [0, 1] only after the crop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from resnet_core.data.imagenet import CorruptImageError, read_image
from resnet_core.errors import ConfigError
from resnet_core.options import EVAL_CROPS, PRESETS

logger = logging.getLogger(__name__)

IMAGENET_CHANNEL_MEAN = (0.485, 0.456, 0.406)
IMAGENET_CHANNEL_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB mean and std of ImageNet images in [0, 1], as torchvision's reference recipe uses them."""

PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
"""Eigenvalues and eigenvectors (columns) of the covariance of ImageNet RGB pixels, for images in [0, 1].

AlexNet's colour augmentation [21] uses this PCA; the paper does not publish its numbers, so these are the
values of fb.resnet.torch (Facebook's Torch reimplementation of the paper), rows R, G, B."""

LIGHTING_STD = 0.1
"""Standard deviation of AlexNet's per-image PCA coefficients alpha (Sec. 4.1 of [21])."""

MEAN_BATCH = 64
"""Images per batch while computing :func:`pixel_mean`."""

# The paper's sizes: a 224 crop of an image whose shorter side is sampled in [256, 480]; 256 at test time.
_PAPER_CROP, _PAPER_RESIZE, _PAPER_EVAL_RESIZE = 224, (256, 480), 256


@dataclass(frozen=True)
class ImageSizes:
    """Crop side and shorter-side resize targets of training and testing (Sec. 3.4: 224, [256, 480], 256)."""

    image_size: int = _PAPER_CROP  # side of the square network input
    resize_range: tuple[int, int] = _PAPER_RESIZE  # training: shorter side sampled uniformly in [a, b]
    eval_resize: int = _PAPER_EVAL_RESIZE  # testing: shorter side before the centre crop or the 10 crops

    def __post_init__(self) -> None:
        _check_size("image_size", self.image_size)
        if isinstance(self.resize_range, (str, bytes)) or not isinstance(self.resize_range, Sequence) or \
                len(self.resize_range) != 2:
            raise ConfigError(f"resize_range must be two integers (a, b), e.g. the paper's {_PAPER_RESIZE}; "
                              f"got {self.resize_range!r}")
        object.__setattr__(self, "resize_range", tuple(self.resize_range))
        low, high = self.resize_range
        _check_size("resize_range[0]", low)
        _check_size("resize_range[1]", high)
        _check_size("eval_resize", self.eval_resize)
        # Both resize targets must be at least the crop, so every resized image holds a full crop (no padding).
        if not self.image_size <= low <= high:
            raise ConfigError(f"resize_range ({low}, {high}) must satisfy image_size ({self.image_size}) <= a <= b "
                              f"so every resized image holds the crop; e.g. the paper's {_PAPER_RESIZE} for 224")
        if self.eval_resize < self.image_size:
            raise ConfigError(f"eval_resize {self.eval_resize} is smaller than image_size {self.image_size}; use at "
                              f"least the crop side, e.g. the paper's {_PAPER_EVAL_RESIZE} for 224")

    @classmethod
    def scaled(cls, image_size: int) -> ImageSizes:
        """The paper's ratios (256/224, 480/224) applied to another crop side: 64 -> (64, (73, 137), 73)."""
        _check_size("image_size", image_size)

        def scale(side: int) -> int:
            return round(side * image_size / _PAPER_CROP)

        return cls(image_size, (scale(_PAPER_RESIZE[0]), scale(_PAPER_RESIZE[1])), scale(_PAPER_EVAL_RESIZE))


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer number of pixels; got {value!r}")


class RandomShortSideResize(torch.nn.Module):
    """Resize so the shorter side is an integer drawn uniformly from [low, high] (scale augmentation, Sec. 3.4).

    Not ``v2.RandomShortestSize``: it truncates ``side * (size / side)`` and so sometimes gives a shorter side
    of ``size - 1`` (e.g. 255 for a 98-pixel side and size 256); ``F.resize`` with one size is exact.
    """

    def __init__(self, low: int, high: int) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side = int(torch.randint(self.low, self.high + 1, ()))
        return F.resize(image, [side], antialias=True)

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


class Lighting(torch.nn.Module):
    """AlexNet's colour augmentation [21]: add ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std).

    One alpha (3 values) per image, drawn afresh each call; the input is float in [0, 1], (3, H, W) or a batch
    (..., 3, H, W). As in fb.resnet.torch the result is not clipped to [0, 1].
    """

    def __init__(self, alphastd: float = LIGHTING_STD, eigval: Sequence[float] = PCA_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = PCA_EIGVEC) -> None:
        super().__init__()
        self.alphastd = float(alphastd)
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not image.is_floating_point() or image.ndim < 3 or image.shape[-3] != 3:
            raise TypeError(f"Lighting expects float RGB images (..., 3, H, W) in [0, 1]; got {image.dtype} "
                            f"{tuple(image.shape)}")
        if self.alphastd == 0:
            return image
        alpha = torch.randn(*image.shape[:-3], 3).to(self.eigval.device) * self.alphastd
        shift = (alpha * self.eigval) @ self.eigvec.T  # rows: eigvec @ (alpha * eigval), one per image
        return image + shift.to(image)[..., :, None, None]

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd}"


class SubtractMeanImage(torch.nn.Module):
    """Subtract the per-pixel mean image (3, S, S) of the training set, images in [0, 1] (Sec. 3.4)."""

    def __init__(self, mean_image: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean_image", mean_image.detach().to(torch.float32).clone(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-3:]) != tuple(self.mean_image.shape):
            raise ValueError(f"images of shape {tuple(image.shape)} do not match the mean image "
                             f"{tuple(self.mean_image.shape)}")
        return image - self.mean_image


class StackCrops(torch.nn.Module):
    """The tuple of crops of ``v2.TenCrop`` as one tensor (10, 3, S, S)."""

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(crops))


def train_transform(preset: str, sizes: ImageSizes, mean_image: torch.Tensor | None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (3, H, W) image -> augmented float32 (3, S, S) network input of ``preset``.

    ``"paper"``: shorter side sampled in ``resize_range``, random S x S crop, horizontal flip with
    probability 1/2, [0, 1] floats, AlexNet lighting, minus ``mean_image`` (required).
    ``"torchvision"``: RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3), flip, channel mean / std
    (``mean_image`` ignored).
    """
    preset = _check_preset(preset)
    if preset == "paper":
        return v2.Compose([
            RandomShortSideResize(*sizes.resize_range),
            v2.RandomCrop(sizes.image_size),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            Lighting(),
            SubtractMeanImage(_checked_mean_image(mean_image, sizes)),
        ])
    return v2.Compose([
        v2.RandomResizedCrop(sizes.image_size, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_CHANNEL_MEAN, IMAGENET_CHANNEL_STD),
    ])


def eval_transform(preset: str, sizes: ImageSizes, mean_image: torch.Tensor | None, crops: int
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (3, H, W) image -> float32 test view(s): shorter side to ``eval_resize``, then crops.

    ``crops=1``: the centre crop, (3, S, S). ``crops=10``: the standard 10-crop testing of [21], (10, 3, S, S):
    the 4 corner crops and the centre crop (0-4), then the same five of the flipped image (5-9; crop 5 is the
    top-left of the flipped image, the flip of crop 1). Then the preset's normalisation, without augmentation.
    """
    preset = _check_preset(preset)
    if crops not in EVAL_CROPS:
        raise ConfigError(f"crops must be 1 (centre crop) or 10 (the paper's 10-crop testing); got {crops!r}")
    # The resize keeps the aspect ratio (AlexNet's [21] test images were squashed to 256x256 instead), as
    # fb.resnet.torch and torchvision do.
    views: list[Callable[..., torch.Tensor]] = [v2.Resize(sizes.eval_resize, antialias=True)]
    views += [v2.CenterCrop(sizes.image_size)] if crops == 1 else [v2.TenCrop(sizes.image_size), StackCrops()]
    return v2.Compose([*views, v2.ToDtype(torch.float32, scale=True), _normalization(preset, sizes, mean_image)])


def eval_view(sizes: ImageSizes) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 (3, H, W) -> uint8 (3, S, S): shorter side to ``eval_resize``, centre crop (no normalisation)."""
    return v2.Compose([v2.Resize(sizes.eval_resize, antialias=True), v2.CenterCrop(sizes.image_size)])


def _normalization(preset: str, sizes: ImageSizes, mean_image: torch.Tensor | None) -> torch.nn.Module:
    if preset == "paper":
        return SubtractMeanImage(_checked_mean_image(mean_image, sizes))
    return v2.Normalize(IMAGENET_CHANNEL_MEAN, IMAGENET_CHANNEL_STD)


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return preset


def _checked_mean_image(mean_image: torch.Tensor | None, sizes: ImageSizes) -> torch.Tensor:
    """``mean_image`` if it is a float (3, S, S) tensor; ConfigError saying how to get one otherwise."""
    expected = (3, sizes.image_size, sizes.image_size)
    if mean_image is None:
        raise ConfigError("the paper preset subtracts the per-pixel mean image; pass mean_image=pixel_mean(...) "
                          "of the training images, or use the torchvision preset")
    if not isinstance(mean_image, torch.Tensor) or tuple(mean_image.shape) != expected or \
            not mean_image.is_floating_point():
        got = tuple(mean_image.shape) if isinstance(mean_image, torch.Tensor) else type(mean_image).__name__
        raise ConfigError(f"mean_image must be a float tensor of shape {expected} (image_size "
                          f"{sizes.image_size}); got {got}: compute it with pixel_mean at this image size")
    return mean_image


# --- the per-pixel mean ---------------------------------------------------------------------------------------

def pixel_mean(root: Path, samples: Sequence[tuple[str, int]], sizes: ImageSizes, *, limit: int = 10_000,
               seed: int = 0, workers: int = 0) -> torch.Tensor:
    """The per-pixel mean image (3, S, S) float32 in [0, 1] of the test view of training images (Sec. 3.4).

    The view is :func:`eval_view` (shorter side ``eval_resize``, centre crop). Averaging every one of the 1.28M
    ImageNet images would take hours on a few cores, so a fixed random subset of ``limit`` images (drawn from
    ``seed``; all of them when there are fewer) is used: with 10k images the standard error of each pixel's
    mean is about 0.003 (pixel std ~0.27 / 100). Decoding runs in a DataLoader with ``workers`` processes;
    sums are float64.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive number of images; got {limit!r}")
    if not samples:
        raise ConfigError("pixel_mean needs at least one training image; the sample list is empty")
    chosen = _subset(samples, limit, seed)
    loader = DataLoader(_MeanViews(Path(root), chosen, eval_view(sizes)), batch_size=MEAN_BATCH,
                        num_workers=workers, collate_fn=_stack_or_error)
    total = torch.zeros(3, sizes.image_size, sizes.image_size, dtype=torch.float64)
    started = time.perf_counter()
    with tqdm(total=len(chosen), desc="per-pixel mean", unit="img", disable=None) as bar:
        for batch in loader:
            if isinstance(batch, str):
                raise CorruptImageError(batch)
            total += batch.sum(0, dtype=torch.float64)
            bar.update(len(batch))
    logger.info("per-pixel mean of %d training images in %.1f s", len(chosen), time.perf_counter() - started)
    # uint8 sums / 255: the mean of the views converted to [0, 1] floats.
    return (total / (255.0 * len(chosen))).to(torch.float32)


def _subset(samples: Sequence[tuple[str, int]], limit: int, seed: int) -> list[tuple[str, int]]:
    """All of ``samples`` when at most ``limit``, else a random ``limit`` of them (in path order) from ``seed``."""
    if len(samples) <= limit:
        return list(samples)
    chosen = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return [samples[index] for index in chosen.tolist()]


class _MeanViews(Dataset):
    """uint8 test views of image files; a corrupt file gives its one-line error message instead of a view.

    The message travels as a value because DataLoader re-raises a worker's exception with a multi-line
    traceback text as its message.
    """

    def __init__(self, root: Path, samples: Sequence[tuple[str, int]],
                 view: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.paths = [path for path, _ in samples]
        self.root = root
        self.view = view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | str:
        try:
            return self.view(read_image(self.root / self.paths[index]))
        except CorruptImageError as error:
            return str(error)


def _stack_or_error(batch: list[torch.Tensor | str]) -> torch.Tensor | str:
    errors = [item for item in batch if isinstance(item, str)]
    return errors[0] if errors else torch.stack(batch)
