"""Run a depth study: ``python study/run.py [--spec FILE] [--set key=value ...]``.

Reads and checks the spec, asks the MLflow tracking server (when ``mlflow.tracking_uri`` is http(s)) whether
it answers and accepts the credentials in ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, checks
the data (each a one-line error, exit code 2, before Ray starts), connects to the Ray cluster named by
``RAY_ADDRESS`` (set by ``ray job submit``) or starts a local Ray, logs to MLflow (a local SQLite file by
default), runs the search and the final retraining, and prints the report. Re-running the same command
continues an interrupted study of the same name; resuming with other search-relevant values is refused.

Exit codes: 0 finished; 2 a mistake in the command, spec or data (one line, nothing started); 130 / 143
interrupted by SIGINT / SIGTERM (``ray job stop`` sends SIGTERM): the running trials stop at their last
checkpoint, every MLflow run of the study ends KILLED, and one line says how far it got and how to resume;
1 an error: the study's runs end FAILED.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

try:  # run as a script, this file's folder comes first on the path: the installed project provides ``study``
    from study.stop_signals import DropTuneStopNotes, StopSignals, StudyInterrupted
except ModuleNotFoundError as missing:  # pragma: no cover - only without the install step of the README
    sys.exit(f"study/run.py: error: {missing}: install the project first: pip install -e . (see the README)")

if TYPE_CHECKING:
    from study.spec import StudySpec
    from study.study_data import StudyData
    from study.tracking import StudyTracker

PROG = "study/run.py"
PROG_PATH = sys.argv[0] if sys.argv and sys.argv[0].endswith("run.py") else str(Path(__file__).resolve())
"""The script as it was started (for the resume command)."""
LOCAL = "a local Ray"
log = logging.getLogger("study")


def build_parser() -> argparse.ArgumentParser:
    from resnet_core.engine.cli import OneLineParser

    parser = OneLineParser(prog=PROG, description="Tune lr and weight decay per depth and shortcut option "
                            "(He et al. 2015, Sec. 4.2) with Ray Tune + Optuna; track in MLflow.")
    parser.add_argument("--spec", help=f"study spec YAML (default: {PAPER_SPEC} where a GPU or a Ray cluster is "
                        f"at hand, else {CPU_SPEC}, the paper's Fig. 6 question at a budget a CPU finishes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set search.trials_per_group=4 (repeatable; default: none)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's and Tune's own console output: worker logs, trial tables (default: off; "
                        "the study prints one line per trial start and end and a status line with its ETA)")
    return parser


PAPER_SPEC = "study/specs/cifar10_depth.yaml"
CPU_SPEC = "study/specs/cifar10_first_look.yaml"
"""The two specs a bare ``study/run.py`` chooses between, as the command line names them."""


def default_spec() -> tuple[Path, str]:
    """The spec a bare ``study/run.py`` runs, and why: the paper's study where it can run (a GPU here, or a Ray
    cluster named by RAY_ADDRESS, whose resources the spec's check then weighs), else the first look a CPU
    finishes in minutes."""
    import torch

    from study.spec import default_spec_path

    paper = default_spec_path()
    if os.environ.get("RAY_ADDRESS"):
        return paper, "the paper's study, on the Ray cluster at RAY_ADDRESS"
    if torch.cuda.is_available():
        return paper, "the paper's study, a GPU is at hand"
    return paper.with_name(Path(CPU_SPEC).name), (f"no GPU here: a first look a CPU finishes; the paper's study is "
                                                  f"--spec {PAPER_SPEC} on a GPU machine")


def connect_ray(address: str | None, verbose: bool = False) -> str:
    """Join the cluster at ``address`` (or RAY_ADDRESS), else start a local Ray; one-line error if unreachable.

    The workers' own output (Ray Train's, the engine's per-evaluation lines) reaches this console only when
    ``verbose``; it is always in Ray's session logs, and the study's console says what each trial did."""
    import ray

    from resnet_core import ResnetCoreError

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        from study.ray_address import check_reachable

        check_reachable(address)  # seconds, where ray.init would wait minutes for a cluster that is not there
    else:
        from study.ray_token import ensure_private_token

        ensure_private_token()  # a local Ray turns token authentication on and would write the token world-readable
    try:
        # The dashboard stays on (bound to 127.0.0.1): Ray Train's clean-up of stopped trials asks its
        # state API whether a trial's controller is gone; without it, stopped trials leak their workers.
        # Without an address, "local" starts a fresh Ray: None would join whatever cluster
        # /tmp/ray/ray_current_cluster names, and wait forever when that cluster is gone.
        ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=verbose)
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ResnetCoreError(f"cannot reach the Ray cluster at {address!r} ({reason}): check RAY_ADDRESS, "
                              "or unset it to run on a local Ray") from None
    return address or LOCAL


def local_ray_environment() -> None:
    """How a local Ray (no RAY_ADDRESS) is configured; before Ray is first imported, which reads some of it.

    Token authentication is asked for explicitly: Ray 2.60 infers it from the token file and warns that it did.
    Ray Train's preemption watcher (one more process per trial, which watches for nodes being drained, e.g. spot
    capacity taken back) is off: a local Ray has no node to drain, and on a small machine that process costs
    seconds of every trial's start. A cluster's own settings are left alone."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def quiet_frameworks() -> None:
    """Without ``--verbose``, the console is the study's own (study.progress). Dropped: MLflow's notes on creating its
    tables (its warnings and errors still show), Tune's two notes on a stop signal (the study prints its own:
    :class:`~study.stop_signals.DropTuneStopNotes`) and the traceback Tune logs for every failed trial (the console's
    line names the error; Tune keeps the traceback next to the trial). Tune reports through the legacy engine, which
    at verbosity 0 prints nothing -- Ray 2.60's new engine prints its experiment table and result paths even then."""
    import mlflow  # noqa: F401 - configures its logger on import: set the level after

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").addFilter(DropTuneStopNotes())
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # each failure's traceback; the console names the error
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def check_local_resources(spec: "StudySpec") -> None:
    """On a local Ray (no autoscaler to add nodes), a trial that can never fit is a mistake, not a wait."""
    import ray

    from resnet_core import ResnetCoreError
    from study.runner import TRIAL_DRIVER_CPUS, trial_footprint

    total = ray.cluster_resources()
    need = trial_footprint(spec.resources)
    need_gpus = need.get("GPU", 0.0)
    if need_gpus > total.get("GPU", 0.0):
        ray.shutdown()
        raise ResnetCoreError(
            f"resources.gpus_per_worker={spec.resources.gpus_per_worker} needs {need_gpus:g} GPU per trial but "
            f"this machine has {total.get('GPU', 0.0):g}: --set resources.gpus_per_worker=0 --set train.device=cpu"
        )
    need_cpus = need["CPU"]
    have = total.get("CPU", 0.0)
    if need_cpus > have + 1e-9:
        ray.shutdown()
        if spec.resources.trains_in_trial_process:
            raise ResnetCoreError(f"a trial needs {need_cpus:g} CPUs (resources.cpus_per_worker) but this machine "
                                  f"has {have:g}: --set resources.cpus_per_worker={max(0.05, have // 0.05 * 0.05):.2g}")
        fits = max(0.05, (have - TRIAL_DRIVER_CPUS) / spec.resources.workers_per_trial) // 0.05 * 0.05
        raise ResnetCoreError(
            f"a trial needs {need_cpus:g} CPUs (resources.workers_per_trial x cpus_per_worker + "
            f"{TRIAL_DRIVER_CPUS} for its driver) but this machine has {have:g}: "
            f"--set resources.cpus_per_worker={fits:.2g} (or fewer resources.workers_per_trial)"
        )


