"""What the engine needs from ``torch.distributed``: who am I, how many are we, and sums across ranks.

Without an initialised process group everything degrades to one process, so the same engine runs alone,
under ``torchrun`` (the CLI joins the group with :func:`joined_from_environment`), or inside a Ray Train
worker (which initialises the group before calling it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def current_group() -> ProcessGroup:
    """This process's place in the default process group, or a group of one."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), local_rank)
    return ProcessGroup(0, 1, 0)


def all_reduce_sum(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op alone) and return it."""
    if group.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(model: nn.Module, group: ProcessGroup) -> None:
    """Give every rank rank 0's buffers (BN running statistics) before evaluation or saving."""
    if group.active:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(value: T, group: ProcessGroup) -> T:
    """Rank 0's ``value`` on every rank (any picklable object; works under gloo and NCCL)."""
    if not group.active:
        return value
    holder: list[object] = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]  # type: ignore[return-value]


def barrier(group: ProcessGroup) -> None:
    if group.active:
        dist.barrier()


@contextmanager
def joined_from_environment(device: str) -> Iterator[ProcessGroup]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), join the default process group for the block, then leave it.

    NCCL when the run is on CUDA (each rank on GPU ``LOCAL_RANK``), gloo otherwise; ``torchrun`` sets the
    rendezvous variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``). Alone, or inside a group someone else
    started (Ray Train), it changes nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield current_group()
        return
    on_cuda = device.split(":")[0] in ("auto", "cuda") and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("nccl" if on_cuda else "gloo")
    try:
        yield current_group()
    finally:
        dist.destroy_process_group()
