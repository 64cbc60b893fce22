"""Readers of the official CIFAR-10 / CIFAR-100 releases (Krizhevsky 2009), python and binary versions.

The paper's CIFAR experiments (He et al. 2015, Sec. 4.2) train on the 50k training images and test on the
10k test images; "the network inputs are 32x32 images". Both official versions store exactly that:

* python version (``cifar-10-batches-py/``, ``cifar-100-python/``): Python-2 pickles of dicts whose
  ``data`` is an (N, 3072) uint8 array of row-major R, G, B planes of 32x32 pixels;
* binary version (``cifar-10-batches-bin/``, ``cifar-100-binary/``): fixed-size records of label byte(s)
  followed by the same 3072 pixel bytes.

Files are read from a folder or straight from the members of the official ``.tar.gz`` (no extraction).
Reading is unpickling (or a reshape of the records) after at most a gzip decompression: measured for a
full-size CIFAR-10 python copy, about 1.5 s from the folder and 3 s from the ``.tar.gz``. These formats are
therefore not cached: a cache would duplicate 180 MB on disk to save a second or two of a run that trains
for hours.

Pickles are loaded with an unpickler that only admits the numpy array constructors, so a tampered file
cannot run code. The python files are compared with torchvision's MD5 list of the official release; a
difference is logged as a warning (a re-packed copy is allowed), never an error.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib
import io
import logging
import pickle
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_core.data.image_arrays import RawImageSet, quote, short_reason
from resnet_core.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SIDE = 32
"""CIFAR images are 32x32 RGB (Sec. 4.2: "The network inputs are 32x32 images")."""

PIXELS_PER_IMAGE = 3 * IMAGE_SIDE * IMAGE_SIDE

_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})
"""The only globals a CIFAR pickle needs: numpy's array reconstruction and Python 3's bytes encoding."""


@dataclass(frozen=True)
class CifarLayout:
    """One official CIFAR release: its folder and archive names, files and how labels are stored."""

    title: str  # "CIFAR-10"
    dataset: str  # "cifar10"
    version: str  # "python" or "binary"
    folder: str  # top folder of the official archive
    archive: str  # official archive file name
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    names_file: str  # pickle holding the class names (python) or text file, one name per line (binary)
    names_key: str = ""  # python version: the key of the class-name list in ``names_file``
    labels_key: str = ""  # python version: the key of the label list in each batch
    label_bytes: int = 1  # binary version: label bytes before the pixels of a record; the last one is used

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the release, in reading order."""
        return (*self.train_files, *self.test_files, self.names_file)

    @property
    def record_bytes(self) -> int:
        """Bytes per image record of the binary version."""
        return self.label_bytes + PIXELS_PER_IMAGE


LAYOUTS: tuple[CifarLayout, ...] = (
    CifarLayout("CIFAR-10", "cifar10", "python", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                tuple(f"data_batch_{k}" for k in range(1, 6)), ("test_batch",), "batches.meta",
                names_key="label_names", labels_key="labels"),
    CifarLayout("CIFAR-100", "cifar100", "python", "cifar-100-python", "cifar-100-python.tar.gz",
                ("train",), ("test",), "meta", names_key="fine_label_names", labels_key="fine_labels"),
    CifarLayout("CIFAR-10", "cifar10", "binary", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                tuple(f"data_batch_{k}.bin" for k in range(1, 6)), ("test_batch.bin",), "batches.meta.txt"),
    CifarLayout("CIFAR-100", "cifar100", "binary", "cifar-100-binary", "cifar-100-binary.tar.gz",
                ("train.bin",), ("test.bin",), "fine_label_names.txt", label_bytes=2),
)

OFFICIAL_FILE_NAMES = frozenset(name for layout in LAYOUTS for name in layout.files)
"""Base names of all official files: the members worth keeping when scanning an unknown tar."""


def layouts_preferring(dataset: str) -> tuple[CifarLayout, ...]:
    """All layouts, those of ``dataset`` first, python version before binary within each dataset."""
    return tuple(sorted(LAYOUTS, key=lambda layout: layout.dataset != dataset))


