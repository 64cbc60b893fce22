"""The ImageNet pipeline on real images: the tiny-imagenet-10 copy (10 Tiny ImageNet classes, 64x64 JPEG,
ImageNet folder layout). Skipped, saying why, when RESNET_DATA_DIR does not hold it.

* ResNet-18 (paper Table 1, option B) trained briefly on the CPU learns clearly above chance (90% error)
  on the 500 validation images.
* Two processes started by torchrun (gloo): the ranks draw disjoint images and end with identical weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_core import TrainConfig, fit


DDP_ITERATIONS = 4
RANK_SCRIPT = Path(__file__).with_name("ddp_imagenet_rank.py")
REPO = Path(__file__).resolve().parents[2]


def test_two_ranks_under_torchrun_draw_disjoint_images_and_end_identical(imagenet_data_dir: Path,
                                                                        tmp_path: Path) -> None:
    archive = imagenet_data_dir / "tiny-imagenet-10.tar.gz"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(RANK_SCRIPT), str(archive), str(tmp_path), str(DDP_ITERATIONS)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    assert ranks[0]["history"] == ranks[1]["history"]  # metrics reduced over both ranks
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == DDP_ITERATIONS
    for first, second in zip(ranks[0]["seen"], ranks[1]["seen"]):
        assert len(first) == len(second) == 16 and not set(first) & set(second)
    everything = [index for rank in ranks for batch in rank["seen"] for index in batch]
    assert len(everything) == len(set(everything)) == DDP_ITERATIONS * 32  # no image twice within the epoch


@pytest.mark.e2e  # 90 s; the default suite's tiny ImageNet study (tests/study/test_imagenet_study.py) trains it too
def test_resnet18_learns_tiny_imagenet_10(imagenet_data_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig.for_dataset(
        "imagenet", arch="resnet18", data=str(imagenet_data_dir / "tiny-imagenet-10.tar.gz"),
        cache_dir=str(tmp_path / "cache"), image_size=64, batch_size=64, epochs=2, eval_every=1_000,
        eval_batch_size=50, eval_crops=1, mean_images=1_000, device="cpu")
    result = fit(config)
    final = result.final
    print(f"resnet18 on tiny-imagenet-10 (64x64, paper preset, {final.iteration} iterations of 64): val top-1 error "
          f"{final.test_error:.2f}%, top-5 {final.test_top5_error:.2f}%, train error {final.train_error:.2f}%, "
          f"{result.wall_seconds:.0f} s")
    assert final.test_error < 75.0  # chance: 90%