def check_val_split(spec: "StudySpec", data: "StudyData") -> None:
    """The search's held-out images leave training images: a one-line error naming a value that does."""
    from study.spec import SpecError

    if spec.search.searches and spec.dataset.val_split >= data.train_images:
        raise SpecError(f"dataset.val_split={spec.dataset.val_split} holds out every one of the {data.train_images:,} "
                        f"training images: use fewer, e.g. --set dataset.val_split={max(data.train_images // 10, 1)}")


def with_absolute_paths(spec: "StudySpec", cwd: Path) -> "StudySpec":
    """Trials run in other working directories (and on other nodes): give them absolute local paths."""
    import dataclasses

    def absolute(path: str | None) -> str | None:
        return path if path is None or "://" in path else str((cwd / Path(path).expanduser()).resolve())

    dataset = dataclasses.replace(spec.dataset, path=absolute(spec.dataset.path),
                                  cache_dir=absolute(spec.dataset.cache_dir))
    return dataclasses.replace(spec, dataset=dataset)


def check_tracking(uri: str) -> None:
    """A tracking server must answer and accept our credentials before anything starts; the driver then
    leaves retrying to the study (see study/mlflow_server.py)."""
    from study.mlflow_server import check_server, is_server, use_short_client_retries

    if is_server(uri):
        check_server(uri)
        use_short_client_retries()


def open_tracker(spec: "StudySpec", uri: str) -> "StudyTracker":
    """The study's experiment and run; a server that refuses this user write access is a one-line error."""
    from mlflow.exceptions import MlflowException

    from resnet_core import ResnetCoreError
    from study.mlflow_server import address, is_server
    from study.tracking import StudyTracker

    try:
        return StudyTracker(uri, spec.experiment_name(), spec.name)
    except MlflowException as error:
        status = error.get_http_status_code()
        if not is_server(uri) or status not in (401, 403):
            raise
        reason = str(error.message).splitlines()[0] if error.message else error.error_code
        raise ResnetCoreError(f"the MLflow server at {address(uri)} refused to open experiment "
                              f"{spec.experiment_name()!r} ({status}: {reason}): check MLFLOW_TRACKING_USERNAME "
                              "and MLFLOW_TRACKING_PASSWORD, or ask for EDIT permission on it") from None


