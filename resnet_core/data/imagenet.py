"""ImageNet-style class folders of the paper's ImageNet experiments (He et al. 2015, Sec. 3.4 and 4.1).

"The models are trained on the 1.28 million training images, and evaluated on the 50k validation images"
of the 1000 ILSVRC 2012 classes. Here those images stay on disk as files and are decoded one by one, per
sample, in DataLoader workers (unlike CIFAR, Sec. 4.2, which is decoded once and held in memory):

- :func:`scan_image_folders` lists ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (any suffix of
  :data:`~resnet_core.data.image_folders.IMAGE_SUFFIXES`, in any case) of a folder, of its single subfolder,
  or of a ``.tar`` / ``.tar.gz`` / ``.tgz`` of such a tree, which is extracted once into the cache folder;
  classes are the sorted wnids of ``train/``, and their names come from ``LOC_synset_mapping.txt`` when it
  is there. Only ``os.scandir``: listing the 1.28M training files decodes nothing and stats nothing.
- :func:`read_image` decodes one file to uint8 RGB, grayscale and CMYK included (ImageNet holds both, and
  one PNG named ``.JPEG``).
- :class:`ImageFolderDataset` decodes and transforms sample ``index``; keyed by ``(epoch, index)`` its
  random augmentation is a pure function of ``(seed, epoch, index)``, whatever worker process computes it.

Which names are images, which are hidden, where the tree starts and how an image is decoded are the rules of
the CIFAR-style tree reader, :mod:`resnet_core.data.image_folders`, shared with it.
"""

from __future__ import annotations

import logging
import operator
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from resnet_core.data import cache, image_folders
from resnet_core.data.batches import stream_seed
from resnet_core.data.image_arrays import quote, short_reason
from resnet_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
"""Archive name endings (any case) extracted into the cache folder."""

SYNSET_MAPPING = "LOC_synset_mapping.txt"
"""The ILSVRC file of "<wnid> <name>, <other names>" lines, looked for beside ``train/`` and in the given folder."""

EXTRACTED_DIR = "extracted"
"""Subfolder of the cache folder holding extracted archives (one folder per archive version)."""

LAYOUT = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
"""The expected layout, as every message names it."""

CORRUPT_FIX = "remove or replace it, or pass --skip-corrupt to skip such files"
"""The end of every :class:`CorruptImageError` message."""

CorruptImageError = image_folders.CorruptImageError
"""An image file cannot be read or decoded (a :class:`DataError`); the message names the file and how to go on."""


@dataclass(frozen=True)
class ImageFolderIndex:
    """The labelled image files of an ImageNet-style tree, as paths relative to ``root`` (nothing decoded)."""

    root: Path  # the folder holding train/ and val/
    classes: tuple[str, ...]  # wnids (folder names of train/), sorted: label order
    class_names: tuple[str, ...]  # first name of each class in LOC_synset_mapping.txt, else its wnid
    train: tuple[tuple[str, int], ...]  # (path relative to root, label), sorted by path
    val: tuple[tuple[str, int], ...]
    description: str  # one line: what was found, counts, where

    @property
    def num_classes(self) -> int:
        """The number of classes (the width of the classifier's output layer)."""
        return len(self.classes)


def scan_image_folders(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
                       ) -> ImageFolderIndex:
    """List the train and val images at ``path``: a folder, its single subfolder, or a tar of either.

    An archive is extracted once into ``cache_dir`` (default ``$RESNET_CORE_CACHE`` or
    ``~/.cache/resnet_core``), under ``extracted/`` in a folder keyed by its path, size and modification time,
    and reused by later calls.
    """
    source = Path(path).expanduser()
    origin = ""
    if source.is_file():
        if not source.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"{quote(source)} is a file but not a {'/'.join(ARCHIVE_SUFFIXES)} archive; pass a folder "
                            f"holding {LAYOUT}, or an archive of one")
        folder, extracted = _extract_once(source, cache.resolve_cache_dir(cache_dir))
        origin = f" ({'extracted' if extracted else 'extracted earlier'} from the archive {quote(source)})"
        where = f"the archive {quote(source)}"
    elif source.is_dir():
        folder, where = source, quote(source)
    else:
        raise DataError(f"no image folders at {quote(source)} (no such file or folder); pass a folder holding "
                        f"{LAYOUT}, or a .tar/.tar.gz of one")
    root = image_folders.dir_tree_root(folder)
    if root is None:
        raise DataError(f"{where} holds no train/ folder (nor does its single subfolder); pass a folder holding "
                        f"{LAYOUT}, or a .tar/.tar.gz of one")
    index = _scan_tree(root, folder, origin)
    logger.info("%s", index.description)
    return index


