"""Decoded image sets as plain numpy arrays, the common currency of the CIFAR readers and the image cache.

Every reader of :mod:`resnet_core.data.sources` (official CIFAR archives, class-folder trees, the cache)
returns a :class:`RawImageSet`; only :func:`resnet_core.data.sources.load_image_dataset` turns it into the
public :class:`~resnet_core.data.sources.ImageDataset` of torch tensors.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

MAX_REASON_CHARS = 160
"""Longest excerpt of an underlying exception quoted inside a one-line error message."""


class RawImageSet(NamedTuple):
    """Train and test images, uint8 (N, 3, H, W), with int64 labels (N,) indexing ``classes``.

    ``kind`` names the format without any path (e.g. "CIFAR-10 official python version"), ``notes`` are
    short remarks for the one-line description (checksums, folders used, cache), and ``dataset`` is the
    dataset name ("cifar10" or "cifar100") when the format identifies it, else None.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    kind: str
    notes: tuple[str, ...] = ()
    dataset: str | None = None


def quote(path: str | os.PathLike[str]) -> str:
    """``path`` in single quotes, with any control character escaped so a message stays on one line."""
    return repr(os.fspath(path))


def short_reason(error: BaseException) -> str:
    """A one-line excerpt of ``error`` for a message: its type and text, newlines folded, length capped."""
    reason = getattr(error, "reason", None)  # urllib's URLError keeps the interesting part here
    text = str(reason if reason is not None else error)
    text = " ".join(text.split()) or "no details"
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}"
