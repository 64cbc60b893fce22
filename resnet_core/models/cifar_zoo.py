"""Registered CIFAR models: the depths of paper Table 6 / Fig. 6 and their plain twins.

Errors are the paper's CIFAR-10 test errors (Table 6, best of 5 runs except ResNet-110, whose
"best (mean+-std)" entry is 6.43 (6.61+-0.16)); the plain nets appear only in Fig. 6, so they carry none.
"""

from __future__ import annotations

from resnet_core.models.cifar import CifarResNet
from resnet_core.models.registry import ModelInfo, freeze, register

# depth -> (paper parameter count as printed in Table 6, paper test error %)
PAPER_TABLE_6: dict[int, tuple[str, float]] = {
    20: ("0.27M", 8.75),
    32: ("0.46M", 7.51),
    44: ("0.66M", 7.17),
    56: ("0.85M", 6.97),
    110: ("1.7M", 6.43),
    1202: ("19.4M", 7.93),
}

_OPTIONS = freeze({"num_classes": 10, "shortcut": "A"})
_REFERENCE = "He et al. 2015, Sec. 4.2"

for _depth, (_params, _error) in PAPER_TABLE_6.items():
    for _prefix, _residual, _where in (("resnet", True, "Table 6"), ("plain", False, "Fig. 6 (left)")):
        register(
            ModelInfo(
                name=f"{_prefix}{_depth}",
                family="cifar",
                builder=CifarResNet,
                options=_OPTIONS,
                fixed=freeze({"depth": _depth, "residual": _residual}),
                paper_error=_error if _residual else None,
                paper_params=_params,
                reference=f"{_REFERENCE}, {_where}",
            )
        )

# Any depth 6n+2, e.g. create_model("cifar_resnet", depth=26).
for _name, _residual in (("cifar_resnet", True), ("cifar_plain", False)):
    register(
        ModelInfo(
            name=_name,
            family="cifar",
            builder=CifarResNet,
            options=freeze({"depth": 20, "num_classes": 10, "shortcut": "A"}),
            fixed=freeze({"residual": _residual}),
            reference=_REFERENCE,
        )
    )