def _scan_tree(root: Path, given: Path, origin: str) -> ImageFolderIndex:
    """The index of the tree at ``root``; ``given`` is the folder the user named (also searched for names)."""
    if not (root / "val").is_dir():
        raise DataError(f"{quote(root)} has train/ but no val/ folder; add val/<wnid>/ folders of validation images "
                        f"({LAYOUT})")
    train = _list_split(root, "train")
    val = _list_split(root, "val")
    classes = tuple(sorted(train))
    empty = [wnid for wnid in classes if not train[wnid]]
    if empty:
        raise DataError(f"the class folder {quote(root / 'train' / empty[0])} holds no images "
                        f"({', '.join(image_folders.IMAGE_SUFFIXES)}); add images or remove the folder")
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise DataError(f"val/ of {quote(root)} has class folders that train/ lacks ({_some(unknown)}); remove them "
                        "or add their training images")
    label = {wnid: number for number, wnid in enumerate(classes)}
    train_samples = tuple(sorted((path, label[wnid]) for wnid, paths in train.items() for path in paths))
    val_samples = tuple(sorted((path, label[wnid]) for wnid, paths in val.items() for path in paths))
    names, names_file = _class_names(classes, (root, given))
    notes = [f"class names from {names_file.name}" if names_file else f"no {SYNSET_MAPPING}, classes named by wnid"]
    missing = [wnid for wnid in classes if not val.get(wnid)]
    if missing:
        notes.append(f"{len(missing)} classes have no val images")
    description = (f"ImageNet-style class folders at {quote(root)}{origin}: {len(train_samples):,} train / "
                   f"{len(val_samples):,} val images, {len(classes)} classes; " + "; ".join(notes))
    return ImageFolderIndex(root=root, classes=classes, class_names=names, train=train_samples, val=val_samples,
                            description=" ".join(description.splitlines()))


def _list_split(root: Path, split: str) -> dict[str, list[str]]:
    """wnid -> image paths relative to ``root`` (POSIX) of ``root/split``; DataError for misplaced images."""
    classes: dict[str, list[str]] = {}
    loose: list[str] = []
    archives: list[str] = []
    with os.scandir(root / split) as entries:
        for entry in entries:
            if image_folders.is_hidden_name(entry.name):
                continue
            if entry.is_dir():
                classes[entry.name] = _images_under(Path(entry.path), f"{split}/{entry.name}")
            elif image_folders.is_image_name(entry.name):
                loose.append(entry.name)
            elif entry.name.lower().endswith(".tar"):
                archives.append(entry.name)
    if loose and split == "val":
        raise DataError(f"val/ of {quote(root)} holds {len(loose):,} images directly (the official flat ImageNet "
                        "validation layout); sort them into val/<wnid>/ folders first, e.g. with the labels of "
                        "LOC_val_solution.csv")
    if loose:
        raise DataError(f"{split}/ of {quote(root)} holds {len(loose):,} images directly (e.g. {quote(loose[0])}); "
                        f"put them in {split}/<wnid>/ class folders")
    if not classes:
        if archives:  # the official ILSVRC2012_img_train.tar unpacks to one .tar per class
            raise DataError(f"{split}/ of {quote(root)} holds .tar archives (e.g. {quote(archives[0])}) instead of "
                            f"class folders; extract each into {split}/<wnid>/")
        raise DataError(f"{split}/ of {quote(root)} holds no class folders; put its images in {split}/<wnid>/ "
                        f"({LAYOUT})")
    return classes


