"""``python -m resnet_core.info [ARCH ...]``: parameters and multiply-adds of registered models vs the paper.

One row per model: exact trainable parameters, multiply-adds (x10^9) of one image at the model's natural
size (224 for ImageNet, 32 for CIFAR; ``--input-size`` changes it), and the paper's figures where it gives
them: Table 1's multiply-adds, Table 6's parameter count, and the error (CIFAR-10 test error, Table 6;
ImageNet top-1 / top-5 validation error with 10-crop testing, Tables 2-3). Without ARCH (or with
``--all``) every registered model is listed. Models are built on the meta device, so even ResNet-1202 is
measured in about a second. A mistake (unknown architecture, bad option) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from resnet_core.engine.cli import OneLineParser
from resnet_core.errors import ResnetCoreError
from resnet_core.models import describe, list_models, model_info
from resnet_core.options import SHORTCUT_OPTIONS, STRIDE_IN

PROG = "resnet_core.info"
COLUMNS = ("name", "family", "depth", "shortcut", "stride_in", "input", "params", "mult-adds 1e9",
           "paper mult-adds", "paper params", "paper error %")
LEGEND = ("paper error: CIFAR-10 test error (Table 6, option A); ImageNet top-1 / top-5 validation error, 10-crop "
          "(Tables 2-3; option B, ResNet-18 option A; stride on the 1x1)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Parameters and multiply-adds of the registered models next to "
                           "the paper's figures (He et al. 2015, Tables 1, 2, 3 and 6).")
    add = parser.add_argument
    add("archs", nargs="*", metavar="ARCH", help="registered model names, e.g. resnet50 resnet20 (default: all)")
    add("--all", action="store_true", help="list every registered model (the default without ARCH)")
    add("--family", choices=["cifar", "imagenet"], help="only the models of this family")
    add("--shortcut", choices=SHORTCUT_OPTIONS, type=str.upper, help="shortcut option (paper Table 3)")
    add("--stride-in", choices=STRIDE_IN, type=str.lower,
        help="stride of downsampling bottlenecks: 1x1 (the paper) or 3x3 (torchvision v1.5); only models with a "
             "stride_in option take it")
    add("--input-size", type=int, help="image side in pixels (default: the model's, 224 ImageNet / 32 CIFAR)")
    add("--num-classes", type=int, help="classifier outputs (default: the model's, 1000 ImageNet / 10 CIFAR)")
    return parser


def _overrides(name: str, options: argparse.Namespace) -> dict[str, Any]:
    """The command's options that model ``name`` takes (e.g. basic-block nets have no stride_in)."""
    given = {"shortcut": options.shortcut, "stride_in": options.stride_in, "num_classes": options.num_classes}
    accepted = model_info(name).options
    return {key: value for key, value in given.items() if value is not None and key in accepted}


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_row(row: dict[str, Any]) -> list[str]:
    """The table cells of one :func:`resnet_core.models.describe` result."""
    error = _number(row["paper_error"])
    if row["paper_top5_error"] is not None:
        error += f" / {_number(row['paper_top5_error'])}"
    return [
        row["name"],
        row["family"],
        str(row["depth"]),
        row["shortcut"] or "-",
        row["stride_in"] or "-",
        str(row["input_size"]),
        f"{row['params']:,}",
        f"{row['multiply_adds'] / 1e9:.2f}",
        _number(row["paper_flops"], 1),
        row["paper_params"] or "-",
        error,
    ]


def format_table(rows: list[list[str]]) -> str:
    """Columns aligned: text to the left, numbers to the right."""
    table = [list(COLUMNS), *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    left = {0, 1, 3, 4}
    return "\n".join(
        "  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        .rstrip()
        for line in table
    )


def run(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` and return the table (every name is checked before any model is built)."""
    options = build_parser().parse_args(argv)
    if options.input_size is not None and options.input_size < 1:
        raise ResnetCoreError(f"--input-size must be at least 1 pixel, got {options.input_size}")
    names = list(options.archs) if options.archs and not options.all else list_models()
    for name in names:
        model_info(name)  # an unknown name fails here, before any output
    if options.family:
        names = [name for name in names if model_info(name).family == options.family]
    rows = [
        format_row(describe(name, input_size=options.input_size, **_overrides(name, options))) for name in names
    ]
    return f"{format_table(rows)}\n{LEGEND}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        print(run(argv))
    except ResnetCoreError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
