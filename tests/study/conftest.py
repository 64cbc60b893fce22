"""Fixtures of the study tests: a real CIFAR-10 subset in the official python format, and how to run
``study/run.py`` as a user would (a subprocess in a scratch directory)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_core import load_image_dataset

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
RAY = str(Path(sys.executable).with_name("ray"))
SMOKE = REPO / "study" / "specs" / "smoke.yaml"


@pytest.fixture(scope="session")
def cifar_subset(real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 training and 1,000 test images drawn from the CIFAR-10 JPEG copy, written as the official
    python archive folder, so each smoke trial trains on real images but evaluates in about a second."""
    data = load_image_dataset(real_data_dir / "cifar10-jpeg.tar.gz", cache_dir=tmp_path_factory.mktemp("cache"))
    rng = np.random.default_rng(0)
    train = rng.permutation(len(data.train_labels))[:6000]
    test = rng.permutation(len(data.test_labels))[:1000]
    folder = tmp_path_factory.mktemp("cifar-subset") / "cifar-10-batches-py"
    folder.mkdir()
    images = data.train_images.numpy()[train].reshape(len(train), -1)
    labels = data.train_labels.numpy()[train]
    for index, part in enumerate(np.array_split(np.arange(len(train)), 5), start=1):
        with (folder / f"data_batch_{index}").open("wb") as stream:
            pickle.dump({b"data": images[part], b"labels": labels[part].tolist()}, stream)
    with (folder / "test_batch").open("wb") as stream:
        pickle.dump({b"data": data.test_images.numpy()[test].reshape(len(test), -1),
                     b"labels": data.test_labels.numpy()[test].tolist()}, stream)
    with (folder / "batches.meta").open("wb") as stream:
        pickle.dump({b"label_names": [name.encode() for name in data.classes]}, stream)
    return folder.parent


def study_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_study(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python study/run.py ARGS`` in ``cwd``; output captured, one local Ray per call."""
    return subprocess.run([sys.executable, str(RUN), *args], cwd=cwd, env=study_env(), capture_output=True,
                          text=True, timeout=timeout)


def smoke_args(data: Path, *extra: str) -> list[str]:
    return ["--spec", str(SMOKE), "--set", f"dataset.path={data}", "--set", "dataset.val_split=1000", *extra]
