"""The training engine: config, paper schedule, fit/evaluate, checkpoints, CLI (He et al. 2015, Sec. 4.2)."""

from resnet_core.engine.config import TrainConfig
from resnet_core.engine.fit import EvalReport, FitResult, fit

__all__ = ["EvalReport", "FitResult", "TrainConfig", "fit"]
