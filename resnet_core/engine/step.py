"""One SGD training step, and how it executes: memory format, precision, compiler, optimizer kernel, threads.

What a step computes is the paper's (Sec. 3.4, 4.2): cross-entropy, backward, SGD with momentum and weight
decay. How it runs is :class:`Execution`, resolved once per run from the config and the device:

* ``channels_last`` -- NHWC tensors for the convolutions (cuDNN's and oneDNN's fast layout). Same math.
* ``compile`` -- ``torch.compile`` of the model: ``default`` (Inductor kernels), ``reduce-overhead``
  (Inductor plus CUDA graphs, which remove the launch cost of small CIFAR batches), ``max-autotune``.
* ``bf16`` -- bf16 autocast (CUDA; CPUs with bf16 instructions). A departure from the paper, which trains
  in fp32, so off by default.
* ``fused_sgd`` -- one fused kernel for the whole SGD update instead of a kernel per tensor list.
* ``threads`` -- intra-op CPU threads.

:class:`TrainStep` keeps the raw model (saved in checkpoints, used for evaluation) apart from the module it
trains (DDP- and/or compile-wrapped), and returns the loss and error count as device tensors: nothing in a
step waits for the device, so the host queues step after step (metrics are read at evaluation only).
The engine (:func:`resnet_core.engine.fit.fit`) and the benchmarks both run this class.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.errors import ConfigError
from resnet_core.options import COMPILE_MODES, check_options

if TYPE_CHECKING:
    from resnet_core.engine.config import TrainConfig



@dataclass(frozen=True)
class Execution:
    """How a training step runs on one device; none of it changes what the step computes (bf16 aside)."""

    device: torch.device
    channels_last: bool = False
    compile: str = "none"
    bf16: bool = False
    fused_sgd: bool = False
    threads: int | None = None
    """Intra-op CPU threads this process uses (None: leave PyTorch's setting)."""

    @classmethod
    def resolve(cls, device: torch.device, *, channels_last: bool | None = None, compile: str = "none",
                bf16: bool = False, fused_sgd: bool | None = None, threads: int | None = None) -> Execution:
        """Fill the automatic choices (None) for ``device`` and refuse combinations it cannot run.

        Measured defaults (``benchmarks/train_step.py``): channels-last pays with cuDNN and with oneDNN on
        CPUs (ResNet-20, batch 128, 2 cores: 1.37x), not on MPS; the fused SGD kernel pays on CUDA and was
        slower than the default multi-tensor one on the CPU. Threads: ``OMP_NUM_THREADS`` when set (Ray sets
        it to a worker's CPUs), else the CPUs this process may run on.
        """
        check_options(compile=compile, threads=threads)
        if bf16 and device.type not in ("cuda", "cpu"):
            raise ConfigError(f"bf16 autocast runs on CUDA or CPU, this run is on {device.type}: drop --bf16")
        if fused_sgd and device.type not in ("cuda", "cpu"):
            raise ConfigError(f"the fused SGD kernel runs on CUDA or CPU, not {device.type}: drop --fused-sgd")
        return cls(
            device=device,
            channels_last=device.type in ("cuda", "cpu") if channels_last is None else channels_last,
            compile=compile,
            bf16=bf16,
            fused_sgd=device.type == "cuda" if fused_sgd is None else fused_sgd,
            threads=default_threads() if threads is None else threads,
        )

    @classmethod
    def for_config(cls, config: TrainConfig, device: torch.device) -> Execution:
        """:meth:`resolve` with the execution fields of a run's config."""
        return cls.resolve(device, channels_last=config.channels_last, compile=config.compile, bf16=config.bf16,
                           fused_sgd=config.fused_sgd, threads=config.threads)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast on the device when ``bf16``, else nothing (fp32, as the paper)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def apply_threads(self) -> None:
        """Process settings: the intra-op thread count (CPU work: the model on a CPU, data preparation) and,
        on CUDA, cuDNN's autotuner (batches keep one shape, so the fastest convolution algorithm is found once)."""
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device in this execution's memory format (in place; returns it)."""
        return model.to(self.device, memory_format=self.memory_format)

    def prepare_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """A batch in this execution's memory format (4-D images; other shapes pass unchanged)."""
        if self.channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def compiled(self, module: nn.Module) -> nn.Module:
        """``module`` as it trains: itself, or ``torch.compile(module, mode=...)``."""
        if self.compile == "none":
            return module
        return torch.compile(module, mode=self.compile)  # type: ignore[return-value]

    def describe(self) -> str:
        parts = ["channels-last" if self.channels_last else "NCHW", "bf16 autocast" if self.bf16 else "fp32",
                 "eager" if self.compile == "none" else f"compiled ({self.compile})",
                 "fused SGD" if self.fused_sgd else "multi-tensor SGD"]
        if self.threads is not None and self.device.type == "cpu":
            parts.append(f"{self.threads} threads")
        return ", ".join(parts)


def affinity_cpus() -> int | None:
    """The CPUs this process may run on (its affinity mask), or None where the OS does not tell (not Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None


def default_threads() -> int | None:
    """``OMP_NUM_THREADS`` when set (it is PyTorch's own default then), else the CPUs this process may use.

    PyTorch counts the machine's cores by default; in a container or under ``taskset`` fewer may be ours, and
    more threads than CPUs make every step wait on the slowest one.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return affinity_cpus()


def sgd(model: nn.Module, *, lr: float, momentum: float, weight_decay: float, execution: Execution
        ) -> torch.optim.SGD:
    """The paper's optimizer (SGD, momentum 0.9, weight decay 1e-4 on every parameter, Sec. 3.4 / 4.2)."""
    kernel: dict[str, bool] = {"fused": True} if execution.fused_sgd else {}
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, **kernel)


class TrainStep:
    """Forward, cross-entropy, backward and SGD update of ``trained`` (which wraps ``model``) on one batch."""

    def __init__(self, model: nn.Module, trained: nn.Module, optimizer: torch.optim.Optimizer,
                 execution: Execution) -> None:
        self.model = model
        """The raw module: what checkpoints hold and evaluation runs."""
        self.trained = execution.compiled(trained)
        self.optimizer = optimizer
        self.execution = execution

    @classmethod
    def create(cls, model: nn.Module, execution: Execution, *, lr: float = 0.1, momentum: float = 0.9,
               weight_decay: float = 1e-4, wrap: Callable[[nn.Module], nn.Module] | None = None) -> TrainStep:
        """A step over ``model``, moved to the device in the execution's memory format. ``wrap`` makes the
        module that trains from the moved model (DistributedDataParallel across processes); without it the
        model trains itself."""
        execution.apply_threads()
        execution.prepare_model(model)
        optimizer = sgd(model, lr=lr, momentum=momentum, weight_decay=weight_decay, execution=execution)
        return cls(model, model if wrap is None else wrap(model), optimizer, execution)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update; returns (mean loss, number of top-1 errors) as 0-d device tensors, without waiting."""
        inputs = self.execution.prepare_inputs(inputs)
        with self.execution.autocast():
            logits = self.trained(inputs)
        loss = F.cross_entropy(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            errors = (logits.argmax(1) != labels).sum()
        return loss.detach(), errors


__all__ = ["COMPILE_MODES", "Execution", "TrainStep", "affinity_cpus", "check_options", "default_threads", "sgd"]
