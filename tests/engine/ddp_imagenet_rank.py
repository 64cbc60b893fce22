"""One rank of the two-process ImageNet DDP test, started by ``torchrun``: join the group the way the CLI
does, train with the engine, and save this rank's weights, metrics and the indices it was fed.

    torchrun --standalone --nproc-per-node 2 tests/engine/ddp_imagenet_rank.py ARCHIVE OUT ITERATIONS
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from resnet_core import TrainConfig, fit
from resnet_core.data.imagenet_loader import LoaderBatches
from resnet_core.engine.distributed import joined_from_environment


def record_batches(seen: list[list[int]]) -> None:
    """Make every training batch note its image indices (test_imagenet_engine checks they are its images)."""
    original = LoaderBatches.batch

    def batch(self: LoaderBatches, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(self.indices(iteration))
        return original(self, iteration)

    LoaderBatches.batch = batch  # type: ignore[method-assign]


def main(archive: str, out: str, iterations: int) -> None:
    torch.set_num_threads(1)
    config = TrainConfig.for_dataset(
        "imagenet", arch="resnet18", data=archive, cache_dir=str(Path(out) / "cache"), image_size=64,
        batch_size=32, iterations=iterations, eval_every=iterations, eval_batch_size=50, eval_crops=1, workers=1,
        mean_images=200, device="cpu")
    with joined_from_environment(config.device) as group:
        seen: list[list[int]] = []
        record_batches(seen)
        result = fit(config)
        torch.save({"model": result.model.state_dict(), "seen": seen, "world_size": group.world_size,
                    "history": [{**r.row(), "seconds": 0} for r in result.history]},
                   Path(out) / f"rank{group.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
