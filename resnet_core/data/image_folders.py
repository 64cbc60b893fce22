"""Class-folder trees of image files (``train/<class>/*.png``, ``test/<class>/*.jpg``), in a folder or a tar.

The layout is the usual one of image classification sets: ``ROOT/train/<class>/...`` and ``ROOT/test/<class>/...``
(``val/`` when there is no ``test/``), ROOT being the given folder or its single subfolder, or the top level
or single top folder of a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive, read member by member without extracting.
Classes are the sorted folder names of ``train/``; labels follow that order (for CIFAR-10 the alphabetical
order is the official one). Images may have any size, the same for all (Sec. 4.2 uses 32x32), and are
converted to RGB.

Decoding uses torchvision's libjpeg-turbo decoder on batches of JPEGs (about 1.5 s for the 60,000 CIFAR
images on one core; Pillow needs about 4 s). Measured on two cores, a thread pool made it slower, because
the batched decoder holds the GIL and Pillow's per-image overhead is mostly Python, so one thread is used.
Other formats go through ``torchvision.io.decode_image``, then Pillow (BMP and anything torchvision rejects).

Also the rules both tree readers share (this one for CIFAR-style trees, :mod:`resnet_core.data.imagenet` for
ImageNet's ``train/<wnid>/`` + ``val/<wnid>/``): which names are images (:func:`is_image_name`) and which are
hidden (:func:`is_hidden_name`), where a tree starts in a folder or archive (:func:`find_tree_root`), and how
one image is decoded (:func:`decode_image`).
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from resnet_core.data.image_arrays import RawImageSet, quote, short_reason
from resnet_core.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
"""File name endings (any case) read as images; other files in the tree are ignored."""

TEST_SPLITS = ("test", "val")
"""Folder names accepted for the held-out split, in order of preference."""

JPEG_BATCH = 1024
"""JPEGs handed to the batched decoder at once."""

_JPEG_MAGIC = b"\xff\xd8\xff"
_TORCHVISION_CODEC_NOTICE = "The image decoding and encoding capabilities of TorchVision are deprecated"
_FORMAT_NAMES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".webp": "WebP"}
_HIDDEN_NAMES = ("__MACOSX",)  # macOS archive metadata, besides names starting with "."


class CorruptImageError(DataError):
    """An image file cannot be read or decoded; the message names the file and how to go on."""


@dataclass(frozen=True)
class TarContents:
    """What a tar archive holds: every file and folder name, and the bytes of the members kept."""

    files: tuple[str, ...]
    folders: frozenset[str]
    blobs: dict[str, bytes]


@dataclass(frozen=True)
class TreePlan:
    """The images of a class-folder tree: paths relative to the tree's container, in label order."""

    root: str  # ROOT relative to the container ("" for the container itself)
    test_split: str  # "test" or "val"
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (relative path, label)
    test: tuple[tuple[str, int], ...]

    @property
    def folders(self) -> str:
        """The two split folders, for descriptions: e.g. "cifar10-jpeg/train/ + cifar10-jpeg/test/"."""
        return " + ".join(posixpath.join(self.root, split) + "/" for split in ("train", self.test_split))


def is_image_name(name: str) -> bool:
    """Whether the file ``name`` (a base name or a POSIX path) is an image the tree readers use.

    Its base name ends with one of :data:`IMAGE_SUFFIXES` (any case) and is not hidden (:func:`is_hidden_name`).
    """
    base = posixpath.basename(name)
    return not is_hidden_name(base) and base.lower().endswith(IMAGE_SUFFIXES)


def is_hidden_name(name: str) -> bool:
    """Whether a file or folder name is skipped by the tree readers: a dot file or macOS's ``__MACOSX``."""
    return name.startswith(".") or name in _HIDDEN_NAMES


