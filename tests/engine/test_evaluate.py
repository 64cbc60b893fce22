"""Evaluation: top-1 / top-5 errors, and the paper's 10-crop testing (Sec. 3.4) averaging softmax over crops."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from resnet_core.engine.distributed import ProcessGroup
from resnet_core.engine.evaluate import evaluate, top_k_errors

ALONE = ProcessGroup(0, 1, 0)


class Logits(nn.Module):
    """A 'model' whose logits are its input (B, C, 1, 1) -> (B, C): the test chooses the scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _score(inputs: torch.Tensor, labels: torch.Tensor):
    return evaluate(Logits(), [(inputs, labels)], torch.device("cpu"), ALONE, contextlib.nullcontext())


def test_top1_and_top5_errors() -> None:
    scores = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3],   # label 0: top-1 hit
                           [9.0, 8, 7, 6, 5, 4, 3],   # label 2: top-1 miss, top-5 hit
                           [9.0, 8, 7, 6, 5, 4, 3]])  # label 6: both miss
    top1, top5 = top_k_errors(scores, torch.tensor([0, 2, 6]))
    assert (int(top1), int(top5)) == (2, 1)
    result = _score(scores[:, :, None, None], torch.tensor([0, 2, 6]))
    assert result.error == pytest.approx(200 / 3) and result.top5_error == pytest.approx(100 / 3)


def test_ten_identical_crops_score_as_one_view() -> None:
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2, 3, 4])
    single = _score(logits[:, :, None, None], labels)
    tenfold = _score(logits[:, None, :, None, None].expand(4, 10, 10, 1, 1), labels)
    assert tenfold.loss == pytest.approx(single.loss, rel=1e-5)
    assert (tenfold.error, tenfold.top5_error) == (single.error, single.top5_error)


def test_ten_crop_averages_probabilities_not_logits() -> None:
    """One confident crop for class 0 against nine mild votes for class 1: the mean softmax picks class 1,
    while averaging logits would pick class 0."""
    crops = torch.zeros(1, 10, 2, 1, 1)
    crops[0, 0, 0] = 20.0  # p(class 0) ~ 1 on crop 0
    crops[0, 1:, 1] = 1.0  # p(class 1) = 0.73 on the nine others
    result = _score(crops, torch.tensor([1]))
    mean_probability = (torch.tensor([20.0, 0.0]).softmax(0)[1] + 9 * torch.tensor([0.0, 1.0]).softmax(0)[1]) / 10
    assert result.error == 0.0
    assert result.loss == pytest.approx(float(-mean_probability.log()), rel=1e-5)
    assert crops.mean(1).flatten(1).argmax(1).item() == 0  # the logit mean disagrees
