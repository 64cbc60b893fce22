"""A study that searches momentum, end to end through the service: a field the spec names under ``search:`` is
sampled by Optuna, trained by the engine, and shown by every record of the study (the trials' MLflow params
and whole engine configs, the study run's metrics, trials.csv, the report's table, the registered model's tags).
About 3 minutes on 2 cores (e2e)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import REPO, run_study
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

SPEC = REPO / "study" / "specs" / "momentum.yaml"
LOW, HIGH = 0.8, 0.99  # the spec's momentum range


def test_a_study_searches_momentum_end_to_end(cifar_subset: Path, tmp_path: Path) -> None:
    result = run_study("--spec", str(SPEC), "--set", f"dataset.path={cifar_subset}", "--set", "dataset.val_split=1000",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("momentum")
    runs = client.search_runs([experiment.experiment_id], max_results=50)
    search = [r for r in runs if r.data.tags.get("resnet.phase") == "search"]
    final = [r for r in runs if r.data.tags.get("resnet.phase") == "final"]
    parent = next(r for r in runs if r.data.tags.get("resnet.role") == "study")
    assert len(search) == 2 and len(final) == 1
    tried = sorted(float(r.data.params["momentum"]) for r in search)
    assert all(LOW <= value <= HIGH for value in tried) and tried[0] != tried[1], tried
    for run in [*search, *final]:  # the engine trained with the searched value
        assert run.data.params["config.momentum"] == run.data.params["momentum"]
    best = min(search, key=lambda r: r.data.metrics["final_val_error"])
    assert final[0].data.params["momentum"] == best.data.params["momentum"]
    assert parent.data.metrics["resnet20-A/momentum"] == pytest.approx(float(best.data.params["momentum"]))
    assert parent.data.params["search.momentum.low"] == str(LOW)

    folder = Path(client.download_artifacts(parent.info.run_id, "report", str(tmp_path / "artifacts")))
    rows = list(csv.DictReader(io.StringIO((folder / "trials.csv").read_text())))
    assert sorted(float(row["momentum"]) for row in rows if row["phase"] == "search") == tried
    table = (folder / "report.md").read_text()
    assert "| lr | weight decay | momentum |" in table
    version = client.get_model_version_by_alias("momentum-resnet20-A", "best")
    assert float(version.tags["momentum"]) == pytest.approx(float(best.data.params["momentum"]))
