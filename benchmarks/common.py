"""What every benchmark records next to its figures (hardware, versions, commit, time), and how it times.

Timing follows one rule everywhere: warm up first (caches, cuDNN / oneDNN algorithm choice, compilation),
then time whole runs of many steps; on CUDA, synchronise before reading the clock (the host runs ahead of
the device). Figures are the mean and sample standard deviation over runs.

torch and torchvision are imported by the functions that use them, so that a process which only writes rows
(the GPU suite's parent, ``benchmarks/gpu_suite.py``) starts without them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

RESULTS = Path(__file__).parent / "results"


def environment(device: torch.device) -> dict[str, Any]:
    import torch
    import torchvision

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or None
    except OSError:
        commit = None
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


DATA_ENV = "RESNET_DATA_DIR"
"""The folder holding the real data archives, when ``--data`` is not given."""


def data_file(value: str | None, archive: str) -> Path | None:
    """``--data`` (``value``), else ``$RESNET_DATA_DIR/<archive>``; None when neither is given."""
    if value:
        return Path(value).expanduser()
    folder = os.environ.get(DATA_ENV)
    return Path(folder).expanduser() / archive if folder else None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS); a no-op on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seconds_per_call(work: Callable[[], object], calls: int, device: torch.device) -> float:
    """Mean wall seconds of ``work()`` over ``calls`` calls, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        work()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def append_results(name: str, rows: list[dict[str, Any]]) -> Path:
    """Append ``rows`` as JSON lines to ``benchmarks/results/<name>.jsonl``."""
    return append_rows(RESULTS / f"{name}.jsonl", rows)


def append_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Append ``rows`` as JSON lines to ``path`` and flush them to the file before returning.

    A writer killed mid-line leaves a line without its newline; the next rows then start on a line of their
    own, so only the cut line is lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as stream:
        if stream.tell() > 0:
            with path.open("rb") as existing:
                existing.seek(-1, os.SEEK_END)
                if existing.read(1) != b"\n":
                    stream.write(b"\n")
        stream.write(b"".join(json.dumps(row).encode() + b"\n" for row in rows))
        stream.flush()
    return path
