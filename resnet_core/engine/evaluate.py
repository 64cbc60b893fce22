"""Evaluation: mean loss, top-1 and top-5 error (%) of a model on a labelled split, summed across ranks.

CIFAR (Sec. 4.2): "we only evaluate the single view of the original 32x32 image". ImageNet (Sec. 3.4):
"In testing, for comparison studies we adopt the standard 10-crop testing [21]": a batch of shape
(B, crops, C, H, W) is scored by averaging the softmax over the crops (as AlexNet [21] does); the loss is
the cross-entropy of that average. The model is in inference mode (BN uses its running statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.engine.distributed import ProcessGroup, all_reduce_sum

TOP_K = 5
"""The second error the paper reports on ImageNet (top-5, Tables 2-4)."""


@dataclass(frozen=True)
class Scores:
    loss: float
    """Mean cross-entropy."""
    error: float
    """Top-1 error, percent."""
    top5_error: float
    """Top-5 error, percent (0 when there are at most 5 classes)."""


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for metric sums where the device has it (MPS does not)."""
    return torch.float32 if device.type == "mps" else torch.float64


def top_k_errors(scores: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 errors, top-k errors) as counts over the batch; ``scores`` are logits or probabilities."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return (~hits[:, 0]).sum(), (~hits.any(1)).sum()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    group: ProcessGroup,
    autocast: AbstractContextManager[object],
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Scores:
    """Scores of ``model`` over every rank's ``batches`` (4-D single views or 5-D multi-crop inputs).

    ``prepare`` puts each 4-D batch into the model's memory format (channels-last, see ``engine.step``).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=accumulator_dtype(device), device=device)
    for inputs, labels in batches:
        crops = inputs.shape[1] if inputs.dim() == 5 else 0
        views = inputs.flatten(0, 1) if crops else inputs
        with autocast:
            logits = model(views if prepare is None else prepare(views))
        logits = logits.float()
        if crops:
            probabilities = logits.softmax(1).unflatten(0, (len(labels), crops)).mean(1)
            loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="sum")
            scores = probabilities
        else:
            loss = F.cross_entropy(logits, labels, reduction="sum")
            scores = logits
        top1, top5 = top_k_errors(scores, labels)
        sums[0] += loss
        sums[1] += top1
        sums[2] += top5
        sums[3] += len(labels)
    all_reduce_sum(sums, group)
    model.train(was_training)
    loss_sum, top1_sum, top5_sum, count = sums.tolist()
    count = max(count, 1)
    return Scores(loss_sum / count, 100.0 * top1_sum / count, 100.0 * top5_sum / count)
