"""On-disk cache of decoded image trees, so a second load of a JPEG/PNG class-folder tree starts at once.

An entry is a folder of uncompressed ``.npy`` arrays plus ``meta.json``, named after the source and a hash
of its fingerprint (absolute path, and sizes and modification times of the files read), so any change of
the source selects a new entry. Entries are built in a temporary folder beside them and renamed into place,
so an interrupted run never leaves a half-written entry; an unreadable entry is reported, removed and
rebuilt. Arrays are read through a memory map and copied, which takes a few hundredths of a second for
the 60,000 CIFAR images (184 MB).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from resnet_core.data.image_arrays import RawImageSet, quote, short_reason

logger = logging.getLogger(__name__)

CACHE_ENV = "RESNET_CORE_CACHE"
"""Environment variable naming the cache folder when no ``cache_dir`` is passed."""

CACHE_FORMAT = 1
"""Version of the entry layout; part of every key, so a new layout never reads an old entry."""

_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_META = "meta.json"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``cache_dir`` if given, else ``$RESNET_CORE_CACHE``, else ``~/.cache/resnet_core``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env).expanduser() if from_env else Path.home() / ".cache" / "resnet_core"


def entry_path(cache_root: Path, source: Path, fingerprint: Iterable[tuple[str, int, int]]) -> Path:
    """The entry folder for ``source`` whose files have ``fingerprint`` (name, size, mtime_ns) rows."""
    absolute = str(source.expanduser().absolute())
    digest = hashlib.sha256(f"format {CACHE_FORMAT}\n{absolute}\n".encode())
    for name, size, mtime_ns in fingerprint:
        digest.update(f"{name}\t{size}\t{mtime_ns}\n".encode())
    return cache_root / f"{_source_prefix(source)}{digest.hexdigest()[:20]}"


def file_fingerprint(path: Path) -> list[tuple[str, int, int]]:
    """The fingerprint of a single file: its absolute path, size and modification time."""
    stat = path.stat()
    return [(str(path.absolute()), stat.st_size, stat.st_mtime_ns)]


def _source_prefix(source: Path) -> str:
    """Readable, source-specific start of an entry name: the base name plus a hash of the absolute path."""
    absolute = str(source.expanduser().absolute())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)[:40] or "source"
    return f"{slug}-{hashlib.sha256(absolute.encode()).hexdigest()[:8]}-"


def load_entry(entry: Path) -> RawImageSet | None:
    """The image set cached in ``entry``, or None when there is none or it is unreadable (then removed)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"entry format {meta.get('format')!r}, expected {CACHE_FORMAT}")
        arrays = [_read_array(entry / f"{name}.npy") for name in _ARRAYS]
        raw = RawImageSet(*arrays, classes=tuple(str(name) for name in meta["classes"]), kind=str(meta["kind"]),
                          notes=tuple(str(note) for note in meta["notes"]), dataset=meta.get("dataset"))
        _check_consistent(raw)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring the unreadable image cache %s (%s); rebuilding it", quote(entry),
                       short_reason(error))
        shutil.rmtree(entry, ignore_errors=True)
        return None
    logger.info("decoded images loaded from the cache %s", quote(entry))
    return raw._replace(notes=(*raw.notes, f"decoded images loaded from the cache {quote(entry)}"))


def save_entry(entry: Path, raw: RawImageSet) -> bool:
    """Write ``raw`` to ``entry`` atomically and drop older entries of the same source; False on failure.

    A cache that cannot be written (read-only or full disk) only costs the next run a decode, so it is
    logged as a warning and the load goes on.
    """
    staging: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        for name, array in zip(_ARRAYS, raw[:4]):
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {"format": CACHE_FORMAT, "classes": list(raw.classes), "kind": raw.kind, "notes": list(raw.notes),
                "dataset": raw.dataset}
        (staging / _META).write_text(json.dumps(meta), encoding="utf-8")
        _sync_folder(staging)
        shutil.rmtree(entry, ignore_errors=True)  # an unreadable leftover of the same key
        os.replace(staging, entry)
        staging = None
    except OSError as error:
        if entry.is_dir():  # another process (e.g. a second rank) won the race; its entry is as good
            return True
        logger.warning("could not write the image cache %s (%s); the next load decodes again", quote(entry),
                       short_reason(error))
        return False
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    drop_older_entries(entry, "image cache")
    logger.info("decoded images cached at %s", quote(entry))
    return True


def _read_array(path: Path) -> np.ndarray:
    """The array of an ``.npy`` file, read through a memory map into memory of its own (writable)."""
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    try:
        return np.array(mapped)
    finally:
        del mapped


def _check_consistent(raw: RawImageSet) -> None:
    """Raise ValueError unless ``raw`` has the dtypes and shapes of a decoded image set."""
    for images, labels in ((raw.train_images, raw.train_labels), (raw.test_images, raw.test_labels)):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images of dtype {images.dtype} and shape {images.shape}")
        if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"labels of dtype {labels.dtype} and shape {labels.shape}")
    if not raw.classes:
        raise ValueError("no class names")


def _sync_folder(folder: Path) -> None:
    """Flush the files of ``folder`` to disk, so the rename publishes complete data even after a crash."""
    for child in folder.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())


def drop_older_entries(entry: Path, what: str) -> None:
    """Remove entries (folders) of the same source with another fingerprint: that source has changed since."""
    prefix = entry.name[: -20]
    for other in entry.parent.glob(f"{prefix}*"):
        if other != entry and other.is_dir() and len(other.name) == len(entry.name):
            shutil.rmtree(other, ignore_errors=True)
            logger.info("removed the outdated %s %s", what, quote(other))
