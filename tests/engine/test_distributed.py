"""The engine under torch.distributed (2 CPU processes, gloo): shards data, averages gradients, reduces
metrics, every rank ends with the same weights, and all ranks take a time-based checkpoint together."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from resnet_core import TrainConfig, fit
from resnet_core.engine.fit import TIME_CHECK_EVERY, CheckpointWritten

# checkpoint_seconds is due at once: rank 0's clock decides, at the first clock check, for both ranks.
CONFIG = TrainConfig(arch="cifar_resnet", depth=8, batch_size=32, iterations=TIME_CHECK_EVERY + 5, eval_every=10,
                     device="cpu", checkpoint_seconds=1e-6)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    from synthetic import make_dataset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        written: list[CheckpointWritten] = []
        result = fit(CONFIG, data=make_dataset(), out_dir=Path(out) / "run", checkpoint_callbacks=[written.append])
        torch.save({"model": result.model.state_dict(), "history": [r.row() for r in result.history],
                    "checkpoints": [w.iteration for w in written]}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_end_identical_and_agree_on_metrics(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][key]), key
    strip = lambda rows: [{**row, "seconds": 0} for row in rows]  # noqa: E731
    assert strip(ranks[0]["history"]) == strip(ranks[1]["history"])
    assert ranks[0]["checkpoints"] == ranks[1]["checkpoints"] == [TIME_CHECK_EVERY]  # every rank is told
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # written once, by rank 0
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "run").iterdir())