def _images_under(folder: Path, prefix: str) -> list[str]:
    """POSIX paths (starting with ``prefix``) of the images under ``folder``, subfolders included."""
    images: list[str] = []
    pending = [(folder, prefix)]
    while pending:
        current, relative = pending.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if image_folders.is_hidden_name(entry.name):
                    continue
                if image_folders.is_image_name(entry.name):
                    if entry.is_file():
                        images.append(f"{relative}/{entry.name}")
                elif entry.is_dir():
                    pending.append((Path(entry.path), f"{relative}/{entry.name}"))
    return images


def _class_names(classes: Sequence[str], folders: Sequence[Path]) -> tuple[tuple[str, ...], Path | None]:
    """The first name of each wnid in the first ``LOC_synset_mapping.txt`` of ``folders`` (else the wnid)."""
    for folder in folders:
        mapping = folder / SYNSET_MAPPING
        if not mapping.is_file():
            continue
        try:
            lines = mapping.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read the class names file {quote(mapping)} ({short_reason(error)}); fix or "
                            "remove it (classes are then named by their wnid)") from error
        names: dict[str, str] = {}
        for line in lines:
            parts = line.split(maxsplit=1)
            if len(parts) == 2:
                names[parts[0]] = parts[1].split(",")[0].strip() or parts[0]
        return tuple(names.get(wnid, wnid) for wnid in classes), mapping
    return tuple(classes), None


def _some(names: Sequence[str], shown: int = 5) -> str:
    """Up to ``shown`` names, comma-separated, with a count of the rest."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


# --- archives -------------------------------------------------------------------------------------------------

def _extract_once(archive: Path, cache_root: Path) -> tuple[Path, bool]:
    """The folder ``archive`` is extracted in, and whether this call extracted it (else it was there).

    The archive is extracted into a temporary folder beside the entry, then renamed into place: an entry
    that exists is complete. Two processes extracting at once (e.g. ranks of one job) both work; the first
    rename wins and the other's copy is dropped.
    """
    entry = cache.entry_path(cache_root / EXTRACTED_DIR, archive, cache.file_fingerprint(archive))
    if entry.is_dir():
        return entry, False
    staging: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        logger.info("extracting the archive %s once into %s", quote(archive), quote(entry))
        _extract_members(archive, staging)
        os.replace(staging, entry)
        staging = None
    except OSError as error:
        if entry.is_dir():  # another process won the race; its copy is as good
            return entry, False
        raise DataError(f"cannot extract the archive {quote(archive)} into {quote(entry.parent)} "
                        f"({short_reason(error)}); free space there, set {cache.CACHE_ENV} to a larger disk, or "
                        "extract it yourself and pass the folder") from error
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    cache.drop_older_entries(entry, "extraction")
    return entry, True


def _extract_members(archive: Path, target: Path) -> None:
    """Write the folders and regular files of ``archive`` under ``target``; links and devices are skipped.

    Every member path is checked first: an absolute path or one with ``..`` raises DataError, so nothing is
    ever written outside ``target``; since no link is created, no later member can be redirected either.
    """
    skipped = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                name = _safe_member_name(archive, member.name)
                if not name:
                    continue
                path = target.joinpath(*name.split("/"))
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    with open(path, "wb") as output:
                        if source is not None:
                            shutil.copyfileobj(source, output, length=1 << 20)
                else:
                    skipped += 1
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise image_folders.damaged_archive(archive, error) from error
    if skipped:
        logger.warning("skipped %d links or special files of the archive %s", skipped, quote(archive))


def _safe_member_name(archive: Path, name: str) -> str:
    """The normalised relative POSIX path of a member; DataError if it would land outside the target."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or "\x00" in name or (parts and parts[0].endswith(":")):
        raise DataError(f"the archive {quote(archive)} holds the unsafe member path {quote(name)} (absolute or with "
                        "'..'); refusing to extract it, pack the images with relative paths")
    cleaned = posixpath.normpath("/".join(parts))
    return "" if cleaned == "." else cleaned


