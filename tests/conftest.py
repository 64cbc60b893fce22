"""Shared fixtures: small synthetic data, and the real-data directory from RESNET_DATA_DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/synthetic.py for every test package

from synthetic import make_dataset  # noqa: E402

from resnet_core.data.sources import ImageDataset  # noqa: E402

DATA_ENV = "RESNET_DATA_DIR"


@pytest.fixture(scope="session")
def tiny_dataset() -> ImageDataset:
    return make_dataset()


def _data_dir_holding(archive: str, what: str) -> Path:
    """``$RESNET_DATA_DIR`` when it holds ``archive``; otherwise the test skips, saying why."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is not set: {what} is unavailable")
    path = Path(value)
    if not (path / archive).is_file():
        pytest.skip(f"{DATA_ENV}={value} holds no {archive}")
    return path


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory holding cifar10-jpeg.tar.gz; tests that need it skip, saying why, when it is unset."""
    return _data_dir_holding("cifar10-jpeg.tar.gz", "the real CIFAR-10 JPEG copy")


@pytest.fixture(scope="session")
def imagenet_data_dir() -> Path:
    """The directory holding tiny-imagenet-10.tar.gz; tests that need it skip, saying why, when it is unset."""
    return _data_dir_holding("tiny-imagenet-10.tar.gz", "the real Tiny ImageNet (10 classes) copy")
