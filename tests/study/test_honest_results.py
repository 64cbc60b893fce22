"""What the study says about its own numbers: the choice of a group counts engine iterations and flags what
should not be trusted, the report states its budget and when a comparison is not meaningful, the paper's
figures appear only where the paper has them, the trial trains where the spec says, the runs of a failed or
interrupted study end in that state, and Ray's token file is private."""

from __future__ import annotations

import math
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import study.run as run_module
from study.ray_token import ensure_private_token
from study.report import StudyBudget, format_table
from study.runner import choose, iteration_cost, paper_error, study_budget, summarise
from study.spec import Group, load_spec
from study.tracking import StudyTracker
from study.trial import worker_device

SMOKE = Path(run_module.__file__).parent / "specs" / "smoke.yaml"
TABLE3 = Path(run_module.__file__).parent / "specs" / "imagenet_table3.yaml"


def _result(group: str, iteration: int, val_error: float, lr: float = 0.1) -> SimpleNamespace:
    """What Tune's ResultGrid yields per trial: its config and last reported metrics."""
    return SimpleNamespace(config={"group": group, "lr": lr, "weight_decay": 1e-4},
                           metrics={"iteration": iteration, "val_error": val_error})


def test_the_choice_counts_engine_iterations_and_flags_what_cannot_be_trusted() -> None:
    spec = load_spec(SMOKE)  # 150 iterations; groups resnet20-A and plain20
    grid = [_result("resnet20-A", 150, 40.0, lr=0.2), _result("resnet20-A", 100, 30.0, lr=5.0),  # pruned, lower
            _result("plain20", 100, 89.5), _result("plain20", 50, math.nan)]
    resnet, plain = choose(spec, grid, num_classes=10)
    assert (resnet.lr, resnet.val_error, resnet.trials, resnet.stopped_early, resnet.flags) == (0.2, 40.0, 2, 1, ())
    assert plain.val_error == 89.5 and plain.stopped_early == 2 and len(plain.flags) == 2
    assert "no trial trained all 150 iterations" in plain.flags[0] and "no better than chance (90%)" in plain.flags[1]
    diverged = choose(spec, [_result("resnet20-A", 50, math.nan)], num_classes=10)[0]
    assert not diverged.usable and "every trial diverged" in diverged.flags[0]


def test_the_paper_figures_only_where_the_paper_has_them() -> None:
    resnet20 = Group("resnet20", "A", 20, True)
    assert paper_error(load_spec(SMOKE), resnet20) == (None, None)  # 150 iterations are not the paper's schedule
    paper = load_spec(SMOKE, ["train.iterations=64000", "train.eval_every=2000"])
    assert paper_error(paper, resnet20) == (8.75, None)  # Table 6 gives no top-5 error
    assert paper_error(paper, Group("resnet20", "B", 20, True)) == (None, None)  # Table 6 is option A
    cifar100 = load_spec(SMOKE, ["train.iterations=64000", "train.eval_every=2000", "dataset.name=cifar100"])
    assert paper_error(cifar100, resnet20) == (None, None)
    imagenet = load_spec(TABLE3)  # full-ImageNet figures at any budget; the report says whether they compare
    assert paper_error(imagenet, Group("resnet34", "A", 34, True)) == (25.03, 7.76)  # Table 3 (Table 2: 25.03)
    assert paper_error(imagenet, Group("resnet34", "C", 34, True)) == (24.19, 7.40)
    assert paper_error(imagenet, Group("resnet50", "B", 50, True)) == (22.85, 6.71)
    assert paper_error(imagenet, Group("resnet50", "A", 50, True)) == (None, None)  # Table 3's ResNet-50 is B
    assert paper_error(imagenet, Group("resnet18", "A", 18, True)) == (27.88, None)  # Table 2 gives top-1 only
    assert paper_error(imagenet, Group("plain34", None, 34, False)) == (28.54, 10.02)


def test_the_eta_weighs_an_iteration_by_the_networks_work() -> None:
    assert iteration_cost(Group("resnet56", "A", 56, True)) == 56.0  # CIFAR: work per image grows with depth
    assert iteration_cost(Group("resnet50", "B", 50, True)) == 3.8  # ImageNet: Table 1's multiply-adds (10^9)
    assert iteration_cost(Group("resnet34", "A", 34, True)) == iteration_cost(Group("plain34", None, 34, False))