def layout_in_dir(directory: Path, dataset: str) -> CifarLayout | None:
    """The official layout whose files (any of them) lie directly in ``directory``, else None."""
    for layout in layouts_preferring(dataset):
        if any((directory / name).is_file() for name in layout.files):
            return layout
    return None


def layout_in_members(names: Iterable[str], dataset: str) -> tuple[CifarLayout, str] | None:
    """The official layout found among tar member ``names``, with the folder (prefix) holding it."""
    folders: dict[str, set[str]] = {}
    for name in names:
        folder, base = posixpath.split(name)
        if base in OFFICIAL_FILE_NAMES:
            folders.setdefault(folder, set()).add(base)
    for layout in layouts_preferring(dataset):
        for folder, bases in sorted(folders.items()):
            if bases & set(layout.files):
                return layout, folder
    return None


def read_layout_dir(directory: Path, layout: CifarLayout) -> RawImageSet:
    """Read the official ``layout`` from its extracted ``directory``."""
    missing = [name for name in layout.files if not (directory / name).is_file()]
    if missing:
        raise DataError(f"the {layout.title} {layout.version} folder {quote(directory)} lacks "
                        f"{', '.join(missing)}; re-extract {layout.archive} or pass the archive itself")
    try:
        blobs = {name: (directory / name).read_bytes() for name in layout.files}
    except OSError as error:
        raise DataError(f"cannot read the {layout.title} files in {quote(directory)} ({short_reason(error)}); "
                        f"check the permissions or re-extract {layout.archive}") from error
    return parse_layout(layout, blobs, str(directory))


def read_layout_members(archive: Path, layout: CifarLayout, folder: str,
                        members: Mapping[str, bytes]) -> RawImageSet:
    """Read the official ``layout`` from tar ``members`` (name -> bytes) under ``folder`` of ``archive``."""
    blobs = {name: members.get(posixpath.join(folder, name)) for name in layout.files}
    missing = [name for name, blob in blobs.items() if blob is None]
    if missing:
        raise DataError(f"the archive {quote(archive)} holds an incomplete {layout.title} {layout.version} "
                        f"version: {', '.join(missing)} missing in {folder or 'its top level'}; "
                        f"download {layout.archive} again")
    where = f"{archive}:{folder}" if folder else str(archive)
    return parse_layout(layout, {name: blob for name, blob in blobs.items() if blob is not None}, where)


def parse_layout(layout: CifarLayout, blobs: Mapping[str, bytes], where: str) -> RawImageSet:
    """Decode the official files ``blobs`` (base name -> bytes) of ``layout``; ``where`` is for messages."""
    if layout.version == "python":
        classes = _python_class_names(layout, blobs[layout.names_file], where)
        train = [_python_batch(layout, blobs[name], f"{where}/{name}") for name in layout.train_files]
        test = [_python_batch(layout, blobs[name], f"{where}/{name}") for name in layout.test_files]
        notes: tuple[str, ...] = (_md5_note(layout, blobs, where),)
    else:
        classes = _binary_class_names(blobs[layout.names_file], f"{where}/{layout.names_file}")
        train = [_binary_batch(layout, blobs[name], f"{where}/{name}") for name in layout.train_files]
        test = [_binary_batch(layout, blobs[name], f"{where}/{name}") for name in layout.test_files]
        notes = ()
    for (_, labels), name in zip(train + test, (*layout.train_files, *layout.test_files)):
        _check_labels(labels, len(classes), f"{where}/{name}")
    return RawImageSet(
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=np.concatenate([images for images, _ in test]),
        test_labels=np.concatenate([labels for _, labels in test]),
        classes=classes, kind=f"{layout.title} official {layout.version} version", notes=notes,
        dataset=layout.dataset)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles Python-2 CIFAR pickles, admitting only the globals numpy arrays need."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")
        if module == "_codecs":
            return codecs.encode
        try:  # numpy 2 moved numpy.core to numpy._core; use the new home and skip its deprecation shim
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
        except ImportError:
            return getattr(importlib.import_module(module), name)


