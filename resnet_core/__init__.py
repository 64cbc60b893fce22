"""resnet_core: the networks, data and training engine of He et al. 2015, "Deep Residual Learning for
Image Recognition", shared by the single-run CLI and the distributed study service."""

from resnet_core.data.sources import ImageDataset, load_image_dataset
from resnet_core.engine import EvalReport, FitResult, TrainConfig, fit
from resnet_core.errors import CheckpointError, ConfigError, DataError, ResnetCoreError
from resnet_core.models import count_parameters, create_model, list_models, model_info

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EvalReport",
    "FitResult",
    "ImageDataset",
    "ResnetCoreError",
    "TrainConfig",
    "count_parameters",
    "create_model",
    "fit",
    "list_models",
    "load_image_dataset",
    "model_info",
]
