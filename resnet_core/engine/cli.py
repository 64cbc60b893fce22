"""``python -m resnet_core.train``: one training run of the engine from the command line.

Writes into ``--out``: ``config.json`` (the full config), ``metrics.csv`` (one row per evaluation),
``checkpoint.pt`` (full state, atomic) and, at the end, ``results.json``. Every mistake a user can make
(unknown arch, lr <= 0, depth not 6n+2, missing data, a wrong checkpoint) ends with one line on stderr and
exit code 2. An interrupted run (Ctrl-C: exit code 130, SIGTERM: 143) keeps its last checkpoint, and its last
line on stderr says which iteration that holds and how to continue (``--resume``), or that none was written yet.

The options are generated from :class:`~resnet_core.engine.config.TrainConfig`'s fields
(:func:`~resnet_core.engine.config.field_specs`): ``--batch-size`` for ``batch_size``, ``--x`` / ``--no-x`` for a
bool, a comma list (``--milestones 32000,48000``) for a list of integers; ``--help`` shows each field's docstring
and its default (and the ImageNet recipe's where that differs), grouped by the field's section.

``--layer-responses RUN [RUN ...]`` trains nothing: it reads each run directory's ``checkpoint.pt`` (or a
checkpoint file), measures the std of every 3x3 layer's response on the run's test split (paper Sec. 4.2,
Fig. 7; :mod:`resnet_core.analysis.layer_responses`) and writes ``layer_responses.csv`` and
``layer_responses.png`` into ``--out`` (default: the first run's directory). Only ``--data``, ``--device``
(default auto) and ``--eval-batch-size`` apply to it; a missing or corrupt checkpoint is the usual one-line
error, exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import logging
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from resnet_core.analysis.layer_responses import write_figure_7
from resnet_core.atomic import write_text
from resnet_core.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from resnet_core.engine.config import FieldSpec, TrainConfig, default_note, field_specs
from resnet_core.engine.distributed import joined_from_environment
from resnet_core.engine.fit import EvalReport, fit
from resnet_core.errors import ConfigError, ResnetCoreError

PROG = "resnet_core.train"
CONFIG_NAME, METRICS_NAME, RESULTS_NAME = "config.json", "metrics.csv", "results.json"
RESUME_FLAG, OUT_FLAG = "--resume", "--out"
TOP5_COLUMNS = ("test_top5_error", "val_top5_error")
LAYER_RESPONSE_OPTIONS = ("data", "device", "eval_batch_size", "out")
"""The options --layer-responses reads (besides --no-progress, which it ignores)."""
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM: what a shell reports for them
log = logging.getLogger(PROG)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem (and the help flag), exit code 2; a
    misspelt option names the closest one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return parsed

    def unrecognized(self, extras: Sequence[str]) -> str:
        """What is wrong with arguments no option took: the closest option to the first unknown one, if any."""
        options = [option for option in self._option_string_actions if option.startswith("--")]
        for extra in extras:
            given = extra.split("=", 1)[0]
            close = difflib.get_close_matches(given, options, n=1) if given.startswith("--") else []
            if close:
                return f"unrecognized option {given}: did you mean {close[0]}?"
        return f"unrecognized arguments: {' '.join(extras)}"


GROUP_TITLES = {
    "model": "model (paper Sec. 4.2 and Table 3; ImageNet Table 1)",
    "data": "data (paper Sec. 4.2)",
    "imagenet": "ImageNet input pipeline (--dataset imagenet, paper Sec. 3.4)",
    "optimisation": "optimisation (paper Sec. 4.2; ImageNet Sec. 3.4)",
    "run": "run",
    "speed": "execution speed (same computation; bf16 aside)",
}
"""The title of each section of :data:`~resnet_core.engine.config.SECTIONS` in ``--help``."""


FIELDS = frozenset(TrainConfig.field_names())


def option_name(field: str) -> str:
    """The command-line option of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def _choice(choices: tuple[Any, ...]) -> Callable[[str], Any]:
    """The argparse type of a choice: ints as ints; strings matched regardless of case (``--shortcut b``)."""
    if all(isinstance(choice, int) for choice in choices):
        return int
    by_lower = {str(choice).lower(): choice for choice in choices}

    def choice(text: str) -> Any:
        return by_lower.get(text.lower(), text)

    return choice


