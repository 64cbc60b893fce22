"""benchmarks/gpu_suite.py: one command, each stage a child process under its cap and the suite's budget.

    python -m pytest tests/benchmarks/test_gpu_suite.py

The dry run trains every stage at toy sizes on the CPU (a synthetic set) once for this module, with Ray,
MLflow and Optuna blocked in every Python process it starts. The tests of caps, the budget and failures plant
a stand-in stage (``RESNET_GPU_SUITE_TEST_STALL``) that trains nothing, so each takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.py"
sys.path.insert(0, str(REPO))  # the repository root, for `benchmarks`

from benchmarks import gpu_suite  # noqa: E402

FIGURE = {"train_step": "images_per_second", "cifar_end_to_end": "iterations_per_second_mean",
          "packing": "aggregate_its_mean", "full_schedule_progress": "seconds", "full_schedule": "wall_seconds",
          "planted": "seconds"}
"""Each benchmark's headline figure, which must be positive."""

DRY_RUN_CAP = 200

BLOCKER = """\
import os, sys
for name in {names!r}:
    sys.modules[name] = None  # `import name` now raises ImportError in this process
with open(os.environ["GPU_SUITE_TEST_BLOCK_LOG"], "a") as log:
    log.write(f"{{os.getpid()}}\\n")
"""


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The suite as a command, without a planted stall unless ``env`` plants one."""
    base = {key: value for key, value in os.environ.items() if key != gpu_suite.STALL_ENV}
    return subprocess.run([sys.executable, str(SUITE), *args], capture_output=True, text=True, cwd=REPO,
                          env={**base, **(env or {})}, timeout=timeout)


def blocking(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Environment under which every Python process started imports none of ``names`` and logs its pid."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER.format(names=names))
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "GPU_SUITE_TEST_BLOCK_LOG": str(folder / "pids.log")}


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def statuses(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["stage"]: row for row in rows if row["kind"] == "status"}


def measurements(rows: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["kind"] == "measurement" and row["stage"] == stage]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]],
                                                               Path]:
    """The whole dry run, once, with Ray, MLflow and Optuna blocked; (process, rows, blocker folder). Its caps are
    raised to :data:`DRY_RUN_CAP` each: on a busy machine a stage took over its GPU-day cap of 80 s."""
    folder = tmp_path_factory.mktemp("gpu-suite-dry-run")
    env = blocking(folder / "blocker", ("ray", "mlflow", "optuna"))
    results = folder / "results.jsonl"
    caps = [f"--cap={stage.number}={DRY_RUN_CAP}" for stage in gpu_suite.STAGES]
    completed = run("--dry-run", "--results", str(results), *caps, env=env, timeout=4 * DRY_RUN_CAP + 60)
    return completed, read(results) if results.exists() else [], folder / "blocker"


def test_the_dry_run_runs_every_stage_and_lists_every_target(dry_run: Any) -> None:
    completed, rows, _ = dry_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    plan = [row for row in rows if row["kind"] == "plan"]
    assert len(plan) == 1 and plan[0]["dry_run"] and [s["number"] for s in plan[0]["stages"]] == [1, 2, 3, 4]
    assert {stage: row["status"] for stage, row in statuses(rows).items()} == {
        "train_step": "done", "end_to_end": "done", "packing": "done", "full_schedule": "done"}
    for stage in ("train_step", "end_to_end", "packing", "full_schedule"):
        found = measurements(rows, stage)
        assert found, f"stage {stage} wrote no rows"
        assert statuses(rows)[stage]["rows"] == len(found)
        for row in found:
            assert row[FIGURE[row["benchmark"]]] > 0, row
            assert row["dry_run"] is True and row["device"] == "cpu"
    models = {(row["model"], row["variant"]) for row in measurements(rows, "train_step")}
    assert models == {(model, variant) for model in gpu_suite.DRY_SIZES.models
                      for variant in gpu_suite.DRY_SIZES.first_pass + gpu_suite.DRY_SIZES.second_pass}
    assert all(row["ratio_vs_reference"] > 0 for row in measurements(rows, "train_step"))  # second pass included
    assert [row["k"] for row in measurements(rows, "packing")] == [1, 2]
    final = [row for row in measurements(rows, "full_schedule") if row["benchmark"] == "full_schedule"]
    assert len(final) == 1 and final[0]["iterations"] == gpu_suite.DRY_SIZES.schedule_iterations
    assert 0 <= final[0]["test_error"] <= 100 and "synthetic" in final[0]["data"]
    targets = [row for row in rows if row["kind"] == "target"]
    assert len(targets) == 4 and all(row["verdict"] == "not judged (dry run)" for row in targets)
    for row in targets:
        assert row["target"] in completed.stdout and row["measured"] != "-"
    plan_line = completed.stdout.splitlines()[0]
    assert plan_line.startswith(f"gpu_suite (dry run): stages 1 train_step (cap {DRY_RUN_CAP} s)")


def test_no_process_of_the_dry_run_imports_ray_mlflow_or_optuna(dry_run: Any, tmp_path: Path) -> None:
    completed, _, blocker = dry_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    pids = (blocker / "pids.log").read_text().split()
    assert len(set(pids)) >= 1 + 4 + 3  # the suite, its four stage children and the three packed trials
    env = blocking(tmp_path, ("ray", "mlflow", "optuna"))
    probe = subprocess.run([sys.executable, "-c", "import optuna"], capture_output=True, text=True,
                           env={**os.environ, **env})
    assert probe.returncode != 0 and "import of optuna halted" in probe.stderr  # the blocker does block


def test_a_stage_that_would_start_past_the_budget_is_skipped(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    completed = run("--dry-run", "--results", str(results), "--budget", "4",
                    env={gpu_suite.STALL_ENV: "1=0.1,2=inf,3=0.1,4=0.1"})
    assert completed.returncode == 0, completed.stderr
    rows = read(results)
    found = statuses(rows)
    assert [found[stage]["status"] for stage in ("train_step", "end_to_end", "packing", "full_schedule")] == [
        "done", "cut", "skipped", "skipped"]
    assert "budget" in found["end_to_end"]["reason"] and "past the budget" in found["packing"]["reason"]
    assert len(measurements(rows, "train_step")) == 1 and len(measurements(rows, "end_to_end")) == 1  # kept
    assert "stage 3 packing: skipped" in completed.stdout


def test_a_stage_past_its_cap_is_cut_keeping_its_rows_and_the_suite_goes_on(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    completed = run("--dry-run", "--results", str(results), "--stages", "1,2", "--cap", "1=2",
                    env={gpu_suite.STALL_ENV: "1=inf,2=0.1"})
    assert completed.returncode == 0, completed.stderr
    rows = read(results)
    found = statuses(rows)
    assert found["train_step"]["status"] == "cut" and found["train_step"]["reason"] == "past its cap of 2 s"
    assert 2 <= found["train_step"]["seconds"] < 30
    assert found["end_to_end"]["status"] == "done" and "packing" not in found
    [kept] = measurements(rows, "train_step")
    with pytest.raises(ProcessLookupError):
        os.kill(kept["pid"], 0)  # the hung stage's process is gone


def test_a_stage_child_ends_itself_past_its_limit_when_no_parent_cuts_it(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    child = subprocess.Popen([sys.executable, str(SUITE), "--child-stage", "1", "--run-id", "orphan", "--results",
                              str(results), "--limit", "0.5"], start_new_session=True,
                             env={**os.environ, gpu_suite.STALL_ENV: "1=inf"})
    try:
        code = child.wait(timeout=gpu_suite.DEADLINE_GRACE + 30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
    assert code == -9 and [row["benchmark"] for row in read(results)] == ["planted"]


def test_a_failing_stage_is_reported_in_one_line_and_the_suite_exits_1(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    completed = run("--dry-run", "--results", str(results), "--stages", "3", env={gpu_suite.STALL_ENV: "3=fail"})
    assert completed.returncode == 1
    found = statuses(read(results))
    assert found["packing"]["status"] == "failed" and found["packing"]["reason"] == "RuntimeError: planted failure"
    assert "stage 3 packing: failed" in completed.stdout


@pytest.mark.parametrize("args", [
    ["--stages", "5"], ["--stages", "one"], ["--budget", "0"], ["--cap", "9=10"], ["--cap", "1"],
    ["--dry-run", "--results", "benchmarks/results/gpu_suite.jsonl"],
])
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    committed = gpu_suite.COMMITTED_RESULTS
    before = committed.stat().st_size if committed.exists() else None
    completed = run(*args)
    assert completed.returncode == 2 and completed.stdout == ""
    assert len(completed.stderr.strip().splitlines()) == 1 and completed.stderr.startswith("gpu_suite: ")
    assert (committed.stat().st_size if committed.exists() else None) == before


def test_a_missing_dependency_is_named_with_the_pip_command(tmp_path: Path) -> None:
    completed = run("--dry-run", "--results", str(tmp_path / "r.jsonl"), env=blocking(tmp_path, ("pydantic",)))
    assert completed.returncode == 2
    assert completed.stderr.strip() == "gpu_suite: missing 'pydantic>=2.7': python -m pip install 'pydantic>=2.7'"


def test_the_targets_are_judged_from_the_rows() -> None:
    rows = [
        {"stage": "full_schedule", "kind": "measurement", "benchmark": "full_schedule", "iterations": 64_000,
         "wall_seconds": 55.0, "test_error": 9.1, "variant": "graphs-bf16", "data": gpu_suite.JPEG_NOTE},
        {"stage": "end_to_end", "kind": "measurement", "pipeline": "reference", "ratio_vs_reference": 1.0,
         "variant": "fp32-nchw-eager", "iterations_per_second_mean": 50.0},
        {"stage": "end_to_end", "kind": "measurement", "pipeline": "engine", "ratio_vs_reference": 12.0,
         "variant": "graphs-bf16", "iterations_per_second_mean": 600.0},
        {"stage": "end_to_end", "kind": "measurement", "pipeline": "engine", "ratio_vs_reference": 8.0,
         "variant": "bf16", "iterations_per_second_mean": 400.0},
        {"stage": "packing", "kind": "measurement", "k": 1, "speedup_vs_k1": 1.0},
        {"stage": "packing", "kind": "measurement", "k": 8, "speedup_vs_k1": 3.1},
    ]
    verdicts = gpu_suite.judge_targets(rows, {"train_step": "cut"}, dry_run=False)
    assert [v.verdict for v in verdicts] == ["met", "met", "missed", "not measured (stage train_step cut)"]
    assert gpu_suite.JPEG_NOTE in verdicts[0].measured and "12.00x (graphs-bf16)" == verdicts[1].measured
    slow = [{**rows[0], "wall_seconds": 61.0}, *rows[1:]]
    assert gpu_suite.judge_targets(slow, {}, dry_run=False)[0].verdict == "missed"
    assert gpu_suite.fastest_variant(rows, cuda=True)[0] == "graphs-bf16"
    steps = [{"stage": "train_step", "kind": "measurement", "model": "resnet20", "variant": variant,
              "images_per_second": rate} for variant, rate in (("reference", 9e9), ("eager-bf16", 2.0),
                                                               ("graphs-bf16", 1.0))]
    assert gpu_suite.fastest_variant(steps, cuda=True)[0] == "bf16"  # the reference has no engine counterpart
    assert gpu_suite.fastest_variant([], cuda=False)[0] == "fp32"


def test_the_full_schedule_on_the_real_data_says_which_copy_it_is(real_data_dir: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    completed = run("--dry-run", "--stages", "4", "--results", str(results),
                    "--data", str(real_data_dir / "cifar10-jpeg.tar.gz"), timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = read(results)
    [final] = [row for row in measurements(rows, "full_schedule") if row["benchmark"] == "full_schedule"]
    assert final["data"].startswith(gpu_suite.JPEG_NOTE) and final["wall_seconds"] > 0
    assert gpu_suite.JPEG_NOTE in completed.stdout
