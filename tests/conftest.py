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


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory holding cifar10-jpeg.tar.gz; tests that need it skip, saying why, when it is unset."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is not set: the real CIFAR-10 JPEG copy is unavailable")
    path = Path(value)
    if not (path / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip(f"{DATA_ENV}={value} holds no cifar10-jpeg.tar.gz")
    return path