def field_option(spec: FieldSpec) -> dict[str, Any]:
    """The ``add_argument`` keywords of one config field: type, choices, and help = the field's docstring with
    its default (and the ImageNet recipe's, where that differs)."""
    text = re.sub(r"``([^`]+)``", lambda match: option_name(match[1]) if match[1] in FIELDS else match[1], spec.help)
    options: dict[str, Any] = {"help": f"{text} ({default_note(spec.name)})".replace("%", "%%")}
    if spec.kind == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif spec.kind == "choice" and spec.choices is not None:
        options.update(type=_choice(spec.choices), choices=spec.choices)
    elif spec.kind == "int_list":
        options["metavar"] = "N,N,..."
    else:
        options["type"] = {"int": int, "float": float}.get(spec.kind, str)
    return options


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one option per :class:`TrainConfig` field (from :func:`field_specs`), in the field's section,
    plus the run-directory options. Options left out keep the recipe's default (or the resumed run's value)."""
    parser = OneLineParser(prog=PROG, description="Train one ResNet / plain net with the paper's recipe "
                           "(He et al. 2015: CIFAR Sec. 4.2, ImageNet Sec. 3.4). Options left out take the "
                           "recipe of --dataset (or, with --resume, the run's saved value).",
                           argument_default=argparse.SUPPRESS)
    groups = {section: parser.add_argument_group(title) for section, title in GROUP_TITLES.items()}
    for spec in field_specs().values():
        groups[spec.section].add_argument(option_name(spec.name), dest=spec.name, **field_option(spec))
    directory = parser.add_argument_group("run directory")
    directory.add_argument(OUT_FLAG, help="run directory (default: runs/<arch>)")
    directory.add_argument(RESUME_FLAG, action="store_true",
                           help="continue the run in --out from its checkpoint (default: start a new run)")
    directory.add_argument("--no-progress", dest="progress", action="store_false",
                           help="no progress bar (default: a progress bar)")
    directory.add_argument(
        "--layer-responses", nargs="+", metavar="RUN_DIR_OR_CHECKPOINT",
        help="train nothing: write layer_responses.csv and .png (paper Fig. 7: std of each 3x3 layer's response on "
             "the test split) of these runs into --out (default: the first run's directory); reads --data, "
             "--device, --eval-batch-size")
    return parser


class MetricsCsv:
    """Keeps ``metrics.csv`` in step with the evaluations, also across a resume (rows past it are dropped).

    Its columns are the :class:`EvalReport` figures this run fills (a run without a validation split has no
    ``val_*``), ``seconds`` last, except ``omitted`` ones: a metric added to the report gets its column here."""

    def __init__(self, path: Path, omitted: Collection[str] = ()) -> None:
        self.path = path
        self.omitted = {"seconds", *omitted}
        self.columns: list[str] = []

    def __call__(self, report: EvalReport) -> None:
        filled = [key for key, value in report.row().items() if value is not None and key not in self.omitted]
        self.columns = self.columns or [*filled, "seconds"]
        rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open(newline="") as stream:
                rows = [row for row in csv.DictReader(stream) if int(row["iteration"]) < report.iteration]
        rows.append({key: value for key, value in report.row().items() if key in self.columns})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, buffer.getvalue())


def resolve_config(options: dict[str, Any], out_dir: Path, resume: bool) -> TrainConfig:
    """The run's config: CLI options over the defaults, or over the saved config when resuming."""
    has_checkpoint = (out_dir / CHECKPOINT_NAME).exists()
    if resume:
        if not has_checkpoint:
            raise ResnetCoreError(f"--resume: no checkpoint in '{out_dir}': drop --resume to start a new run there")
        return TrainConfig.load_json(out_dir / CONFIG_NAME).replace(**options)
    if has_checkpoint:
        raise ResnetCoreError(
            f"'{out_dir}' already holds a run: pass --resume to continue it, or choose another --out"
        )
    return TrainConfig.from_dict(options)