# --- decoding -------------------------------------------------------------------------------------------------

def read_image(path: Path) -> torch.Tensor:
    """The image at ``path`` as uint8 (3, H, W) RGB; CorruptImageError naming it when it cannot be decoded.

    Decoded by :func:`~resnet_core.data.image_folders.decode_image`: torchvision's libjpeg-turbo / libpng
    decoders first (grayscale and CMYK converted to RGB), Pillow for anything they reject.
    """
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise CorruptImageError(f"cannot read the image {quote(path)} ({short_reason(error)}); {CORRUPT_FIX}"
                                ) from error
    return image_folders.decode_image(blob, quote(path), CORRUPT_FIX)


# --- dataset --------------------------------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """Decoded, transformed samples of an :class:`ImageFolderIndex` split: ``dataset[i]`` or ``dataset[epoch, i]``.

    With an ``(epoch, index)`` key the transform runs on the CPU generator seeded by ``stream_seed(seed,
    epoch, index)`` (the caller's random state is restored afterwards), so an augmented sample depends only
    on those three numbers, not on the worker process or the order of requests; resuming a run mid-epoch
    needs no saved loader state. With an int key the transform draws from the current random state.
    """

    def __init__(self, root: Path, samples: Sequence[tuple[str, int]],
                 transform: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0,
                 skip_corrupt: bool = False) -> None:
        if not callable(transform):
            raise ConfigError(f"transform must be callable (e.g. train_transform(...)); got {type(transform).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
        self.root = Path(root)
        self.transform = transform
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        # One byte-string array and one int64 array rather than a list of tuples: DataLoader workers forked
        # from this process then share the pages, where Python objects would be copied page by page as their
        # reference counts change (1.28M ImageNet paths).
        self._paths = np.array([os.fsencode(path) for path, _ in samples], dtype=np.bytes_)
        self._labels = np.array([label for _, label in samples], dtype=np.int64)
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self._labels)

    def path(self, index: int) -> Path:
        """The file of sample ``index``."""
        return self.root / os.fsdecode(self._paths[index])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        epoch, index = self._parse_key(key)
        path = self.path(index)
        try:
            image = read_image(path)
        except CorruptImageError as error:
            if not self.skip_corrupt:
                raise
            if str(path) not in self._warned:  # once per file and worker process
                self._warned.add(str(path))
                logger.warning("skipping a corrupt image: %s", error)
            return None
        label = int(self._labels[index])
        if epoch is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (torch.manual_seed would also reseed, and not restore, CUDA's), which
            # fork_rng restores on exit; torchvision's v2 transforms draw from it.
            torch.default_generator.manual_seed(stream_seed(self.seed, epoch, index))
            return self.transform(image), label

    def _parse_key(self, key: int | tuple[int, int]) -> tuple[int | None, int]:
        """(epoch or None, index in [0, len)) of a key; IndexError past the end (ends iteration)."""
        epoch: int | None = None
        if isinstance(key, tuple):
            if len(key) != 2:
                raise TypeError(f"a dataset key is an index or (epoch, index); got {key!r}")
            epoch, key = operator.index(key[0]), key[1]
            if epoch < 0:
                raise ValueError(f"epoch must be non-negative; got {epoch}")
        index = operator.index(key)
        count = len(self._labels)
        if not -count <= index < count:
            raise IndexError(f"index {index} is out of range for {count} images")
        return epoch, index % count


def collate_skipping(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """DataLoader ``collate_fn``: (images, int64 labels, number of skipped corrupt samples) of a batch.

    Samples that :class:`ImageFolderDataset` skipped (None) are dropped, so a batch may be smaller than asked;
    one whose every sample was skipped is returned as empty tensors (first dimension 0).
    """
    kept = [sample for sample in batch if sample is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), skipped
    images, labels = default_collate(kept)
    return images, labels.to(torch.int64), skipped