def test_the_report_states_its_budget_and_says_when_comparisons_mean_nothing() -> None:
    spec = load_spec(SMOKE)
    choices = choose(spec, [_result("resnet20-A", 150, 40.0), _result("plain20", 150, 89.0)], num_classes=10)
    results = summarise(spec, choices, None)
    text = format_table(results, study_budget(spec))
    lines = text.splitlines()
    assert lines[0].startswith("Budget: 150 iterations per trial (0.234% of the paper's 64,000, Sec. 4.2) on CIFAR-10;"
                               " 3 trials per group (2 random start-up, 1 chosen by TPE); 1 final seed per group.")
    assert lines[1].startswith("Comparisons between groups are not meaningful at this budget: one final seed")
    assert "1 group is flagged (plain20)" in lines[1] and "- **plain20**: best validation error 89.0%" in text
    paper = StudyBudget("cifar10", 64_000, 8, 3, "tpe", 3)
    assert paper.caveats([]) == []  # the paper spec's budget supports a comparison
    assert StudyBudget("cifar10", 64_000, 2, 2, "tpe", 3).caveats([]) == [
        "every trial was a random start-up trial, so the search never used its model"]
    fixed = StudyBudget("cifar10", 64_000, 0, 0, "tpe", 3)  # no search: the paper's own protocol, not a weak search
    assert "no search: every group trains the spec's one configuration, as the paper does" in fixed.describe()
    assert fixed.caveats([]) == []


def test_a_trial_trains_where_the_spec_says() -> None:
    assert worker_device("auto", "cuda:1") == "cuda:1" and worker_device("auto", "cpu") == "cpu"
    assert worker_device("cuda", "cuda:1") == "cuda:1"  # the GPU Ray assigned, not GPU 0
    assert worker_device("cpu", "cuda:0") == "cpu"  # asked for the CPU: trains on the CPU
    assert load_spec(SMOKE).train_config(Group("plain20", None, 20, False), lr=0.1, weight_decay=1e-4,
                                         seed=0).device == "cpu"


def test_the_runs_of_a_failed_study_end_failed_and_finished_trials_keep_their_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dataset) -> None:  # noqa: ANN001
    """study/run.py's error path, in-process: the search raises; the study's runs end FAILED, exit code 1."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "smoke", "smoke")
    done = tracker.trial_run("t-done", "done", {"lr": 0.1}, "search")
    tracker.finish_trial(done, "completed", {"val_error": 50.0, "iteration": 150})
    tracker.trial_run("t-cut", "cut", {"lr": 0.2}, "search")

    def failing_study(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a worker ran out of memory")

    monkeypatch.setattr(run_module, "connect_ray", lambda address, verbose=False: "a test")
    monkeypatch.setattr(run_module, "local_ray_environment", lambda: None)  # no Ray here: leave the environment
    monkeypatch.setattr("resnet_core.load_image_dataset", lambda *args, **kwargs: tiny_dataset)
    monkeypatch.setattr("study.runner.run_study", failing_study)
    monkeypatch.chdir(tmp_path)
    code = run_module.main(["--spec", str(SMOKE), "--set", f"dataset.path={tmp_path}", "--set",
                            f"dataset.val_split={len(tiny_dataset.train_labels) // 4}"])
    assert code == 1
    client = MlflowClient(uri)
    states = {run.info.run_name: run.info.status for run in client.search_runs([tracker.experiment_id])}
    assert states == {"smoke": "FAILED", "done": "FINISHED", "cut": "FAILED"}


def test_the_ray_token_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = ensure_private_token(tmp_path / ".ray" / "auth_token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text()) == 64
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    path.chmod(0o644)  # as Ray itself would have written it
    assert ensure_private_token(path) == path and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token  # an existing token is kept


def test_every_option_of_the_study_command_shows_its_default() -> None:
    options = [action for action in run_module.build_parser()._actions if action.dest != "help"]
    assert [action.dest for action in options] == ["spec", "set", "verbose"]
    assert all("default" in action.help for action in options)


def test_a_bare_study_command_runs_the_paper_where_it_can_and_the_first_look_on_a_cpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    spec, why = run_module.default_spec()
    assert spec.name == "cifar10_first_look.yaml" and spec.exists() and "no GPU here" in why
    assert "--spec study/specs/cifar10_depth.yaml" in why  # the way to the paper's study, as the command takes it
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert run_module.default_spec()[0].name == "cifar10_depth.yaml"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # a cluster: its resources decide, as for any spec
    assert run_module.default_spec()[0].name == "cifar10_depth.yaml"