def run_directory(options: dict[str, Any]) -> Path:
    """The ``--out`` of parsed ``options`` (default: ``runs/<arch>``)."""
    return Path(options.get("out", None) or Path("runs") / options.get("arch", field_specs()["arch"].default))


def layer_responses_run(options: dict[str, Any]) -> dict[str, Any]:
    """``--layer-responses``: write Fig. 7's CSV and PNG of the given runs, print where, and return a summary."""
    runs = [Path(run) for run in options.pop("layer_responses")]
    options.pop("progress", None)
    others = sorted(set(options) - set(LAYER_RESPONSE_OPTIONS))
    if others:
        raise ConfigError(f"--layer-responses reads trained runs and takes only --data, --device, --eval-batch-size "
                          f"and --out: drop the training option(s) {', '.join(others)}")
    out = options.get("out")
    figure = write_figure_7(runs, Path(out) if out else None, data=options.get("data"),
                            device=options.get("device", "auto"), batch_size=options.get("eval_batch_size"))
    means = {label: sum(layer.std for layer in layers) / max(len(layers), 1)
             for label, layers in figure.responses.items()}
    print(f"layer responses of {len(runs)} run(s) written to {figure.csv} and {figure.png}; mean std per 3x3 "
          "layer: " + ", ".join(f"{label} {mean:.4f}" for label, mean in means.items()))
    return {"csv": str(figure.csv), "png": str(figure.png), "mean_std": means}


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, train, write the run directory, and return the contents of ``results.json`` (with
    ``--layer-responses``: write Fig. 7's files instead and return where, with each model's mean std)."""
    options = vars(build_parser().parse_args(argv))
    if "layer_responses" in options:
        return layer_responses_run(options)
    progress = options.pop("progress", True)
    resume = options.pop("resume", False)
    out_dir = run_directory(options)
    options.pop("out", None)
    config = resolve_config(options, out_dir, resume)
    with joined_from_environment(config.device) as group:  # torchrun: one process per rank
        if group.is_main:  # rank 0 writes the run directory; every rank trains
            out_dir.mkdir(parents=True, exist_ok=True)
            write_text(out_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
        # Top-5 error is a figure of the ImageNet tables (Tables 2-4); CIFAR's file keeps Table 6's columns.
        metrics = MetricsCsv(out_dir / METRICS_NAME, omitted=() if config.is_imagenet else TOP5_COLUMNS)
        result = fit(
            config,
            out_dir=out_dir,
            resume_from=out_dir / CHECKPOINT_NAME if resume else None,
            callbacks=[metrics] if group.is_main else [],
            progress=progress,
        )
        summary = result.summary()
        if group.is_main:
            write_text(out_dir / RESULTS_NAME, json.dumps(summary, indent=2) + "\n")
            log.info("test error %.2f%% after %d iterations (%.0f s); results in %s", summary["test_error"],
                     summary["iterations"], summary["wall_seconds"], out_dir)
    return summary


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the run stops the same way."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the previous handler is restored
    after it. (Elsewhere than the main thread, where Python cannot set handlers, it changes nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> NoReturn:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupted_message(out_dir: Path) -> str:
    """What an interruption leaves in ``out_dir``: the iteration its checkpoint holds and how to continue from
    it, or that there is none yet."""
    path = out_dir / CHECKPOINT_NAME
    if not path.is_file():
        return (f"interrupted before any checkpoint was written in '{out_dir}': nothing to resume; rerunning the "
                "same command starts from the beginning")
    try:
        iteration = load_checkpoint(path)["iteration"]
    except ResnetCoreError as error:
        return f"interrupted; {error}"
    return (f"interrupted; '{path}' holds iteration {iteration}: continue with: python -m {PROG} {RESUME_FLAG} "
            f"{OUT_FLAG} {shlex.quote(str(out_dir))}")


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 when the run completes, 2 on a user mistake, 130 on Ctrl-C and 143 on SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with sigterm_as_interrupt(), logging_redirect_tqdm():
            run(argv)
    except ResnetCoreError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        options = vars(build_parser().parse_args(argv))
        if "layer_responses" in options:
            print(f"{PROG}: interrupted; rerun the same command to write the layer responses", file=sys.stderr)
        else:
            print(f"{PROG}: {interrupted_message(run_directory(options))}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED
    return 0
