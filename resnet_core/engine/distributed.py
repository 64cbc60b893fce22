"""What the engine needs from ``torch.distributed``: who am I, how many are we, and sums across ranks.

Without an initialised process group everything degrades to one process, so the same engine runs alone,
under ``torchrun``, or inside a Ray Train worker (which initialises the group before calling it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


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


def barrier(group: ProcessGroup) -> None:
    if group.active:
        dist.barrier()
