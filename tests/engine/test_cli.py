"""``python -m resnet_core.train``: the run directory it writes, resume, and one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from synthetic import make_dataset, write_image_tree

from resnet_core.engine.checkpoint import load_checkpoint
from resnet_core.engine.cli import build_parser, main, option_name
from resnet_core.engine.config import default_note, field_specs

REPO = Path(__file__).resolve().parents[2]
FAST = ["--arch", "cifar_resnet", "--depth", "8", "--batch-size", "32", "--device", "cpu", "--no-progress",
        "--eval-every", "5"]
ONE_THREAD = ["--threads", "1"]  # a subprocess beside pytest (and whatever else runs) on a 2-core machine


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    return write_image_tree(make_dataset(), tmp_path_factory.mktemp("tree") / "tiny")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "resnet_core.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _interrupted_cli(*args: str, cwd: Path, ready: Callable[[str], bool], sig: signal.Signals) -> tuple[int, str]:
    """Start the CLI, send it ``sig`` once ``ready(stderr so far)`` holds, and return its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = cwd / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "resnet_core.train", *args], cwd=cwd, env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not ready(log.read_text()):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            process.send_signal(sig)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, log.read_text()


def _last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


def test_run_directory_contents_and_resume(image_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main([*FAST, *cache, "--data", str(image_tree), "--iterations", "10", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "cifar_resnet" and config["depth"] == 8 and config["iterations"] == 10
    with (out / "metrics.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["iteration", "lr", "train_loss", "train_error", "test_loss", "test_error", "seconds"]
    assert [row["iteration"] for row in rows] == ["5", "10"]
    results = json.loads((out / "results.json").read_text())
    assert {"arch", "shortcut", "params", "iterations", "test_error", "wall_seconds"} <= set(results)
    assert results["shortcut"] == "A" and results["iterations"] == 10 and 0 <= results["test_error"] <= 100
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 10

    # The same --out without --resume would overwrite a run: refused, nothing touched.
    assert main([*FAST, *cache, "--data", str(image_tree), "--iterations", "10", "--out", str(out)]) == 2
    # --resume continues to a larger budget; saved settings are kept, rows are appended.
    assert main(["--resume", "--iterations", "15", "--out", str(out), "--no-progress"]) == 0
    with (out / "metrics.csv").open() as stream:
        assert [row["iteration"] for row in csv.DictReader(stream)] == ["5", "10", "15"]
    assert json.loads((out / "results.json").read_text())["iterations"] == 15


def test_every_flag_reaches_the_config() -> None:
    args = build_parser().parse_args([
        "--arch", "resnet56", "--shortcut", "b", "--data", "d", "--dataset", "cifar100", "--no-download",
        "--cache-dir", "c", "--val-split", "5000", "--normalization", "channel", "--no-augment",
        "--batch-size", "64", "--lr", "0.05", "--momentum", "0.8", "--weight-decay", "5e-4",
        "--iterations", "100", "--milestones", "50,75", "--lr-decay", "0.2", "--warmup", "--warmup-lr", "0.02",
        "--seed", "3", "--device", "cpu", "--eval-every", "10", "--eval-batch-size", "500",
        "--checkpoint-every", "20", "--checkpoint-seconds", "90", "--bf16", "--out", "o", "--resume", "--no-progress",
    ])
    options = vars(args)
    assert (options.pop("out"), options.pop("resume"), options.pop("progress")) == ("o", True, False)
    from resnet_core import TrainConfig

    config = TrainConfig.from_dict(options)
    assert config.shortcut == "B" and config.milestones == (50, 75) and config.warmup is True
    assert (config.dataset, config.download, config.augment, config.bf16) == ("cifar100", False, False, True)
    assert (config.val_split, config.normalization, config.lr_decay, config.warmup_lr) == (5000, "channel", 0.2, 0.02)
    assert (config.checkpoint_every, config.checkpoint_seconds) == (20, 90.0)
    assert build_parser().parse_args(["--no-warmup"]).warmup is False


def test_every_execution_flag_reaches_the_config() -> None:
    from resnet_core import TrainConfig

    parse = build_parser().parse_args
    config = TrainConfig.from_dict(vars(parse(["--channels-last", "--compile", "reduce-overhead", "--fused-sgd",
                                               "--threads", "3", "--bf16"])))
    assert (config.channels_last, config.compile, config.fused_sgd, config.threads, config.bf16) == (
        True, "reduce-overhead", True, 3, True)
    config = TrainConfig.from_dict(vars(parse(["--no-channels-last", "--no-fused-sgd"])))
    assert (config.channels_last, config.fused_sgd, config.compile) == (False, False, "none")
    assert TrainConfig.from_dict(vars(parse([]))).channels_last is None  # automatic unless given


def test_execution_flags_from_the_command_line(image_tree: Path, tmp_path: Path) -> None:
    """The flags run end to end: a channels-last, single-thread CPU run with the multi-tensor SGD writes its
    results. (Compilation itself is exercised in test_step.py; one cold compile per suite is enough.)"""
    import torch

    out, threads = tmp_path / "run", torch.get_num_threads()
    try:
        code = main([*FAST, "--data", str(image_tree), "--cache-dir", str(tmp_path / "cache"), "--iterations", "4",
                     "--compile", "none", "--channels-last", "--no-fused-sgd", "--threads", "1",
                     "--out", str(out)])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["compile"], saved["channels_last"], saved["threads"]) == ("none", True, 1)
    assert json.loads((out / "results.json").read_text())["iterations"] == 4


def test_every_imagenet_and_schedule_flag_reaches_the_config() -> None:
    options = vars(build_parser().parse_args([
        "--dataset", "imagenet", "--arch", "resnet50", "--stride-in", "3x3", "--preset", "torchvision",
        "--image-size", "160", "--eval-crops", "10", "--workers", "3", "--skip-corrupt", "--mean-images", "500",
        "--epochs", "90", "--milestone-epochs", "30,60", "--lr-schedule", "step", "--plateau-patience", "2",
        "--plateau-threshold", "0.5", "--lr-reference-batch", "128",
    ]))
    from resnet_core import TrainConfig

    config = TrainConfig.from_dict(options)
    assert (config.dataset, config.arch, config.stride_in, config.preset) == ("imagenet", "resnet50", "3x3",
                                                                             "torchvision")
    assert (config.image_size, config.crops, config.workers, config.skip_corrupt, config.mean_images) == (
        160, 10, 3, True, 500)
    assert (config.epochs, config.milestone_epochs, config.milestones, config.lr_schedule) == (90, (30, 60), (), "step")
    assert (config.plateau_patience, config.plateau_threshold, config.lr_reference_batch) == (2, 0.5, 128)
    assert config.batch_size == 256 and config.scaled_lr == 0.2  # the ImageNet recipe under the flags


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "resnet21"], "unknown architecture 'resnet21'"),
        (["--lr", "0"], "lr must be > 0"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--checkpoint-seconds", "-5"], "checkpoint_seconds must be a finite number of seconds >= 0"),
        (["--arch", "cifar_resnet", "--depth", "25"], "depth 25 is not 6n+2"),
        (["--data", "does/not/exist", "--no-download"], "does/not/exist"),
        (["--iterations", "ten"], "invalid int value"),
        (["--shortcut", "D"], "invalid choice"),
        (["--resume", "--out", "nowhere"], "no checkpoint in 'nowhere'"),
        (["--preset", "torchvision"], "preset applies to the ImageNet pipeline only"),
        (["--arch", "resnet18", "--stride-in", "3x3"], "resnet18 has no option stride_in"),
        (["--dataset", "imagenet", "--data", "does/not/exist"], "does/not/exist"),
        (["--lr-decya", "0.5"], "unrecognized option --lr-decya: did you mean --lr-decay?"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_code_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = _cli(*args, "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("checkpoint.pt"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr-decya", "0.5"], "unrecognized option --lr-decya: did you mean --lr-decay? (see --help)"),
        (["--batchsize=64"], "unrecognized option --batchsize: did you mean --batch-size?"),
        (["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
        (["--momentum", "fast"], "argument --momentum: invalid float value: 'fast'"),
        (["--momentum", "1.5"], "error: momentum must be in [0, 1), got 1.5 (default: 0.9)"),
        (["--lr", "-1"], "error: lr must be > 0, got -1.0 (default: 0.1)"),
        (["--milestones", "48000,32000"], "milestones must be increasing positive iterations, got [48000, 32000]"),
        (["--milestones", "32k,48k"], "error: milestones must be a list of integers, got '32k,48k'"),
        (["--warmup-until-error", "0"], "error: warmup_until_error must be in (0, 100], got 0.0"),
        (["--eval-crops", "5"], "argument --eval-crops: invalid choice: 5"),
        (["--compile", "fast"], "argument --compile: invalid choice: 'fast'"),
        (["--device", "tpu"], "error: unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps"),
        (["--threads", "0"], "error: threads must be a positive number of CPU threads, got 0"),
    ],
)
def test_config_mistakes_get_one_line_and_exit_code_2(args: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The same battery in-process (each fails before anything is trained): a misspelt option names the closest
    one, a wrong type or an impossible value names the field, what was given and what is accepted."""
    try:
        code = main([*args, "--out", str(tmp_path / "run"), "--no-progress"])
    except SystemExit as exit:  # argparse
        code = exit.code
    stderr = capsys.readouterr().err
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert stderr.startswith("resnet_core.train: error: ") and not (tmp_path / "run").exists()


def test_every_config_field_has_an_option_whose_help_shows_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no wrapping inside the texts looked for
    parser = build_parser()
    actions = {option: action for action in parser._actions for option in action.option_strings}
    blocks: dict[str, str] = {}  # option -> its entry in --help (the help may start on the next line)
    for line in parser.format_help().splitlines():
        if line.startswith("  -"):
            option = line.split()[0].rstrip(",")
            blocks[option] = line
        elif line.startswith("    ") and blocks:
            blocks[option] += " " + line.strip()
    for name, spec in field_specs().items():
        action = actions[option_name(name)]
        assert action.dest == name and action.default is argparse.SUPPRESS, name  # left out: the recipe decides
        assert action.help and spec.help.split()[0] in action.help, name
        assert f"({default_note(name)})" in action.help, name
        assert f"({default_note(name)})" in blocks[option_name(name)], blocks[option_name(name)]
        if spec.kind == "bool":
            assert actions["--no-" + option_name(name)[2:]].dest == name
        if spec.kind == "choice":
            assert tuple(action.choices or ()) == spec.choices, name
    assert "(default: 128; ImageNet recipe: 256)" in actions["--batch-size"].help
    assert "(default: 32000,48000; ImageNet recipe: \"\")" in actions["--milestones"].help
    groups = [group.title for group in parser._action_groups]
    assert "ImageNet input pipeline (--dataset imagenet, paper Sec. 3.4)" in groups
    assert "execution speed (same computation; bf16 aside)" in groups
    imagenet = next(group for group in parser._action_groups if (group.title or "").startswith("ImageNet"))
    assert actions["--preset"] in imagenet._group_actions


def test_every_legacy_spelling_still_parses() -> None:
    parse = build_parser().parse_args
    options = vars(parse(["--no-download", "--no-augment", "--skip-corrupt", "--bf16", "--shortcut", "c",
                          "--stride-in", "1x1", "--milestones", "32000,48000", "--milestone-epochs", "30,60",
                          "--channels-last", "--fused-sgd", "--warmup", "--normalization", "CHANNEL"]))
    assert options == {"download": False, "augment": False, "skip_corrupt": True, "bf16": True, "shortcut": "C",
                       "stride_in": "1x1", "milestones": "32000,48000", "milestone_epochs": "30,60",
                       "channels_last": True, "fused_sgd": True, "warmup": True, "normalization": "channel"}
    assert vars(parse(["--milestones", ""])) == {"milestones": ""}
    from resnet_core import TrainConfig

    assert TrainConfig.from_dict(vars(parse(["--milestones", ""]))).milestones == ()
    assert vars(parse([])) == {}  # nothing given: the recipe (or the resumed run) decides every field
    assert vars(parse(["--lr-dec", "0.5"])) == {"lr_decay": 0.5}  # unambiguous abbreviations, as before


def test_interrupt_names_the_checkpoint_and_the_printed_command_resumes(image_tree: Path, tmp_path: Path) -> None:
    """Ctrl-C after a time-based checkpoint: exit 130, the last line names the iteration the checkpoint holds
    and the command that continues the run, and that command (with a shorter budget) completes."""
    out = tmp_path / "run"
    code, stderr = _interrupted_cli(
        *FAST, *ONE_THREAD, "--data", str(image_tree), "--cache-dir", str(tmp_path / "cache"), "--iterations", "100000",
        "--eval-every", "100000", "--checkpoint-every", "100000", "--checkpoint-seconds", "0.001", "--out", str(out),
        cwd=tmp_path, ready=lambda _: (out / "checkpoint.pt").exists(), sig=signal.SIGINT)
    assert code == 130, stderr
    iteration = load_checkpoint(out / "checkpoint.pt")["iteration"]
    last = _last_line(stderr)
    assert f"holds iteration {iteration}: continue with: " in last and "--resume" in last, stderr
    command = shlex.split(last.split("continue with: ")[1])
    assert command[:3] == ["python", "-m", "resnet_core.train"] and "--resume" in command

    resumed = _cli(*command[3:], "--iterations", str(iteration + 3), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "results.json").read_text())["iterations"] == iteration + 3


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_before_any_checkpoint_says_so(sig: signal.Signals, code: int, image_tree: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    returncode, stderr = _interrupted_cli(
        *FAST, *ONE_THREAD, "--data", str(image_tree), "--cache-dir", str(tmp_path / "cache"), "--iterations", "100000",
        "--eval-every", "100000", "--checkpoint-every", "100000", "--out", str(out),
        cwd=tmp_path, ready=lambda text: "training cifar_resnet" in text, sig=sig)
    assert returncode == code, stderr
    assert "Traceback" not in stderr and not (out / "checkpoint.pt").exists()
    assert "before any checkpoint was written" in _last_line(stderr) and "from the beginning" in _last_line(stderr)


def test_main_puts_the_previous_sigterm_handler_back(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert main(["--lr", "0", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert signal.getsignal(signal.SIGTERM) is before
