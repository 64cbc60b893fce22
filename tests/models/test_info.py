"""``python -m resnet_core.info``: exact parameters and Table 1 multiply-adds per model; mistakes are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from resnet_core import list_models
from resnet_core.info import COLUMNS, main, run


def _rows(table: str) -> dict[str, dict[str, str]]:
    """The printed table as name -> column -> cell (cells are separated by two or more spaces)."""
    lines = table.splitlines()
    header = lines[0].split("  ")
    header = [cell.strip() for cell in header if cell.strip()]
    assert tuple(header) == COLUMNS
    rows = {}
    for line in lines[1:-1]:  # the last line is the legend
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        assert len(cells) == len(COLUMNS), line
        rows[cells[0]] = dict(zip(COLUMNS, cells))
    return rows


def _module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resnet_core.info", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_command_prints_resnet50_and_resnet20_exactly() -> None:
    result = _module("resnet50", "resnet20")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout.strip())
    assert rows["resnet50"]["params"] == "25,557,032"
    assert abs(float(rows["resnet50"]["mult-adds 1e9"]) - 3.8) / 3.8 < 0.05
    assert rows["resnet50"]["paper mult-adds"] == "3.8" and rows["resnet50"]["stride_in"] == "1x1"
    assert rows["resnet50"]["paper error %"] == "22.85 / 6.71"
    assert rows["resnet20"]["params"] == "269,722" and rows["resnet20"]["input"] == "32"
    assert rows["resnet20"]["paper params"] == "0.27M" and rows["resnet20"]["paper error %"] == "8.75"


def test_unknown_architecture_is_one_line_and_exit_code_2() -> None:
    result = _module("resnet51")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("resnet_core.info: error: unknown architecture 'resnet51': use one of ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_no_arch_lists_every_registered_model_and_all_overrides_names() -> None:
    everything = _rows(run([]))  # CIFAR and ImageNet; resnet1202 included (meta device: about a second)
    assert list(everything) == list_models()
    assert everything["resnet1202"]["params"] == "19,421,274" and everything["resnet152"]["params"] == "60,192,808"
    assert list(_rows(run(["resnet20", "--all", "--family", "imagenet"]))) == list_models("imagenet")


def test_stride_in_applies_to_bottleneck_nets_only() -> None:
    rows = _rows(run(["resnet50", "resnet18", "resnet50_v1_5", "--stride-in", "3X3"]))
    assert rows["resnet50"]["stride_in"] == "3x3" and rows["resnet50"]["mult-adds 1e9"] == "4.09"
    assert rows["resnet18"]["stride_in"] == "-" and rows["resnet18"]["mult-adds 1e9"] == "1.81"
    assert rows["resnet50_v1_5"]["mult-adds 1e9"] == "4.09"
    assert _rows(run(["resnet50_v1_5", "--stride-in", "1x1"]))["resnet50_v1_5"]["stride_in"] == "3x3"  # pinned


def test_shortcut_num_classes_and_input_size_overrides() -> None:
    rows = _rows(run(["resnet34", "plain34", "--shortcut", "a"]))
    assert rows["resnet34"]["params"] == rows["plain34"]["params"] == "21,623,848"  # no projections
    assert rows["resnet34"]["shortcut"] == "A" and rows["plain34"]["shortcut"] == "-"
    assert _rows(run(["resnet50", "--num-classes", "10"]))["resnet50"]["params"] == "23,528,522"
    small = _rows(run(["resnet18", "--input-size", "112"]))["resnet18"]
    assert small["input"] == "112" and float(small["mult-adds 1e9"]) < 1.81 / 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resnet50", "--shortcut", "D"], "resnet_core.info: error: argument --shortcut: invalid choice: 'D'"),
        (["resnet50", "--num-classes", "0"], "resnet_core.info: error: num_classes must be at least 1, got 0"),
        (["resnet50", "--input-size", "0"], "resnet_core.info: error: --input-size must be at least 1 pixel"),
        (["resnet50", "--stride-in", "2x2"], "resnet_core.info: error: argument --stride-in: invalid choice"),
    ],
)
def test_bad_options_are_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1
