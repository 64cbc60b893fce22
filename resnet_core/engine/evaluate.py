"""Evaluation: mean loss and top-1 error (%) of a model on a labelled set, summed across ranks.

The paper reports CIFAR-10 test error on "the single view of the original 32x32 image" (Sec. 4.2):
no augmentation, model in inference mode (BN uses its running statistics).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.data.augment import Normalizer
from resnet_core.data.batches import LabelledImages, eval_batches
from resnet_core.engine.distributed import ProcessGroup, all_reduce_sum


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for metric sums where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: LabelledImages,
    normalizer: Normalizer,
    batch_size: int,
    group: ProcessGroup,
    autocast: AbstractContextManager[object],
) -> tuple[float, float]:
    """(mean cross-entropy, top-1 error in percent) over all of ``data``; each rank scores its share."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=accumulator_dtype(data.images.device), device=data.images.device)
    for inputs, labels in eval_batches(data, normalizer, batch_size, rank=group.rank, world_size=group.world_size):
        with autocast:
            logits = model(inputs)
        sums[0] += F.cross_entropy(logits.float(), labels, reduction="sum")
        sums[1] += (logits.argmax(1) != labels).sum()
        sums[2] += len(labels)
    all_reduce_sum(sums, group)
    model.train(was_training)
    loss, errors, count = sums.tolist()
    return loss / count, 100.0 * errors / count
