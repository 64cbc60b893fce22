"""Writers of small image sets in exactly the official CIFAR formats, and of class-folder image trees.

Image ``k`` of a set has pixel ``[c, y, x] = (7 k + 50 c + 3 y + x) mod 256``, so each image differs from
the others and a wrong channel, row or column order changes the pixels a reader returns.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(f"fine_{index:02d}" for index in range(100))
CIFAR100_COARSE = tuple(f"coarse_{index:02d}" for index in range(20))


@dataclass(frozen=True)
class Expected:
    """What a reader must return for a written set: uint8 (N, 3, H, W) images, int64 labels, class names."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def pattern_images(first: int, count: int, size: int = 32) -> np.ndarray:
    """Images ``first .. first + count - 1`` of the pixel pattern, uint8 (count, 3, size, size)."""
    k = np.arange(first, first + count).reshape(-1, 1, 1, 1)
    c = np.arange(3).reshape(1, 3, 1, 1)
    y = np.arange(size).reshape(1, 1, size, 1)
    x = np.arange(size).reshape(1, 1, 1, size)
    return ((7 * k + 50 * c + 3 * y + x) % 256).astype(np.uint8)


def _labels(first: int, count: int, num_classes: int) -> np.ndarray:
    """Labels of images ``first ..``: spread over the classes, fine labels of CIFAR-100 above the coarse range."""
    return ((np.arange(first, first + count) * 37 + 11) % num_classes).astype(np.int64)


def _dump(path: Path, value: dict, str_keys: bool) -> None:
    """Pickle ``value`` with protocol 2, keys as bytes (as Python-2 pickles read with encoding="bytes")."""
    if not str_keys:
        value = {key.encode("ascii"): item for key, item in value.items()}
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=2)


def write_cifar10_python(parent: Path, per_batch: int = 2, test: int = 3, str_keys: bool = False) -> Expected:
    """``parent/cifar-10-batches-py/`` with data_batch_1..5, test_batch and batches.meta."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches, (test_images, test_labels), expected = _cifar10_batches(per_batch, test)
    for batch, (images, labels) in enumerate(batches, start=1):
        _dump(folder / f"data_batch_{batch}",
              {"batch_label": f"training batch {batch} of 5", "labels": labels.tolist(),
               "data": images.reshape(per_batch, -1), "filenames": [f"img_{k}.png" for k in range(per_batch)]},
              str_keys)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels.tolist(),
                                  "data": test_images.reshape(test, -1), "filenames": ["t.png"] * test}, str_keys)
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": list(CIFAR10_CLASSES),
                                    "num_vis": 3072}, str_keys)
    return expected


def _cifar10_batches(per_batch: int, test: int) -> tuple[list[tuple[np.ndarray, np.ndarray]],
                                                         tuple[np.ndarray, np.ndarray], Expected]:
    """The five training batches and the test batch of a small CIFAR-10, and what a reader must return."""
    batches = [(pattern_images(b * per_batch, per_batch), _labels(b * per_batch, per_batch, 10)) for b in range(5)]
    first = 5 * per_batch
    test_images, test_labels = pattern_images(first, test), _labels(first, test, 10)
    expected = Expected(np.concatenate([images for images, _ in batches]),
                        np.concatenate([labels for _, labels in batches]), test_images, test_labels,
                        CIFAR10_CLASSES)
    return batches, (test_images, test_labels), expected


def write_cifar100_python(parent: Path, train: int = 6, test: int = 4) -> Expected:
    """``parent/cifar-100-python/`` with train, test and meta (fine and coarse labels)."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    expected = Expected(pattern_images(0, train), _labels(0, train, 100),
                        pattern_images(train, test), _labels(train, test, 100), CIFAR100_CLASSES)
    for name, images, labels in (("train", expected.train_images, expected.train_labels),
                                 ("test", expected.test_images, expected.test_labels)):
        _dump(folder / name, {"filenames": [f"{k}.png" for k in range(len(images))], "batch_label": name,
                              "fine_labels": labels.tolist(), "coarse_labels": (labels % 20).tolist(),
                              "data": images.reshape(len(images), -1)}, str_keys=False)
    _dump(folder / "meta", {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": list(CIFAR100_COARSE)},
          str_keys=False)
    return expected


def write_cifar10_binary(parent: Path, per_batch: int = 2, test: int = 3) -> Expected:
    """``parent/cifar-10-batches-bin/`` with data_batch_1..5.bin, test_batch.bin and batches.meta.txt."""
    folder = parent / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    batches, (test_images, test_labels), expected = _cifar10_batches(per_batch, test)
    for batch, (images, labels) in enumerate(batches, start=1):
        _write_records(folder / f"data_batch_{batch}.bin", [labels], images)
    _write_records(folder / "test_batch.bin", [test_labels], test_images)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return expected


def write_cifar100_binary(parent: Path, train: int = 6, test: int = 4) -> Expected:
    """``parent/cifar-100-binary/`` with train.bin, test.bin (coarse, fine label bytes) and the name lists."""
    folder = parent / "cifar-100-binary"
    folder.mkdir(parents=True)
    expected = Expected(pattern_images(0, train), _labels(0, train, 100),
                        pattern_images(train, test), _labels(train, test, 100), CIFAR100_CLASSES)
    _write_records(folder / "train.bin", [expected.train_labels % 20, expected.train_labels], expected.train_images)
    _write_records(folder / "test.bin", [expected.test_labels % 20, expected.test_labels], expected.test_images)
    (folder / "fine_label_names.txt").write_text("\n".join(CIFAR100_CLASSES) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(CIFAR100_COARSE) + "\n")
    return expected


def _write_records(path: Path, label_columns: list[np.ndarray], images: np.ndarray) -> None:
    """Records of label byte(s) followed by the 3072 pixel bytes, as the binary version stores them."""
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    path.write_bytes(np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes())


def write_png_tree(root: Path, classes: tuple[str, ...] = ("emu", "cat", "dog"), train_per_class: int = 4,
                   test_per_class: int = 2, size: int = 32, test_split: str = "test") -> Expected:
    """``root/train/<class>/<k>.png`` and ``root/<test_split>/<class>/<k>.png`` of pattern images."""
    from PIL import Image

    ordered = tuple(sorted(classes))
    arrays: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), test_split: ([], [])}
    image_index = 0
    for split, per_class in (("train", train_per_class), (test_split, test_per_class)):
        for label, name in enumerate(ordered):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = pattern_images(image_index, 1, size)[0]
                image_index += 1
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{k:04d}.png")
                arrays[split][0].append(image)
                arrays[split][1].append(label)
    return Expected(np.stack(arrays["train"][0]), np.array(arrays["train"][1], dtype=np.int64),
                    np.stack(arrays[test_split][0]), np.array(arrays[test_split][1], dtype=np.int64), ordered)


def tar_folder(folder: Path, archive: Path, mode: str = "w:gz") -> Path:
    """Pack ``folder`` into ``archive`` with ``folder.name`` as its top folder, like the official archives."""
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=folder.name)
    return archive
