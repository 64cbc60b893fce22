"""Tests of resnet_core.data.sources: every accepted layout gives exactly the pixels and labels written."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from archive_writers import (
    CIFAR10_CLASSES,
    Expected,
    pattern_images,
    tar_folder,
    write_cifar10_binary,
    write_cifar10_python,
    write_cifar100_binary,
    write_cifar100_python,
    write_png_tree,
)

from resnet_core.data import cache, image_folders
from resnet_core.data.sources import DATASETS, ImageDataset, load_image_dataset
from resnet_core.errors import DataError


def load(path: Path, tmp_path: Path, **kwargs: object) -> ImageDataset:
    kwargs.setdefault("download", False)
    return load_image_dataset(path, cache_dir=tmp_path / "cache", **kwargs)  # type: ignore[arg-type]


def assert_matches(result: ImageDataset, expected: Expected) -> None:
    assert result.classes == expected.classes
    assert result.num_classes == len(expected.classes)
    for images, labels, want_images, want_labels in (
            (result.train_images, result.train_labels, expected.train_images, expected.train_labels),
            (result.test_images, result.test_labels, expected.test_images, expected.test_labels)):
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.is_contiguous()
        assert tuple(images.shape) == want_images.shape
        assert np.array_equal(images.numpy(), want_images)
        assert np.array_equal(labels.numpy(), want_labels)
    assert "\n" not in result.description


def one_line_error(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- the official formats -------------------------------------------------------------------------------------

def _c10_python_folder(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar10_python(tmp / "data")
    return tmp / "data" / "cifar-10-batches-py", expected


def _c10_python_parent(tmp: Path) -> tuple[Path, Expected]:
    return tmp / "data", write_cifar10_python(tmp / "data")


def _c10_python_archive(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar10_python(tmp / "src")
    return tar_folder(tmp / "src" / "cifar-10-batches-py", tmp / "cifar-10-python.tar.gz"), expected


def _c10_python_archive_parent(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar10_python(tmp / "src")
    (tmp / "data").mkdir()
    tar_folder(tmp / "src" / "cifar-10-batches-py", tmp / "data" / "cifar-10-python.tar.gz")
    return tmp / "data", expected


def _c10_python_str_keys(tmp: Path) -> tuple[Path, Expected]:
    return tmp / "data", write_cifar10_python(tmp / "data", str_keys=True)


def _c100_python_folder(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar100_python(tmp / "data")
    return tmp / "data" / "cifar-100-python", expected


def _c100_python_archive(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar100_python(tmp / "src")
    return tar_folder(tmp / "src" / "cifar-100-python", tmp / "cifar-100-python.tar.gz"), expected


def _c10_binary_folder(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar10_binary(tmp / "data")
    return tmp / "data" / "cifar-10-batches-bin", expected


def _c10_binary_archive_parent(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar10_binary(tmp / "src")
    (tmp / "data").mkdir()
    tar_folder(tmp / "src" / "cifar-10-batches-bin", tmp / "data" / "cifar-10-binary.tar.gz")
    return tmp / "data", expected


def _c100_binary_parent(tmp: Path) -> tuple[Path, Expected]:
    return tmp / "data", write_cifar100_binary(tmp / "data")


def _c100_binary_archive(tmp: Path) -> tuple[Path, Expected]:
    expected = write_cifar100_binary(tmp / "src")
    return tar_folder(tmp / "src" / "cifar-100-binary", tmp / "cifar-100-binary.tar.gz"), expected


OFFICIAL = {
    "c10-python-folder": (_c10_python_folder, "cifar10", "CIFAR-10 official python version at"),
    "c10-python-parent": (_c10_python_parent, "cifar10", "CIFAR-10 official python version at"),
    "c10-python-archive": (_c10_python_archive, "cifar10", "CIFAR-10 official python version in the archive"),
    "c10-python-archive-parent": (_c10_python_archive_parent, "cifar10",
                                  "CIFAR-10 official python version in the archive"),
    "c10-python-str-keys": (_c10_python_str_keys, "cifar10", "CIFAR-10 official python version at"),
    "c100-python-folder": (_c100_python_folder, "cifar100", "CIFAR-100 official python version at"),
    "c100-python-archive": (_c100_python_archive, "cifar100", "CIFAR-100 official python version in the archive"),
    "c10-binary-folder": (_c10_binary_folder, "cifar10", "CIFAR-10 official binary version at"),
    "c10-binary-archive-parent": (_c10_binary_archive_parent, "cifar10",
                                  "CIFAR-10 official binary version in the archive"),
    "c100-binary-parent": (_c100_binary_parent, "cifar100", "CIFAR-100 official binary version at"),
    "c100-binary-archive": (_c100_binary_archive, "cifar100", "CIFAR-100 official binary version in the archive"),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL))
def test_official_formats_give_the_written_pixels_and_labels(case: str, tmp_path: Path) -> None:
    write, dataset, kind = OFFICIAL[case]
    path, expected = write(tmp_path)
    result = load(path, tmp_path, dataset=dataset)
    assert_matches(result, expected)
    assert result.description.startswith(kind), result.description
    n_train, n_test = len(expected.train_labels), len(expected.test_labels)
    assert f"{n_train:,} train / {n_test:,} test images, {len(expected.classes)} classes, 32x32" in result.description
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # official: not cached


def test_official_python_md5_mismatch_is_only_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, expected = _c10_python_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = load(path, tmp_path)
    assert_matches(result, expected)
    assert "MD5 differs from the official release" in result.description
    assert any("differs from the official" in record.getMessage() for record in caplog.records)


def test_official_python_md5_match_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from torchvision.datasets import CIFAR10

    path, expected = _c10_python_folder(tmp_path)

    def md5(name: str) -> str:
        return hashlib.md5((path / name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{k}", md5(f"data_batch_{k}")] for k in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": md5("batches.meta")})
    assert "MD5 matches the official release" in load(path, tmp_path).description


def test_other_cifar_is_used_as_found_and_said(tmp_path: Path) -> None:
    path, expected = _c100_python_folder(tmp_path)
    result = load(path, tmp_path, dataset="cifar10")
    assert_matches(result, expected)
    assert "cifar10 was asked for but CIFAR-100 was found" in result.description


def test_dataset_chooses_between_two_official_folders(tmp_path: Path) -> None:
    c10 = write_cifar10_python(tmp_path / "data")
    c100 = write_cifar100_binary(tmp_path / "data")
    assert_matches(load(tmp_path / "data", tmp_path, dataset="cifar10"), c10)
    assert_matches(load(tmp_path / "data", tmp_path, dataset="CIFAR-100"), c100)


def test_incomplete_official_folder_names_the_missing_file(tmp_path: Path) -> None:
    path, _ = _c10_python_folder(tmp_path)
    (path / "data_batch_3").unlink()
    with pytest.raises(DataError) as excinfo:
        load(tmp_path / "data", tmp_path)
    assert "data_batch_3" in one_line_error(excinfo) and str(path) in str(excinfo.value)


def test_binary_file_of_wrong_length_is_rejected(tmp_path: Path) -> None:
    path, _ = _c10_binary_folder(tmp_path)
    with open(path / "test_batch.bin", "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(DataError, match="test_batch.bin"):
        load(path, tmp_path)


def test_pickle_with_foreign_globals_is_refused_not_run(tmp_path: Path) -> None:
    path, _ = _c10_python_folder(tmp_path)
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
            return os.system, (f"touch {marker}",)

    (path / "data_batch_2").write_bytes(pickle.dumps({"data": Exploit(), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_2"):
        load(path, tmp_path)
    assert not marker.exists()


# --- class-folder trees ---------------------------------------------------------------------------------------

def test_png_tree_folder_gives_the_written_pixels(tmp_path: Path) -> None:
    expected = write_png_tree(tmp_path / "tree")
    result = load(tmp_path / "tree", tmp_path)
    assert_matches(result, expected)
    assert result.classes == ("cat", "dog", "emu")  # sorted folder names, whatever the writing order
    assert result.description.startswith("class-folder tree of PNG images at")


def test_png_tree_in_single_subfolder_with_val_split(tmp_path: Path) -> None:
    expected = write_png_tree(tmp_path / "holder" / "set", test_split="val", size=20)
    (tmp_path / "holder" / "README.txt").write_text("not a folder")
    result = load(tmp_path / "holder", tmp_path)
    assert_matches(result, expected)
    assert "val/" in result.description and "20x20" in result.description


@pytest.mark.parametrize("name, mode", [("tree.tar.gz", "w:gz"), ("tree.tgz", "w:gz"), ("tree.tar", "w")])
def test_png_tree_archive_gives_the_written_pixels(name: str, mode: str, tmp_path: Path) -> None:
    expected = write_png_tree(tmp_path / "src" / "cifar-mini")
    archive = tar_folder(tmp_path / "src" / "cifar-mini", tmp_path / name, mode)
    result = load(archive, tmp_path, dataset="cifar100")  # trees ignore the dataset name
    assert_matches(result, expected)
    assert result.description.startswith("class-folder tree of PNG images in the archive")
    assert "cifar-mini/train/ + cifar-mini/test/" in result.description


def test_tree_archive_without_top_folder(tmp_path: Path) -> None:
    expected = write_png_tree(tmp_path / "src")
    with tarfile.open(tmp_path / "flat.tar.gz", "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(tmp_path / "src" / split, arcname=f"./{split}")
    assert_matches(load(tmp_path / "flat.tar.gz", tmp_path), expected)


@pytest.mark.parametrize("packed", [False, True])
def test_tree_root_rule_is_one_for_folders_and_archives(packed: bool, tmp_path: Path) -> None:
    """Loose files and hidden folders beside the single top folder are ignored, in a folder as in a tar."""
    expected = write_png_tree(tmp_path / "holder" / "cifar-mini")
    (tmp_path / "holder" / "README.txt").write_text("not a folder")
    (tmp_path / "holder" / "__MACOSX" / "cifar-mini").mkdir(parents=True)
    (tmp_path / "holder" / "__MACOSX" / "cifar-mini" / "._0000.png").write_bytes(b"metadata")
    (tmp_path / "holder" / ".Trash").mkdir()
    path = tmp_path / "holder"
    if packed:
        path = tmp_path / "holder.tar"
        with tarfile.open(path, "w") as tar:
            for child in sorted((tmp_path / "holder").iterdir()):
                tar.add(child, arcname=child.name)
    result = load(path, tmp_path)
    assert_matches(result, expected)
    assert ("holder.tar" if packed else "holder/cifar-mini") in result.description


def test_grayscale_and_jpeg_images_become_rgb(tmp_path: Path) -> None:
    from PIL import Image

    gray = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    colour = pattern_images(3, 1, 16)[0].transpose(1, 2, 0)
    for split in ("train", "test"):
        (tmp_path / "t" / split / "a").mkdir(parents=True)
        (tmp_path / "t" / split / "b").mkdir(parents=True)
        Image.fromarray(gray, mode="L").save(tmp_path / "t" / split / "a" / "g.png")
        Image.fromarray(colour).save(tmp_path / "t" / split / "b" / "c.JPG", quality=95)
    result = load(tmp_path / "t", tmp_path)
    assert result.description.startswith("class-folder tree of JPEG+PNG images")
    assert np.array_equal(result.train_images[0].numpy(), np.stack([gray] * 3))
    with Image.open(tmp_path / "t" / "train" / "b" / "c.JPG") as jpeg:
        reference = np.asarray(jpeg.convert("RGB")).transpose(2, 0, 1).astype(int)
    assert np.abs(result.train_images[1].numpy().astype(int) - reference).max() <= 2
    assert result.train_labels.tolist() == [0, 1]


def test_train_and_test_classes_must_match(tmp_path: Path) -> None:
    write_png_tree(tmp_path / "t", classes=("cat", "dog"))
    (tmp_path / "t" / "test" / "dog").rename(tmp_path / "t" / "test" / "wolf")
    with pytest.raises(DataError) as excinfo:
        load(tmp_path / "t", tmp_path)
    message = one_line_error(excinfo)
    assert "only in train/: dog" in message and "only in test/: wolf" in message


@pytest.mark.parametrize("packed", [False, True])
def test_corrupt_image_is_named(packed: bool, tmp_path: Path) -> None:
    write_png_tree(tmp_path / "src" / "t")
    (tmp_path / "src" / "t" / "train" / "dog" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    path = tar_folder(tmp_path / "src" / "t", tmp_path / "t.tar.gz") if packed else tmp_path / "src" / "t"
    with pytest.raises(DataError) as excinfo:
        load(path, tmp_path)
    assert "train/dog/0002.png" in one_line_error(excinfo)


def test_corrupt_jpeg_among_good_ones_is_named(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "t" / split / "x"
        folder.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(pattern_images(k, 1)[0].transpose(1, 2, 0)).save(folder / f"{k}.jpg")
    good = (tmp_path / "t" / "train" / "x" / "1.jpg").read_bytes()
    (tmp_path / "t" / "train" / "x" / "1.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(DataError, match="train/x/1.jpg"):
        load(tmp_path / "t", tmp_path)


def test_mixed_image_sizes_name_the_odd_file(tmp_path: Path) -> None:
    from PIL import Image

    write_png_tree(tmp_path / "t")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "t" / "test" / "emu" / "0001.png")
    with pytest.raises(DataError) as excinfo:
        load(tmp_path / "t", tmp_path)
    message = one_line_error(excinfo)
    assert "test/emu/0001.png" in message and "40x30" in message and "32x32" in message


def test_empty_class_folder_is_rejected(tmp_path: Path) -> None:
    write_png_tree(tmp_path / "t")
    (tmp_path / "t" / "train" / "owl").mkdir()
    (tmp_path / "t" / "test" / "owl").mkdir()
    with pytest.raises(DataError, match="train/owl"):
        load(tmp_path / "t", tmp_path)


def test_tree_without_test_split_is_rejected(tmp_path: Path) -> None:
    write_png_tree(tmp_path / "t")
    (tmp_path / "t" / "test").rename(tmp_path / "t" / "holdout")
    with pytest.raises(DataError, match="test/"):
        load(tmp_path / "t", tmp_path)


# --- the cache ------------------------------------------------------------------------------------------------

def _cache_entries(tmp_path: Path) -> list[Path]:
    return sorted(path for path in (tmp_path / "cache").iterdir() if not path.name.startswith("."))


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache should have served this load")

    monkeypatch.setattr(image_folders, "decode_images", refuse)


@pytest.mark.parametrize("packed", [False, True])
def test_second_load_comes_from_the_cache(packed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_png_tree(tmp_path / "src" / "t")
    path = tar_folder(tmp_path / "src" / "t", tmp_path / "t.tar.gz") if packed else tmp_path / "src" / "t"
    first = load(path, tmp_path)
    (entry,) = _cache_entries(tmp_path)
    assert (entry / "train_images.npy").is_file() and "cached at" in first.description
    _forbid_decoding(monkeypatch)
    second = load(path, tmp_path)
    assert_matches(second, expected)
    assert "loaded from the cache" in second.description


def test_cache_dir_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_png_tree(tmp_path / "t")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "env-cache"))
    load_image_dataset(tmp_path / "t", download=False)
    assert len(list((tmp_path / "env-cache").iterdir())) == 1


def test_corrupt_cache_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    expected = write_png_tree(tmp_path / "t")
    load(tmp_path / "t", tmp_path)
    (entry,) = _cache_entries(tmp_path)
    (entry / "train_images.npy").write_bytes(b"\x93NUMPY garbage")
    with caplog.at_level(logging.WARNING):
        result = load(tmp_path / "t", tmp_path)
    assert_matches(result, expected)
    assert any("unreadable image cache" in record.getMessage() for record in caplog.records)
    assert np.array_equal(np.load(entry / "train_images.npy"), expected.train_images)


def test_changed_source_invalidates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    write_png_tree(tmp_path / "t")
    load(tmp_path / "t", tmp_path)
    (old_entry,) = _cache_entries(tmp_path)
    changed = tmp_path / "t" / "train" / "cat" / "0000.png"
    Image.fromarray(np.full((32, 32, 3), 77, np.uint8)).save(changed)
    result = load(tmp_path / "t", tmp_path)
    assert (result.train_images[0] == 77).all()
    (new_entry,) = _cache_entries(tmp_path)  # the outdated entry is gone
    assert new_entry != old_entry


def test_touched_archive_invalidates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_png_tree(tmp_path / "src" / "t")
    archive = tar_folder(tmp_path / "src" / "t", tmp_path / "t.tar.gz")
    load(archive, tmp_path)
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    _forbid_decoding(monkeypatch)
    with pytest.raises(AssertionError, match="decoded although"):
        load(archive, tmp_path)


def test_interrupted_cache_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_png_tree(tmp_path / "t")
    saved: list[str] = []

    def failing_save(file: object, array: np.ndarray, **kwargs: object) -> None:
        saved.append(str(file))
        if len(saved) == 2:
            raise OSError(28, "No space left on device")
        real_save(file, array, **kwargs)

    real_save = np.save
    monkeypatch.setattr(cache.np, "save", failing_save)
    result = load(tmp_path / "t", tmp_path)
    assert_matches(result, expected)
    assert "not cached" in result.description
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no staging folder


# --- missing data and bad arguments ---------------------------------------------------------------------------

def test_missing_path_without_download(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as excinfo:
        load(missing, tmp_path)
    message = one_line_error(excinfo)
    assert message.startswith(f"no CIFAR-10 data at '{missing}'")
    assert "cifar-10-python.tar.gz" in message and "pass --data" in message and "download" not in message


def test_folder_with_nothing_known(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no CIFAR-100 data at .*cifar-100-python.tar.gz"):
        load(tmp_path / "empty", tmp_path, dataset="cifar100")


@pytest.mark.parametrize("exists", [False, True])
def test_offline_download_fails_with_one_line(exists: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "data"
    if exists:
        target.mkdir()
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(DataError) as excinfo:
        load(target, tmp_path, download=True)
    message = one_line_error(excinfo)
    assert message.startswith(f"no CIFAR-10 data at '{target}' and the download failed (URLError")
    assert "pass --data" in message
    assert socket.getdefaulttimeout() == timeout_before
    assert target.exists() == exists and (not exists or list(target.iterdir()) == [])  # nothing left behind


def test_download_is_read_as_the_python_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    expected = write_cifar10_python(tmp_path / "official")
    archive = tar_folder(tmp_path / "official" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")

    def fake_download(self: object, root: str, train: bool, download: bool) -> None:
        assert download and socket.getdefaulttimeout() is not None
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "__init__", fake_download)
    result = load(tmp_path / "fresh", tmp_path, download=True)
    assert_matches(result, expected)
    assert "(downloaded)" in result.description
    assert sorted(path.name for path in (tmp_path / "fresh").iterdir()) == ["cifar-10-batches-py"]


def test_unknown_dataset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load(tmp_path, tmp_path, dataset="imagenet")
    assert all(name in one_line_error(excinfo) for name in DATASETS)


def test_file_that_is_no_archive(tmp_path: Path) -> None:
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(DataError, match="data.zip"):
        load(tmp_path / "data.zip", tmp_path)


# --- ImageDataset validation ----------------------------------------------------------------------------------

def _valid_parts() -> dict[str, object]:
    return {"train_images": torch.zeros(4, 3, 8, 8, dtype=torch.uint8), "train_labels": torch.tensor([0, 1, 2, 0]),
            "test_images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "test_labels": torch.tensor([1, 2]),
            "classes": ("a", "b", "c"), "description": "three classes"}


@pytest.mark.parametrize("field, value", [
    ("train_images", torch.zeros(4, 3, 8, 8)),  # float
    ("train_images", torch.zeros(4, 8, 8, 3, dtype=torch.uint8)),  # channels last
    ("train_images", torch.zeros(4, 3, 8, 16, dtype=torch.uint8).transpose(2, 3)),  # not contiguous
    ("test_images", torch.zeros(2, 3, 9, 9, dtype=torch.uint8)),  # other size than train
    ("train_labels", torch.tensor([0, 1, 2], dtype=torch.int64)),  # wrong count
    ("train_labels", torch.tensor([0, 1, 2, 0], dtype=torch.int32)),
    ("test_labels", torch.tensor([1, 3])),  # out of range
    ("classes", ()),
    ("description", "two\nlines"),
])
def test_image_dataset_rejects_invalid_parts(field: str, value: object) -> None:
    parts = _valid_parts()
    parts[field] = value
    with pytest.raises(DataError):
        ImageDataset(**parts)  # type: ignore[arg-type]


def test_image_dataset_accepts_valid_parts() -> None:
    dataset = ImageDataset(**_valid_parts())  # type: ignore[arg-type]
    assert dataset.num_classes == 3


# --- the real CIFAR-10 JPEG copy ------------------------------------------------------------------------------

def test_real_cifar10_jpeg_archive(tmp_path: Path) -> None:
    data_dir = os.environ.get("RESNET_DATA_DIR")
    if not data_dir:
        pytest.skip("RESNET_DATA_DIR is not set: real CIFAR-10 JPEG copy unavailable")
    archive = Path(data_dir) / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"RESNET_DATA_DIR={data_dir} holds no cifar10-jpeg.tar.gz")
    result = load(archive, tmp_path)
    assert result.classes == CIFAR10_CLASSES
    assert tuple(result.train_images.shape) == (50_000, 3, 32, 32)
    assert tuple(result.test_images.shape) == (10_000, 3, 32, 32)
    assert result.train_labels.bincount().tolist() == [5_000] * 10
    assert result.test_labels.bincount().tolist() == [1_000] * 10
    assert "50,000 train / 10,000 test images, 10 classes, 32x32" in result.description
    assert 60 < result.train_images.float().mean() < 200  # decoded pixels, not blank
