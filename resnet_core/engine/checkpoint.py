"""Checkpoints: the full training state, written atomically and read back with ``weights_only=True``.

A checkpoint holds the unwrapped model's state (never a DDP or compiled wrapper's), the optimizer, the
position in the schedule, the RNG states, the running metric sums, the evaluation history and the config,
so a resumed run continues exactly where the interrupted one stopped. It is written to a temporary file
in the same directory and renamed over the old one: a crash mid-write never leaves a half checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resnet_core.atomic import replacing
from resnet_core.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file + fsync + rename)."""
    with replacing(path, "wb", durable=True) as stream:
        torch.save({"format_version": FORMAT_VERSION, **state}, stream)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with PyTorch's safe ``weights_only`` loader."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}': start a new run without --resume, or pass the run's --out")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint '{path}' ({reason}): it is corrupt or not one of ours") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"'{path}' is not a version-{FORMAT_VERSION} resnet_core checkpoint")
    return state


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG states the engine touches (CPU, and the CUDA device in use)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