def _unpickle(blob: bytes, where: str) -> dict[Any, Any]:
    """The dict stored in a CIFAR pickle (latin1 decoding of Python-2 strings, as the release needs)."""
    try:
        value = _ArrayUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError) as error:
        raise DataError(f"cannot unpickle {quote(where)} ({short_reason(error)}); it is not an intact "
                        "official CIFAR python file, download the official archive again") from error
    if not isinstance(value, dict):
        raise DataError(f"{quote(where)} holds a {type(value).__name__}, not the dict of an official CIFAR "
                        "python file; download the official archive again")
    return value


def _field(entries: Mapping[Any, Any], key: str, where: str) -> Any:
    """``entries[key]``, accepting the key as str or bytes, as Python-2 pickles may give either."""
    for candidate in (key, key.encode("ascii")):
        if candidate in entries:
            return entries[candidate]
    raise DataError(f"{quote(where)} has no {key!r} entry, so it is not an official CIFAR python file; "
                    "download the official archive again")


def _as_text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _python_class_names(layout: CifarLayout, blob: bytes, where: str) -> tuple[str, ...]:
    path = f"{where}/{layout.names_file}"
    names = tuple(_as_text(name) for name in _field(_unpickle(blob, path), layout.names_key, path))
    if not names:
        raise DataError(f"{quote(path)} lists no class names; download the official archive again")
    return names


def _python_batch(layout: CifarLayout, blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    entries = _unpickle(blob, where)
    data = np.asarray(_field(entries, "data", where))
    labels = np.asarray(_field(entries, layout.labels_key, where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS_PER_IMAGE:
        raise DataError(f"{quote(where)} holds {data.dtype} data of shape {data.shape}, not uint8 (N, "
                        f"{PIXELS_PER_IMAGE}) as the official release; download the official archive again")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{quote(where)} has {labels.size} labels for {len(data)} images; download the "
                        "official archive again")
    return data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE), labels.astype(np.int64)


def _binary_class_names(blob: bytes, where: str) -> tuple[str, ...]:
    names = tuple(line.strip() for line in blob.decode("utf-8", errors="replace").splitlines() if line.strip())
    if not names:
        raise DataError(f"{quote(where)} lists no class names; download the official archive again")
    return names


def _binary_batch(layout: CifarLayout, blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not blob or len(blob) % layout.record_bytes:
        raise DataError(f"{quote(where)} has {len(blob)} bytes, not a whole number of {layout.record_bytes}-byte "
                        f"{layout.title} records; download the official archive again")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, layout.record_bytes)
    labels = records[:, layout.label_bytes - 1].astype(np.int64)
    images = np.ascontiguousarray(records[:, layout.label_bytes:]).reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE)
    return images, labels


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{quote(where)} has labels in [{labels.min()}, {labels.max()}] but only {num_classes} "
                        "class names; download the official archive again")


def official_md5(layout: CifarLayout) -> dict[str, str]:
    """torchvision's MD5 list of the official python release of ``layout`` (file name -> hex digest)."""
    from torchvision.datasets import CIFAR10, CIFAR100  # heavy import, only needed here

    reference = CIFAR10 if layout.dataset == "cifar10" else CIFAR100
    listed = [*reference.train_list, *reference.test_list, [reference.meta["filename"], reference.meta["md5"]]]
    return {name: digest for name, digest in listed}


def _md5_note(layout: CifarLayout, blobs: Mapping[str, bytes], where: str) -> str:
    """Compare ``blobs`` with the official MD5 list; log the outcome and return it as a short note."""
    expected = official_md5(layout)
    differing = [name for name in layout.files
                 if hashlib.md5(blobs[name], usedforsecurity=False).hexdigest() != expected.get(name)]
    if not differing:
        logger.info("%s: the %s files match the official release (MD5)", where, layout.title)
        return "MD5 matches the official release"
    logger.warning("%s: MD5 of %s differs from the official %s release; using the files as they are "
                   "(a re-packed copy is fine if its images and labels are the official ones)",
                   where, ", ".join(differing), layout.title)
    return "MD5 differs from the official release"