def read_tar(archive: Path, keep: Callable[[str], bool]) -> TarContents:
    """Scan ``archive`` once, in order, keeping the bytes of the file members whose name ``keep`` accepts."""
    files: list[str] = []
    folders: set[str] = set()
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                name = _clean_member_name(member.name)
                if member.isdir():
                    folders.add(name)
                elif member.isfile():
                    files.append(name)
                    if keep(name):
                        handle = tar.extractfile(member)
                        blobs[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise damaged_archive(archive, error) from error
    return TarContents(tuple(files), frozenset(folders), blobs)


def damaged_archive(archive: Path, error: BaseException) -> DataError:
    """The error for an archive that cannot be read as a tar, quoting ``error``."""
    return DataError(f"cannot read the archive {quote(archive)} ({short_reason(error)}); it is damaged or not a tar "
                     "archive, download or create it again")


def _clean_member_name(name: str) -> str:
    cleaned = posixpath.normpath(name).lstrip("/")
    return "" if cleaned == "." else cleaned


def find_tree_root(holds_train: Callable[[str], bool], subfolders: Callable[[], Iterable[str]]) -> str | None:
    """Where a tree starts in a container (a folder or an archive): the folder name relative to it, or None.

    The container itself ("") when ``holds_train("")``, else its single visible subfolder (loose files and
    hidden folders ignored, see :func:`is_hidden_name`) when that one holds ``train/``. ``subfolders`` is only
    called when the container itself does not hold ``train/``.
    """
    if holds_train(""):
        return ""
    visible = {name for name in subfolders() if name and not is_hidden_name(name)}
    if len(visible) == 1:
        (top,) = visible
        if holds_train(top):
            return top
    return None


def tar_tree_root(contents: TarContents) -> str | None:
    """ROOT of a class-folder tree in a tar: its top level or single top folder holding ``train/`` files."""
    def holds_train(folder: str) -> bool:
        prefix = posixpath.join(folder, "train") + "/"
        return any(name.startswith(prefix) for name in contents.files)

    def top_folders() -> set[str]:
        nested = {name.split("/", 1)[0] for name in contents.files if "/" in name}
        return nested | {name.split("/", 1)[0] for name in contents.folders}

    return find_tree_root(holds_train, top_folders)


def dir_tree_root(directory: Path) -> Path | None:
    """ROOT of a class-folder tree in ``directory``: itself or its single subfolder, holding ``train/``."""
    def subfolders() -> list[str]:
        with os.scandir(directory) as entries:
            return [entry.name for entry in entries if entry.is_dir()]

    root = find_tree_root(lambda folder: (directory / folder / "train").is_dir(), subfolders)
    return None if root is None else directory / root


def list_dir_tree(root: Path) -> tuple[list[str], set[str]]:
    """Relative POSIX paths of the files and the folders under ``root``'s split folders."""
    files: list[str] = []
    folders: set[str] = set()
    for split in ("train", *TEST_SPLITS):
        for current, dirnames, filenames in os.walk(root / split):
            relative = Path(current).relative_to(root).as_posix()
            folders.add(relative)
            dirnames[:] = [name for name in dirnames if not is_hidden_name(name)]
            files.extend(f"{relative}/{name}" for name in filenames)
    return files, folders


def plan_tree(files: Iterable[str], folders: Iterable[str], root: str, where: str) -> TreePlan:
    """Classes and labelled images of the tree at ``root`` among container paths ``files`` / ``folders``."""
    prefix = f"{root}/" if root else ""
    relative_files = [name[len(prefix):] for name in files if name.startswith(prefix)]
    relative_folders = [name[len(prefix):] for name in folders if name.startswith(prefix)]
    test_split = next((split for split in TEST_SPLITS
                       if any(name == split or name.startswith(f"{split}/")
                              for name in (*relative_files, *relative_folders))), None)
    if test_split is None:
        raise DataError(f"the image tree {quote(where)} has train/ but no test/ (or val/) folder of class "
                        "folders; add test/<class>/ images")
    train_images, train_classes = _split_images(relative_files, relative_folders, "train", where)
    test_images, test_classes = _split_images(relative_files, relative_folders, test_split, where)
    if train_classes != test_classes:
        only_train = ", ".join(sorted(train_classes - test_classes)) or "none"
        only_test = ", ".join(sorted(test_classes - train_classes)) or "none"
        raise DataError(f"train/ and {test_split}/ of the image tree {quote(where)} hold different class folders "
                        f"(only in train/: {only_train}; only in {test_split}/: {only_test}); give both the "
                        "same class folders")
    classes = tuple(sorted(train_classes))
    label = {name: index for index, name in enumerate(classes)}
    return TreePlan(root=root, test_split=test_split, classes=classes,
                    train=tuple((prefix + path, label[cls]) for cls, path in train_images),
                    test=tuple((prefix + path, label[cls]) for cls, path in test_images))


def _split_images(files: Sequence[str], folders: Sequence[str], split: str,
                  where: str) -> tuple[list[tuple[str, str]], set[str]]:
    """(class, path) of the images of ``split``, sorted, and the class folder names found in it."""
    classes = {name.split("/")[1] for name in folders if name.count("/") >= 1 and name.startswith(f"{split}/")}
    images: list[tuple[str, str]] = []
    for name in files:
        parts = name.split("/")
        if parts[0] != split or len(parts) < 3 or any(is_hidden_name(part) for part in parts[1:]):
            continue
        classes.add(parts[1])
        if is_image_name(name):
            images.append((parts[1], name))
    classes = {name for name in classes if not is_hidden_name(name)}
    if not classes:
        raise DataError(f"{split}/ of the image tree {quote(where)} holds no class folders; put the images in "
                        f"{split}/<class>/ folders")
    counts = Counter(cls for cls, _ in images)
    empty = sorted(cls for cls in classes if not counts[cls])
    if empty:
        raise DataError(f"the class folder {split}/{empty[0]} of the image tree {quote(where)} holds no images "
                        f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
    return sorted(images), classes


def image_formats(plan: TreePlan) -> str:
    """The image formats of a tree, e.g. "JPEG" or "JPEG+PNG", from the file name endings."""
    formats = {_FORMAT_NAMES[posixpath.splitext(name)[1].lower()] for name, _ in (*plan.train, *plan.test)}
    return "+".join(sorted(formats))


def read_dir_files(root: Path, names: Sequence[str]) -> list[bytes]:
    """The bytes of the files ``names`` (relative to ``root``)."""
    blobs = []
    for name in names:
        try:
            blobs.append((root / name).read_bytes())
        except OSError as error:
            raise DataError(f"cannot read the image {quote(root / name)} ({short_reason(error)}); check its "
                            "permissions or remove it") from error
    return blobs


def decode_tree(plan: TreePlan, blobs: Sequence[bytes], where: str, kind: str) -> RawImageSet:
    """Decode the images of ``plan`` (``blobs`` in train-then-test order) into a :class:`RawImageSet`."""
    names = [name for name, _ in (*plan.train, *plan.test)]
    images = decode_images(names, blobs, where)
    count = len(plan.train)
    return RawImageSet(
        train_images=images[:count], train_labels=np.array([lbl for _, lbl in plan.train], dtype=np.int64),
        test_images=images[count:], test_labels=np.array([lbl for _, lbl in plan.test], dtype=np.int64),
        classes=plan.classes, kind=kind, notes=(f"folders {plan.folders}",))


def decode_images(names: Sequence[str], blobs: Sequence[bytes], where: str) -> np.ndarray:
    """Decode encoded images into one uint8 (N, 3, H, W) array; all must share one size."""
    with _quiet_codecs():
        images = _decode_all(names, blobs, where)
    _check_same_size(names, images, where)
    return torch.stack(images).numpy()


def decode_image(blob: bytes, label: str, fix: str) -> torch.Tensor:
    """Decode one encoded image to uint8 (3, H, W) RGB: torchvision, else Pillow; grayscale and CMYK converted.

    When neither can, raise :class:`CorruptImageError` "cannot decode the image <label> (<reason>); <fix>":
    ``label`` names the file (quoted), ``fix`` says what to do about it.
    """
    with _quiet_codecs():
        return _decode_one(_torchvision_codecs(), blob, label, fix)


@contextmanager
def _quiet_codecs() -> Iterator[None]:
    """Silence the deprecation warning torchvision 0.29+ gives on every call of its image codecs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_CODEC_NOTICE, category=DeprecationWarning)
        yield


def _decode_all(names: Sequence[str], blobs: Sequence[bytes], where: str) -> list[torch.Tensor]:
    """Batched torchvision decoding of the JPEGs, then one by one for the rest and for failed batches."""
    codecs = _torchvision_codecs()
    decoded: list[torch.Tensor | None] = [None] * len(blobs)
    jpegs = [index for index, blob in enumerate(blobs) if blob[:3] == _JPEG_MAGIC] if codecs else []
    for start in range(0, len(jpegs), JPEG_BATCH):
        chunk = jpegs[start:start + JPEG_BATCH]
        for index, image in zip(chunk, _decode_jpeg_batch(codecs, [blobs[index] for index in chunk])):
            decoded[index] = image
    images: list[torch.Tensor] = []
    for index, image in enumerate(decoded):
        if image is None:
            image = _decode_one(codecs, blobs[index], f"{quote(names[index])} in {quote(where)}",
                                "replace or remove the file")
        images.append(image)
    return images


@cache
def _torchvision_codecs() -> ModuleType | None:
    """``torchvision.io`` when it still offers its image decoders, else None (then Pillow decodes)."""
    try:
        from torchvision import io as tv_io  # heavy import, only needed here
    except ImportError:
        return None
    has_codecs = all(hasattr(tv_io, name) for name in ("decode_jpeg", "decode_image", "ImageReadMode"))
    return tv_io if has_codecs else None


def _as_tensor(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def _decode_jpeg_batch(codecs: ModuleType, blobs: Sequence[bytes]) -> list[torch.Tensor | None]:
    """Decode JPEGs in one call; on any failure return Nones, so each is retried on its own and named."""
    try:
        return list(codecs.decode_jpeg([_as_tensor(blob) for blob in blobs], mode=codecs.ImageReadMode.RGB))
    except (RuntimeError, ValueError):
        return [None] * len(blobs)


def _decode_one(codecs: ModuleType | None, blob: bytes, label: str, fix: str) -> torch.Tensor:
    """:func:`decode_image` with the torchvision codecs given (None: Pillow only) and warnings left as they are."""
    if codecs is not None and blob:
        try:
            image = codecs.decode_image(_as_tensor(blob), mode=codecs.ImageReadMode.RGB)
        except (RuntimeError, ValueError):
            image = None  # e.g. BMP, which torchvision does not read: Pillow's turn
        if image is not None and image.dtype == torch.uint16:  # 16-bit PNG
            image = (image.to(torch.int32) * 255 // 65535).to(torch.uint8)
        if image is not None and image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3:
            return image
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as opened:
            array = np.asarray(opened.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptImageError(f"cannot decode the image {label} ({short_reason(error)}); {fix}") from error
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _check_same_size(names: Sequence[str], images: Sequence[torch.Tensor], where: str) -> None:
    """Raise DataError naming one image whose size differs from the most common size."""
    sizes = Counter(tuple(image.shape[1:]) for image in images)
    if len(sizes) <= 1:
        return
    (height, width), _ = sizes.most_common(1)[0]
    index = next(i for i, image in enumerate(images) if tuple(image.shape[1:]) != (height, width))
    odd_height, odd_width = images[index].shape[1:]
    raise DataError(f"the image {quote(names[index])} in {quote(where)} is {odd_width}x{odd_height} pixels but "
                    f"most images are {width}x{height}; all images must have one size, resize or remove it")
