"""Registered ImageNet models: the five depths of paper Table 1, the plain nets of Table 2, and v1.5 twins.

Errors are the paper's top-1 / top-5 validation errors with 10-crop testing. ResNet-18 is known only from
Table 2 (top-1, option A: no extra parameters); ResNet-34 carries Table 3's option B row, the registered
default (Table 2's option A gives 25.03, Table 3's option C 24.19 / 7.40); ResNet-50/101/152 are option B
(Table 3 caption). Multiply-adds are Table 1's, in units of 10^9; a plain net has its twin's count, as it
has the same layers. Table 1 gives no parameter counts, so ``paper_params`` stays empty.

``stride_in`` is an option of the bottleneck nets only: basic blocks have no 1x1 layer to take the
stride, so ``resnet18`` and ``resnet34`` reject it. ``resnetXX_v1_5`` pin torchvision's placement (stride
on the 3x3); they are not the paper's models and carry none of its figures.
"""

from __future__ import annotations

from resnet_core.models.imagenet import imagenet_resnet
from resnet_core.models.registry import ModelInfo, freeze, register

# depth -> (Table 1 multiply-adds x10^9, top-1 error %, top-5 error % or None, where the errors come from)
PAPER_TABLES_1_TO_3: dict[int, tuple[float, float, float | None, str]] = {
    18: (1.8, 27.88, None, "Table 2, option A"),
    34: (3.6, 24.52, 7.46, "Table 3, option B"),
    50: (3.8, 22.85, 6.71, "Table 3"),
    101: (7.6, 21.75, 6.05, "Table 3"),
    152: (11.3, 21.43, 5.71, "Table 3"),
}

# depth -> (top-1 error %, top-5 error % or None, where they come from) of the plain nets
PAPER_PLAIN: dict[int, tuple[float, float | None, str]] = {
    18: (27.94, None, "Table 2"),
    34: (28.54, 10.02, "Tables 2-3"),
}

PAPER_RESNET34_OPTIONS: dict[str, tuple[float, float]] = {"A": (25.03, 7.76), "B": (24.52, 7.46), "C": (24.19, 7.40)}
"""ResNet-34's top-1 / top-5 errors (%, 10-crop) per shortcut option, Table 3 (Table 2's ResNet-34 is option A)."""
_PAPER_OPTION = {18: "A", 50: "B", 101: "B", 152: "B"}
"""The one option whose figures the paper gives at each other depth: ResNet-18 only in Table 2 (option A, "zero-padding
for increasing dimensions"), ResNet-50/101/152 only as option B (Table 3)."""


def paper_imagenet_errors(arch: str, shortcut: str | None) -> tuple[float, float | None] | None:
    """The paper's top-1 / top-5 validation errors (%, full ImageNet, 10-crop; Tables 2-3) of ``arch`` with shortcut
    option ``shortcut`` (None for a plain net), or None where the paper gives no figure for that pair."""
    if arch.startswith("plain") and arch[5:].isdigit() and int(arch[5:]) in PAPER_PLAIN:
        top1, top5, _ = PAPER_PLAIN[int(arch[5:])]
        return top1, top5
    if not (arch.startswith("resnet") and arch[6:].isdigit()) or int(arch[6:]) not in PAPER_TABLES_1_TO_3:
        return None
    depth = int(arch[6:])
    if depth == 34:
        return PAPER_RESNET34_OPTIONS.get(shortcut or "")
    if shortcut != _PAPER_OPTION[depth]:
        return None
    _, top1, top5, _ = PAPER_TABLES_1_TO_3[depth]
    return top1, top5


_BASIC_OPTIONS = freeze({"num_classes": 1000, "shortcut": "B"})
_BOTTLENECK_OPTIONS = freeze({"num_classes": 1000, "shortcut": "B", "stride_in": "1x1"})
_REFERENCE = "He et al. 2015, Sec. 3.4 and 4.1, Table 1"
_INPUT_SIZE = 224

for _depth, (_flops, _top1, _top5, _where) in PAPER_TABLES_1_TO_3.items():
    register(
        ModelInfo(
            name=f"resnet{_depth}",
            family="imagenet",
            builder=imagenet_resnet,
            options=_BOTTLENECK_OPTIONS if _depth >= 50 else _BASIC_OPTIONS,
            fixed=freeze({"depth": _depth, "residual": True}),
            paper_error=_top1,
            reference=f"{_REFERENCE}; errors: {_where}",
            paper_top5_error=_top5,
            paper_flops=_flops,
            input_size=_INPUT_SIZE,
        )
    )

for _depth, (_top1, _top5, _where) in PAPER_PLAIN.items():
    register(
        ModelInfo(
            name=f"plain{_depth}",
            family="imagenet",
            builder=imagenet_resnet,
            options=_BASIC_OPTIONS,  # the shortcut option is accepted, as by every model, and unused
            fixed=freeze({"depth": _depth, "residual": False}),
            paper_error=_top1,
            reference=f"{_REFERENCE}, Fig. 3 (middle); errors: {_where}",
            paper_top5_error=_top5,
            paper_flops=PAPER_TABLES_1_TO_3[_depth][0],
            input_size=_INPUT_SIZE,
        )
    )

# torchvision's "v1.5": the stride of conv3_1, conv4_1, conv5_1 on the 3x3 convolution (not the paper's).
for _depth in (50, 101, 152):
    register(
        ModelInfo(
            name=f"resnet{_depth}_v1_5",
            family="imagenet",
            builder=imagenet_resnet,
            options=_BASIC_OPTIONS,
            fixed=freeze({"depth": _depth, "residual": True, "stride_in": "3x3"}),
            reference=f"torchvision's ResNet-{_depth} (stride on the 3x3); {_REFERENCE}",
            input_size=_INPUT_SIZE,
        )
    )
