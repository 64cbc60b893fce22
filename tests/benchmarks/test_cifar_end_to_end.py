"""The CIFAR end-to-end benchmark's reference input: torchvision's CIFAR10 reads back the pickles we write.

    python -m pytest tests/benchmarks/test_cifar_end_to_end.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from synthetic import make_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, home of benchmarks/

from benchmarks.cifar_end_to_end import ReferenceCIFAR10, variant_config, write_cifar_pickles  # noqa: E402


def test_torchvision_reads_back_the_written_pickles(tmp_path: Path) -> None:
    dataset = make_dataset(num_classes=4, train=23, test=7, size=32)  # 23: uneven over the five batch files
    root = write_cifar_pickles(dataset, tmp_path)
    for train, images, labels in ((True, dataset.train_images, dataset.train_labels),
                                  (False, dataset.test_images, dataset.test_labels)):
        read = ReferenceCIFAR10(str(root), train=train)
        assert torch.equal(torch.from_numpy(read.data), images.permute(0, 2, 3, 1))  # torchvision holds HWC
        assert read.targets == labels.tolist()
        assert read.classes == list(dataset.classes)
    assert write_cifar_pickles(dataset, tmp_path) == root  # a written folder is reused as it is


def test_variants_name_their_execution() -> None:
    config = variant_config("graphs-bf16", "resnet20", torch.device("cpu"))
    assert (config.compile, config.bf16, config.channels_last) == ("reduce-overhead", True, None)
    assert (variant_config("fp32", "resnet20", torch.device("cpu")).compile, config.iterations) == ("none", 64_000)
