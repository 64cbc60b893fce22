"""Model complexity: trainable parameters (paper Table 6) and multiply-adds ("FLOPs", paper Table 1).

Multiply-adds are measured, not derived from formulas: PyTorch's ``FlopCounterMode`` counts the operations
of every convolution and matrix product in one forward pass (two per multiply-add); batch norm, ReLU,
pooling and the shortcut additions are not counted. The pass runs on the meta device, which allocates no
memory and does no arithmetic, so it is instant even for ResNet-152 or ResNet-1202; a model with an
operation that has no meta implementation is run for real on its own device instead.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from resnet_core.models.registry import MODELS


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters, the figure of paper Table 6."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _forward_flops(model: nn.Module, image: torch.Tensor, state: dict[str, torch.Tensor] | None) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if state is None:
            model(image)
        else:
            functional_call(model, state, (image,))
    return counter.get_total_flops()


def multiply_adds(model: nn.Module, input_size: int, channels: int = 3) -> int:
    """Multiply-adds of one forward pass of ``model`` on a single ``channels`` x ``input_size``^2 image.

    The model is used in eval mode (its own training flags are restored) and is never changed: its
    parameters and buffers are stood in for by meta tensors of the same shapes.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()  # batch norm refuses a single value per channel in training mode (e.g. a 1x1 map)
    try:
        tensors = chain(model.named_parameters(), model.named_buffers())
        state = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors}
        image = torch.empty(1, channels, input_size, input_size, device="meta")
        try:
            flops = _forward_flops(model, image, state)
        except NotImplementedError:  # an operation without a meta kernel: count a real pass instead
            device = next(chain(model.parameters(), model.buffers()), torch.empty(0)).device
            flops = _forward_flops(model, torch.zeros(1, channels, input_size, input_size, device=device), None)
    finally:
        for module, training in modes.items():
            module.training = training
    return flops // 2


def describe(name: str, input_size: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The registered model ``name`` built with ``overrides`` (on the meta device): its options, parameters
    and multiply-adds at ``input_size`` (default: the model's natural size), next to the paper's figures.
    """
    info = MODELS.info(name)
    with torch.device("meta"):
        model = MODELS.create(name, **overrides)
    arguments = {**info.options, **{key: value for key, value in overrides.items() if value is not None}}
    arguments.update(info.fixed)
    size = input_size or info.input_size
    stride_in = getattr(model, "stride_in", None)
    residual = bool(getattr(model, "residual", info.residual))
    return {
        "name": name,
        "family": info.family,
        "depth": getattr(model, "depth", info.depth),
        "residual": residual,
        "shortcut": model.shortcut.value if residual and hasattr(model, "shortcut") else None,
        "stride_in": stride_in.value if stride_in is not None else None,
        "num_classes": arguments.get("num_classes"),
        "input_size": size,
        "params": count_parameters(model),
        "multiply_adds": multiply_adds(model, size),
        "paper_params": info.paper_params,
        "paper_flops": info.paper_flops,
        "paper_error": info.paper_error,
        "paper_top5_error": info.paper_top5_error,
        "reference": info.reference,
    }
