"""On the real CIFAR-10 (JPEG copy): ResNet-20 learns clearly above chance in 200 iterations on a CPU.

Paper recipe (Sec. 4.2): batch 128, lr 0.1, momentum 0.9, weight decay 1e-4, per-pixel mean, pad-4
crops and flips. Chance is 90% error; a plain reference loop reached about 57% after 200 iterations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_core import TrainConfig, fit, load_image_dataset


@pytest.mark.e2e  # 75 s; the default suite's real-data learning check is the tiny ImageNet study's ResNet-18
def test_resnet20_learns_cifar10_in_200_iterations(real_data_dir: Path, tmp_path_factory) -> None:
    data = load_image_dataset(real_data_dir / "cifar10-jpeg.tar.gz", cache_dir=tmp_path_factory.mktemp("cache"))
    assert (len(data.train_labels), len(data.test_labels), data.num_classes) == (50_000, 10_000, 10)
    config = TrainConfig(arch="resnet20", iterations=200, eval_every=200, batch_size=128, device="cpu")
    result = fit(config, data=data)
    print(f"resnet20, 200 iterations: test error {result.final.test_error:.2f}%, "
          f"train error {result.final.train_error:.2f}%, {result.wall_seconds:.1f} s")
    assert result.final.test_error < 70.0