def tracking_unavailable(error: BaseException) -> "BaseException | None":
    """The :class:`TrackingUnavailable` behind ``error`` (Tune may wrap what its callbacks raise), if any."""
    from study.mlflow_server import TrackingUnavailable

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, TrackingUnavailable):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def resume_command(argv: Sequence[str], cwd: Path) -> str:
    """The command that continues this study: the same interpreter, script and arguments, from the same folder."""
    return f"cd {shlex.quote(str(cwd))} && {shlex.join([sys.executable, *argv])}"


def check_resumable(spec: "StudySpec", uri: str) -> None:
    """Resuming a study whose search-relevant values changed is a one-line error (before anything starts)."""
    from study.spec import check_resumable as check
    from study.tracking import stored_spec

    check(stored_spec(uri, spec.experiment_name(), spec.name), spec)


def signal_name(number: int) -> str:
    return signal.Signals(number).name


def main(argv: Sequence[str] | None = None) -> int:
    local_ray_environment()
    with StopSignals() as signals:
        return _main(sys.argv[1:] if argv is None else list(argv), signals)


def _main(argv: list[str], signals: StopSignals) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import optuna

    from resnet_core import ResnetCoreError
    from study.mlflow_server import address, is_server
    from study.spec import load_spec
    from study.study_data import load_study_data

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study created is noise
    if not args.verbose:
        quiet_frameworks()
    # A trial reports checkpoints written between evaluations without metrics; Tune would refuse such a report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    cwd = Path.cwd()
    try:
        spec_file, why = (Path(args.spec), "") if args.spec else default_spec()
        spec = with_absolute_paths(load_spec(spec_file, args.set), cwd)
        if why:  # said once the spec is known good: a mistake stays one line
            log.info("no --spec given: running %s (%s)", spec_file.name, why)
        uri = spec.tracking_uri(cwd)
        check_tracking(uri)
        check_resumable(spec, uri)
        data = load_study_data(spec.dataset.name, spec.dataset.path, download=spec.dataset.download,
                               cache_dir=spec.dataset.cache_dir, path_option="--set dataset.path=PATH")
        check_val_split(spec, data)
        signals.check()
        ray_started = time.perf_counter()
        where = connect_ray(None, args.verbose)
        ray_start_seconds = time.perf_counter() - ray_started
        signals.reclaim()
        if where == LOCAL:
            check_local_resources(spec)
        tracker = open_tracker(spec, uri)
        tracker.note_seconds("ray_start", ray_start_seconds)
    except ResnetCoreError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except StudyInterrupted as stop:
        print(f"{PROG}: interrupted by {signal_name(stop.signal_number)} before the study started", file=sys.stderr)
        return stop.exit_code
    from study.runner import run_study, study_plan
    from study.tracking import RUN_FAILED, RUN_KILLED

    shown = address(uri) if is_server(uri) else uri
    storage = f"{spec.storage_path(cwd).rstrip('/')}/{spec.name}"
    trials = (f"{spec.search.trials_per_group} trials" if spec.search.searches else "no search") + \
        f" + {spec.train.final_seeds} final seeds"
    log.info("study %s: %d groups x (%s) on %s; MLflow %s (experiment %s); Ray state in %s", spec.name,
             len(spec.study_groups()), trials, where, shown, spec.experiment_name(), storage)
    started = time.perf_counter()
    try:
        results, table = run_study(spec, tracker, storage, data, signals, args.verbose)
        tracker.close()
    except (StudyInterrupted, KeyboardInterrupt) as stop:
        number = getattr(stop, "signal_number", None) or signals.received or signal.SIGINT
        tracker.end_study(RUN_KILLED)
        print(f"{PROG}: interrupted by {signal_name(number)} after {tracker.trials_finished()} of "
              f"{study_plan(spec).total_trials} trials; resume with: {resume_command([PROG_PATH, *argv], cwd)}",
              file=sys.stderr)
        return 128 + number
    except Exception as error:
        away = tracking_unavailable(error)
        if away is not None:
            print(f"{PROG}: error: {away}; start it and run the same command again: the study continues where it "
                  "stopped and logs what is missing", file=sys.stderr)
            return 1
        log.exception("the study failed")
        tracker.end_study(RUN_FAILED)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"{PROG}: error: the study failed ({type(error).__name__}: {reason}); its MLflow runs are FAILED; "
              f"what finished is kept: fix the cause and run the same command again", file=sys.stderr)
        return 1
    print(f"\nStudy {spec.name} finished in {time.perf_counter() - started:.0f} s\n\n{table}\n")
    if is_server(uri):
        print(f"MLflow: {shown}  (experiment {spec.experiment_name()})")
    else:
        print(f"MLflow: mlflow ui --backend-store-uri {uri}  (experiment {spec.experiment_name()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
