"""The engine on the ImageNet pipeline (paper Sec. 3.4) over a small JPEG tree in the ImageNet layout:
it trains and reports top-1/top-5, feeds exactly the sampled images, resumes exactly (also with DataLoader
worker processes), and the CLI runs it and stops on a corrupt file with one line naming it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic import make_dataset, write_imagenet_tree

from resnet_core import TrainConfig, fit
from resnet_core.data.imagenet import scan_image_folders
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.engine.distributed import ProcessGroup
from resnet_core.engine.inputs import load_inputs

REPO = Path(__file__).resolve().parents[2]
# The pipeline is under test, so most runs train the smallest registered net (any model takes any image size).
SMALL = dict(arch="cifar_resnet", depth=8, image_size=32, batch_size=16, eval_batch_size=32, workers=0,
             mean_images=64, device="cpu", eval_every=3, checkpoint_every=3)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """6 classes, 96 train / 36 val JPEGs of 40x40 pixels."""
    data = make_dataset(num_classes=6, train=96, test=36, size=20)
    return write_imagenet_tree(data, tmp_path_factory.mktemp("imagenet") / "tiny", size=40)


def _config(tree: Path, **changes: object) -> TrainConfig:
    return TrainConfig.for_dataset("imagenet", **{**SMALL, "data": str(tree), **changes})


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def test_trains_and_reports_top1_and_top5(tree: Path) -> None:
    result = fit(_config(tree, arch="resnet18", depth=None, iterations=6))
    assert [r.iteration for r in result.history] == [3, 6]
    final = result.final
    assert 0 <= final.test_top5_error <= final.test_error <= 100 and final.test_loss > 0
    assert result.model.fc.out_features == 6  # classes from the folders, not ImageNet's 1000
    assert result.summary()["dataset"] == "imagenet" and result.summary()["test_top5_error"] == final.test_top5_error


def test_ten_crop_and_centre_crop_score_differently(tree: Path) -> None:
    ten = fit(_config(tree, iterations=3))  # the paper preset's default: 10 crops
    one = fit(_config(tree, iterations=3, eval_crops=1))
    assert _same_weights(ten.model, one.model)  # the same training ...
    assert ten.final.test_loss != one.final.test_loss  # ... scored on other views


def test_batches_hold_exactly_the_sampled_images(tree: Path) -> None:
    """Without augmentation, batch i is the stack of the images the sampler lists for iteration i."""
    config = _config(tree, augment=False, preset="torchvision")
    inputs = load_inputs(config, scan_image_folders(tree), ProcessGroup(0, 1, 0), torch.device("cpu"))
    stream = inputs.train
    assert stream.batches_per_epoch == 96 // 16
    for iteration in (0, 1, 7):  # 7 is in the second epoch
        images, labels = stream.batch(iteration)
        epoch = iteration // stream.batches_per_epoch
        expected = [stream.dataset[(epoch, index)] for index in stream.indices(iteration)]
        assert torch.equal(images, torch.stack([image for image, _ in expected]))
        assert labels.tolist() == [label for _, label in expected]
    assert stream.indices(0) != stream.indices(stream.batches_per_epoch)  # epochs are reshuffled


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_resumes_exactly(tree: Path, tmp_path: Path, workers: int) -> None:
    config = _config(tree, iterations=9, workers=workers, lr_schedule="plateau", plateau_patience=1,
                     plateau_threshold=100.0)
    uninterrupted = fit(config)

    def stop_at_6(report) -> None:
        if report.iteration == 6:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        fit(config, out_dir=tmp_path, callbacks=[stop_at_6])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["iteration"] == 6
    resumed = fit(config, out_dir=tmp_path, resume_from=tmp_path / CHECKPOINT_NAME)
    assert _same_weights(uninterrupted.model, resumed.model)
    strip = lambda history: [{**r.row(), "seconds": 0} for r in history]  # noqa: E731
    assert strip(resumed.history) == strip(uninterrupted.history)
    assert resumed.plateau_decays == uninterrupted.plateau_decays == 2


def test_epochs_and_hold_out(tree: Path) -> None:
    result = fit(_config(tree, epochs=1, val_split=32, eval_every=100))  # 64 images left: 4 batches of 16
    assert result.final.iteration == 4 and result.config.iterations == 4
    assert result.final.val_error is not None and result.final.val_top5_error is not None


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "resnet_core.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


CLI_FAST = ["--dataset", "imagenet", "--arch", "cifar_resnet", "--depth", "8", "--image-size", "32", "--batch-size", "16",
            "--iterations", "4", "--eval-every", "2", "--workers", "0", "--mean-images", "32", "--device", "cpu",
            "--eval-crops", "1", "--no-progress"]


def test_cli_trains_imagenet_and_writes_top5(tree: Path, tmp_path: Path) -> None:
    result = _cli(*CLI_FAST, "--data", str(tree), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with (tmp_path / "run" / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["iteration"] for row in rows] == ["2", "4"]
    assert "test_top5_error" in rows[0] and float(rows[0]["test_top5_error"]) <= float(rows[0]["test_error"])


def test_cli_names_a_corrupt_image_or_skips_it(tree: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(tree), str(broken)], check=True)
    victim = sorted((broken / "train").rglob("*.JPEG"))[5]
    victim.write_bytes(b"\xff\xd8\xff this is not a JPEG")
    result = _cli(*CLI_FAST, "--preset", "torchvision", "--data", str(broken), "--out", str(tmp_path / "a"),
                  cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and victim.name in lines[0], result.stderr
    skipped = _cli(*CLI_FAST, "--preset", "torchvision", "--skip-corrupt", "--epochs", "1", "--data", str(broken),
                   "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert victim.name in skipped.stderr and "skipped" in skipped.stderr


def test_cli_under_torchrun_trains_on_two_ranks_and_rank0_writes(tree: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "resnet_core.train", *CLI_FAST, "--data", str(tree), "--out", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x2 ranks" in done.stderr  # the engine saw the process group torchrun set up
    with (tmp_path / "run" / "metrics.csv").open() as stream:
        assert [row["iteration"] for row in csv.DictReader(stream)] == ["2", "4"]  # one writer: no duplicate rows
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["iteration"] == 4
