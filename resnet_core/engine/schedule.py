"""The paper's learning-rate schedules, counted in iterations (He et al. 2015, Sec. 4.2 and 3.4).

Step decay (CIFAR, Sec. 4.2): ``lr`` divided by 10 (``lr_decay``) at each milestone (32k and 48k of 64k
iterations). Plateau decay (ImageNet, Sec. 3.4): "divided by 10 when the error plateaus" -- the paper gives
no patience or threshold; :class:`PlateauMonitor` makes both options. The base rate is ``lr``, scaled
linearly with the batch when ``lr_reference_batch`` is set (:attr:`TrainConfig.scaled_lr`).
Warm-up for very deep nets (Sec. 4.2, ResNet-110): "we use 0.01 to warm up the training until the training
error is below 80% (about 400 iterations), and then go back to 0.1 and continue training". Warm-up ends on
the training error, not on an iteration count, and the schedule then returns to the *base* rate: the most
used PyTorch reimplementation lowers the rate once and never raises it again; this one does.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_core.engine.config import TrainConfig

WARMUP_MIN_DEPTH = 110
"""The paper warms up ResNet-110 and ResNet-1202 (Sec. 4.2); shallower nets start at 0.1 directly."""


def warmup_enabled(config: TrainConfig, depth: int | None) -> bool:
    """Whether this run warms up: the config's explicit choice, else the paper's (CIFAR depth >= 110)."""
    if config.warmup is not None:
        return config.warmup
    return not config.is_imagenet and depth is not None and depth >= WARMUP_MIN_DEPTH


@dataclass(frozen=True)
class StepSchedule:
    """Piecewise-constant rate: ``base_lr * decay ** (milestones passed)``, or ``warmup_lr`` while warming."""

    base_lr: float
    milestones: tuple[int, ...]
    decay: float
    warmup_lr: float

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepSchedule:
        return cls(config.scaled_lr, config.milestones, config.lr_decay, config.warmup_lr)

    def lr(self, iteration: int, warming_up: bool = False, plateau_decays: int = 0) -> float:
        """Rate for the update made at 0-based ``iteration`` (updates 32000.. use the first decay), after
        ``plateau_decays`` divisions decided by a :class:`PlateauMonitor`."""
        if warming_up:
            return self.warmup_lr
        passed = sum(1 for milestone in self.milestones if iteration >= milestone)
        return self.base_lr * self.decay ** (passed + plateau_decays)


@dataclass
class PlateauMonitor:
    """Counts rate divisions "when the error plateaus" (Sec. 3.4), from the held-out error of each evaluation.

    After ``patience`` evaluations in a row without an error at least ``threshold`` points below the best so
    far, the rate is divided once more and the count starts again. Holds plain numbers, saved in checkpoints.
    """

    enabled: bool
    patience: int
    threshold: float
    best: float = float("inf")
    stale: int = 0
    decays: int = 0

    @classmethod
    def from_config(cls, config: TrainConfig) -> PlateauMonitor:
        return cls(config.lr_schedule == "plateau", config.plateau_patience, config.plateau_threshold)

    def update(self, error_percent: float) -> bool:
        """Record one evaluation's error; returns whether the rate is divided from now on."""
        if not self.enabled:
            return False
        if error_percent < self.best - self.threshold:
            self.best, self.stale = error_percent, 0
            return False
        self.best = min(self.best, error_percent)
        self.stale += 1
        if self.stale < self.patience:
            return False
        self.stale = 0
        self.decays += 1
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {"best": self.best, "stale": self.stale, "decays": self.decays}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best, self.stale, self.decays = float(state["best"]), int(state["stale"]), int(state["decays"])


@dataclass
class WarmupMonitor:
    """Decides the end of warm-up from the mean training error of the last ``window`` iterations.

    Holds only counts, so the engine can accumulate them on the device and read them once a window.
    """

    active: bool
    until_error: float
    window: int
    ended_at: int | None = None

    def update(self, iteration: int, window_error_percent: float) -> bool:
        """Record the error of the window ending at ``iteration``; returns whether warm-up just ended."""
        if self.active and window_error_percent < self.until_error:
            self.active = False
            self.ended_at = iteration
            return True
        return False
