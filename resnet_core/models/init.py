"""Weight initialisation of the paper (Sec. 3.4: "We initialize the weights as in [13]").

[13] is He et al. 2015, "Delving Deep into Rectifiers": zero-mean Gaussians with std sqrt(2 / n). We use
n = k*k*out_channels ("fan_out"), as the authors' endorsed fb.resnet.torch code and torchvision do; [13]
shows either fan is sound. Batch-norm layers start as the identity (weight 1, bias 0). The final
linear layer keeps PyTorch's default initialisation, as in fb.resnet.torch.
"""

from __future__ import annotations

from torch import nn


def init_he(module: nn.Module) -> None:
    """Initialise every convolution and batch-norm layer under ``module`` in place."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)) and getattr(layer.weight, "is_meta", False):
            # a model built on the meta device (to check its options) holds no values; initialising them anyway
            # loads PyTorch's meta-tensor kernels, about a second of every fresh process's start-up
            continue
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
