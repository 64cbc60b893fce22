"""Find and load the CIFAR images of the paper's experiments (He et al. 2015, Sec. 4.2) from what the user has.

"The network inputs are 32x32 images" of CIFAR-10: 50k training and 10k test images in 10 classes.
:func:`load_image_dataset` accepts, detected automatically:

1. the official CIFAR-10 / CIFAR-100 python version: its folder (``cifar-10-batches-py``,
   ``cifar-100-python``), a folder holding it (as torchvision's ``root``), the official ``.tar.gz`` or a
   folder holding that; files are checked against the official MD5 list (a difference is only a warning);
2. the official binary version (``cifar-10-batches-bin``, ``cifar-100-binary`` or their ``.tar.gz``);
3. a class-folder tree ``train/<class>/*.png`` + ``test/<class>/*.png`` (``val/`` accepted) of images of any
   one size, in a folder or a ``.tar`` / ``.tar.gz`` / ``.tgz``, decoded once and then cached;
4. nothing: then, if allowed, torchvision's checksum-verified download of the official python version.

Every failure a user can fix raises :class:`~resnet_core.errors.DataError` with a one-line message.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_core.data import cache, cifar_archives, image_folders
from resnet_core.data.image_arrays import RawImageSet, quote, short_reason
from resnet_core.errors import DataError
from resnet_core.options import CIFAR_DATASETS, DATASET_TITLES

logger = logging.getLogger(__name__)

DATASETS = CIFAR_DATASETS
"""Dataset names :func:`load_image_dataset` can download; folder trees may hold any classes."""

DOWNLOAD_TIMEOUT_S = 8.0
"""Socket timeout of the download, so that it fails within seconds on a machine without network."""

_TITLES = DATASET_TITLES


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image set held in memory, as the CIFAR pipeline of the paper (Sec. 4.2) consumes it."""

    train_images: torch.Tensor  # uint8, shape (N, 3, H, W), contiguous
    train_labels: torch.Tensor  # int64, shape (N,)
    test_images: torch.Tensor  # uint8, (M, 3, H, W)
    test_labels: torch.Tensor  # int64, (M,)
    classes: tuple[str, ...]  # class names in label order
    description: str  # one line saying what was found

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            raise DataError(f"classes must be a sequence of class names, not the single string {self.classes!r}")
        object.__setattr__(self, "classes", tuple(self.classes))
        if not self.classes or not all(isinstance(name, str) for name in self.classes):
            raise DataError(f"an image set needs at least one class name, all str; got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"the class names of an image set must be distinct; got {self.classes!r}")
        if not isinstance(self.description, str) or "\n" in self.description or "\r" in self.description:
            raise DataError("the description of an image set must be a single line of text")
        _check_split("train", self.train_images, self.train_labels, len(self.classes))
        _check_split("test", self.test_images, self.test_labels, len(self.classes))
        if self.train_images.shape[2:] != self.test_images.shape[2:]:
            raise DataError(f"train images are {_size(self.train_images)} but test images {_size(self.test_images)}; "
                            "both splits need one image size")

    @property
    def num_classes(self) -> int:
        """The number of classes (the width of the classifier's output layer)."""
        return len(self.classes)


def _check_split(split: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """Raise DataError unless ``images`` / ``labels`` are a valid uint8 (N, 3, H, W) / int64 (N,) pair."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(f"{split} images and labels must be torch tensors, got {type(images).__name__} and "
                        f"{type(labels).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3 or not images.is_contiguous():
        raise DataError(f"{split} images must be a contiguous uint8 tensor (N, 3, H, W); got {images.dtype} "
                        f"{tuple(images.shape)}")
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise DataError(f"{split} labels must be int64 of shape ({images.shape[0]},); got {labels.dtype} "
                        f"{tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise DataError(f"the {split} split holds no images")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(f"{split} labels span [{low}, {high}] but there are {num_classes} classes; labels must "
                        f"lie in [0, {num_classes - 1}]")


def _size(images: torch.Tensor) -> str:
    return f"{images.shape[3]}x{images.shape[2]}"


def load_image_dataset(path: str | os.PathLike[str], *, dataset: str = "cifar10", download: bool = True,
                       cache_dir: str | os.PathLike[str] | None = None, path_option: str = "--data") -> ImageDataset:
    """Load the images at ``path`` (any layout of the module docstring), downloading ``dataset`` if absent.

    ``dataset`` only matters for the official formats (which of CIFAR-10 / CIFAR-100 to prefer when a folder
    holds both, and what to download); data of the other one is used as found and the description says so.
    ``cache_dir`` holds decoded image trees (default ``$RESNET_CORE_CACHE`` or ``~/.cache/resnet_core``).
    ``path_option`` is how the caller's command takes ``path``, named by the advice of a "no data" error (the
    single-run CLI's ``--data``; the study's ``--set dataset.path=PATH``).
    """
    name = _dataset_name(dataset)
    source = Path(path).expanduser()
    cache_root = cache.resolve_cache_dir(cache_dir)
    hint = _local_copy_hint(name, path_option)
    found = _read_source(source, name, cache_root, hint)
    raw, location = found if found is not None else _download_or_fail(source, name, download, hint)
    result = _to_dataset(raw, location, name)
    logger.info("%s", result.description)
    return result


def _dataset_name(dataset: str) -> str:
    name = str(dataset).lower().replace("-", "").replace("_", "")
    if name not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return name


def _read_source(source: Path, dataset: str, cache_root: Path, hint: str) -> tuple[RawImageSet, str] | None:
    """The image set at ``source`` with a phrase locating it, or None when there is nothing to read."""
    if source.is_file():
        return _read_archive(source, dataset, cache_root, hint), f"in the archive {quote(source)}"
    if source.is_dir():
        return _read_directory(source, dataset, cache_root, hint)
    return None


def _read_directory(directory: Path, dataset: str, cache_root: Path, hint: str) -> tuple[RawImageSet, str] | None:
    """Official folder, folder holding one, folder holding an official archive, or class-folder tree."""
    layout = cifar_archives.layout_in_dir(directory, dataset)
    if layout is not None:
        logger.info("found the %s official %s version at %s", layout.title, layout.version, quote(directory))
        return cifar_archives.read_layout_dir(directory, layout), f"at {quote(directory)}"
    for layout in cifar_archives.layouts_preferring(dataset):  # the asked-for dataset first, folder or archive
        folder, archive = directory / layout.folder, directory / layout.archive
        if folder.is_dir():
            logger.info("found the %s official %s version at %s", layout.title, layout.version, quote(folder))
            return cifar_archives.read_layout_dir(folder, layout), f"at {quote(folder)}"
        if archive.is_file():
            return _read_archive(archive, dataset, cache_root, hint), f"in the archive {quote(archive)}"
    root = image_folders.dir_tree_root(directory)
    if root is None:
        return None
    return _read_dir_tree(root, cache_root), f"at {quote(root)}"


def _read_archive(archive: Path, dataset: str, cache_root: Path, hint: str) -> RawImageSet:
    """An official CIFAR archive or a tar of a class-folder tree (cached after its first decode)."""
    entry = cache.entry_path(cache_root, archive, cache.file_fingerprint(archive))
    cached = cache.load_entry(entry)
    if cached is not None:
        return cached
    started = time.perf_counter()
    contents = image_folders.read_tar(archive, _worth_keeping)
    official = cifar_archives.layout_in_members(contents.files, dataset)
    if official is not None:
        layout, folder = official
        logger.info("found the %s official %s version in the archive %s", layout.title, layout.version,
                    quote(archive))
        return cifar_archives.read_layout_members(archive, layout, folder, contents.blobs)
    root = image_folders.tar_tree_root(contents)
    if root is None:
        raise DataError(f"the archive {quote(archive)} holds neither official CIFAR files nor a train/<class>/ + "
                        f"test/<class>/ image tree at its top or in its single top folder; {hint}")
    where = f"{archive}:{root}" if root else str(archive)
    plan = image_folders.plan_tree(contents.files, contents.folders, root, where)
    logger.info("found a class-folder tree of %d images in %d classes in the archive %s; decoding",
                len(plan.train) + len(plan.test), len(plan.classes), quote(archive))
    blobs = [contents.blobs[name] for name, _ in (*plan.train, *plan.test)]
    raw = image_folders.decode_tree(plan, blobs, str(archive), _tree_kind(plan))
    return _cache_decoded(entry, raw, started)


def _worth_keeping(name: str) -> bool:
    """Tar members to hold in memory while scanning: official CIFAR files and images."""
    return name.rsplit("/", 1)[-1] in cifar_archives.OFFICIAL_FILE_NAMES or image_folders.is_image_name(name)


def _read_dir_tree(root: Path, cache_root: Path) -> RawImageSet:
    """A class-folder tree in a folder, from the cache when its files are unchanged."""
    files, folders = image_folders.list_dir_tree(root)
    plan = image_folders.plan_tree(files, folders, "", str(root))
    names = [name for name, _ in (*plan.train, *plan.test)]
    entry = cache.entry_path(cache_root, root, _tree_fingerprint(root, names))
    cached = cache.load_entry(entry)
    if cached is not None:
        return cached
    started = time.perf_counter()
    logger.info("found a class-folder tree of %d images in %d classes at %s; decoding", len(names),
                len(plan.classes), quote(root))
    raw = image_folders.decode_tree(plan, image_folders.read_dir_files(root, names), str(root), _tree_kind(plan))
    return _cache_decoded(entry, raw, started)


def _tree_fingerprint(root: Path, names: list[str]) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of each image of a tree: any change of an image changes the key."""
    rows = []
    for name in names:
        try:
            stat = (root / name).stat()
        except OSError as error:
            raise DataError(f"cannot read the image {quote(root / name)} ({short_reason(error)}); check its "
                            "permissions or remove it") from error
        rows.append((name, stat.st_size, stat.st_mtime_ns))
    return rows


def _tree_kind(plan: image_folders.TreePlan) -> str:
    return f"class-folder tree of {image_folders.image_formats(plan)} images"


def _cache_decoded(entry: Path, raw: RawImageSet, started: float) -> RawImageSet:
    """Store a freshly decoded tree in the cache and note the decode time in its description."""
    seconds = time.perf_counter() - started
    logger.info("read and decoded %d images in %.1f s", len(raw.train_labels) + len(raw.test_labels), seconds)
    if cache.save_entry(entry, raw):
        return raw._replace(notes=(*raw.notes, f"read and decoded in {seconds:.1f} s, cached at {quote(entry)}"))
    return raw._replace(notes=(*raw.notes, f"read and decoded in {seconds:.1f} s (not cached)"))


def _to_dataset(raw: RawImageSet, location: str, dataset: str) -> ImageDataset:
    """Wrap ``raw`` as tensors with its one-line description."""
    train, test = len(raw.train_labels), len(raw.test_labels)
    height, width = raw.train_images.shape[2:]
    notes = list(raw.notes)
    if raw.dataset is not None and raw.dataset != dataset:
        notes.append(f"{dataset} was asked for but {_TITLES[raw.dataset]} was found; using it")
        logger.warning("asked for %s but found %s data %s; using it", dataset, _TITLES[raw.dataset], location)
    description = (f"{raw.kind} {location}: {train:,} train / {test:,} test images, {len(raw.classes)} classes, "
                   f"{width}x{height}" + "".join(f"; {note}" for note in notes))
    return ImageDataset(
        train_images=torch.from_numpy(np.ascontiguousarray(raw.train_images)),
        train_labels=torch.from_numpy(np.ascontiguousarray(raw.train_labels, dtype=np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(raw.test_images)),
        test_labels=torch.from_numpy(np.ascontiguousarray(raw.test_labels, dtype=np.int64)),
        classes=raw.classes, description=description.replace("\n", " ").replace("\r", " "))


def _local_copy_hint(dataset: str, path_option: str) -> str:
    """The end of every "no data" message: what ``path_option`` (``--data``) may point at."""
    archive = _python_layout(dataset).archive
    return (f"pass {path_option} with a local copy: the official python archive ({archive} or its extracted folder), "
            "a class-folder tree train/<class>/*.png + test/<class>/*.png, or a .tar.gz of such a tree")


def _python_layout(dataset: str) -> cifar_archives.CifarLayout:
    return next(layout for layout in cifar_archives.LAYOUTS if layout.dataset == dataset and layout.version == "python")


_DOWNLOAD_ERRORS = (OSError, RuntimeError, EOFError, tarfile.TarError, zlib.error, http.client.HTTPException)
"""What a failed download raises: network errors (URLError and timeouts are OSErrors), bad checksums
(torchvision's RuntimeError), truncated archives."""


def _download_or_fail(source: Path, dataset: str, download: bool, hint: str) -> tuple[RawImageSet, str]:
    """Download ``dataset`` into ``source`` and read it, or raise the one-line DataError saying what to pass."""
    title, layout = _TITLES[dataset], _python_layout(dataset)
    if not download or (source.exists() and not source.is_dir()):
        why = ("no such file or folder" if not source.exists()
               else "the folder holds no official CIFAR files or archive and no train/<class>/ image tree")
        raise DataError(f"no {title} data at {quote(source)} ({why}); {hint}")
    try:
        folder = _download(source, dataset)
    except _DOWNLOAD_ERRORS as error:
        raise DataError(f"no {title} data at {quote(source)} and the download failed ({short_reason(error)}); "
                        f"{hint}") from error
    return cifar_archives.read_layout_dir(folder, layout), f"at {quote(folder)} (downloaded)"


def _download(root: Path, dataset: str) -> Path:
    """Download and extract the official python version into ``root`` with torchvision; its folder.

    torchvision fetches into a staging folder inside ``root`` and verifies the MD5 of the archive; only
    the extracted folder is moved into place, so a failed download leaves nothing behind (not even
    ``root`` when this call created it).
    """
    from torchvision.datasets import CIFAR10, CIFAR100  # heavy import, only needed here

    reference = CIFAR10 if dataset == "cifar10" else CIFAR100
    created = not root.exists()
    logger.info("no %s data at %s; downloading the official python version", _TITLES[dataset], quote(root))
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            reference(root=str(staging), train=True, download=True)
        os.replace(staging / reference.base_folder, root / reference.base_folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with suppress(OSError):
                root.rmdir()  # only if still empty
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return root / reference.base_folder


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets opened inside the block a default timeout (urllib opens them without one)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
