"""The ImageNet half of the paper as a study (Tables 2 and 3): the whole path on real ImageNet-layout images, and the
one-line errors of ImageNet data a study cannot use.

``study/specs/tiny_imagenet.yaml`` on the tiny-imagenet-10 copy (10 Tiny ImageNet classes, 64x64 JPEG): ResNet-18 (A)
against plain-18, 2 search trials each (the paper's point and one 200x too large, which is stopped early), one final
seed each, through ``study/run.py`` as a user runs it. The report gives top-1 and top-5 errors next to Table 2's
full-ImageNet figures and says that this set's are not comparable; the registered models load from the Model
Registry and, given the val images' centre crops as uint8, reproduce their runs' test error. About 2 minutes (127 s)
on 2 cores (skipped, saying why, without the data).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import REPO, run_study, study_env
from mlflow.tracking import MlflowClient
from synthetic import make_dataset, write_imagenet_tree

import study.run as run_module
from resnet_core import TrainConfig
from resnet_core.data.imagenet import read_image, scan_image_folders
from resnet_core.data.imagenet_transforms import ImageSizes, eval_view
from resnet_core.engine.cli import option_name
from study.search_analysis import parse_value
from study.spec import load_spec

TINY = REPO / "study" / "specs" / "tiny_imagenet.yaml"
GROUPS = ("resnet18-A", "plain18")


@pytest.fixture(scope="module")
def tiny_study(imagenet_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[subprocess.CompletedProcess[str], Path]:
    folder = tmp_path_factory.mktemp("tiny-imagenet-study")
    archive = imagenet_data_dir / "tiny-imagenet-10.tar.gz"
    result = run_study("--spec", str(TINY), "--set", f"dataset.path={archive}", "--set",
                       f"dataset.cache_dir={folder / 'cache'}", cwd=folder, timeout=1500)
    return result, folder


def _client(folder: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny_imagenet")
    return client, client.search_runs([experiment.experiment_id], max_results=100)


def test_the_study_reports_top1_and_top5_next_to_table_2_with_the_caveat(tiny_study) -> None:
    result, _ = tiny_study
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "val top-1 % | val top-5 % | test top-1 % (mean ± std, n) | test top-5 % (mean ± std, n)" in out
    assert "| 27.88 / - |" in out and "| 27.94 / - |" in out  # Table 2: ResNet-18 (A) and plain-18, top-1 only
    assert "on full ImageNet (1000 classes, 1.28M training images" in out
    assert "this dataset has 10 classes and 5,000 training images, so its errors are not comparable with them" in out
    assert "Budget: 60 iterations per trial (0.01% of the paper's 600,000, Sec. 3.4) on ImageNet" in out
    for group in GROUPS:
        assert f"models:/tiny_imagenet-{group}@best" in out


def test_every_trial_logs_top5_curves_and_the_bad_point_is_stopped_early(tiny_study) -> None:
    result, folder = tiny_study
    assert result.returncode == 0, result.stderr[-4000:]
    client, runs = _client(folder)
    trials = [run for run in runs if "resnet.trial_id" in run.data.tags]
    search = [run for run in trials if run.data.tags["resnet.phase"] == "search"]
    final = [run for run in trials if run.data.tags["resnet.phase"] == "final"]
    assert len(search) == 4 and len(final) == 2 and all(run.info.status == "FINISHED" for run in trials)
    stopped = [run for run in search if run.data.tags["resnet.optuna_state"] == "PRUNED"]
    assert {float(run.data.params["lr"]) for run in stopped} == {20.0}, [run.data.params for run in stopped]
    for run in final:
        top5 = client.get_metric_history(run.info.run_id, "test_top5_error")
        top1 = client.get_metric_history(run.info.run_id, "test_error")
        assert [m.step for m in top5] == [m.step for m in top1] == [30, 60]
        assert all(t5.value <= t1.value for t5, t1 in zip(top5, top1))
        assert run.data.metrics["final_test_top5_error"] == top5[-1].value
    learnt = next(run for run in final if run.data.params["group"] == "resnet18-A")
    assert learnt.data.metrics["final_test_error"] < 80.0  # ResNet-18 learns real images: chance is 90%
    parent = next(run for run in runs if run.info.run_name == "tiny_imagenet")
    local = client.download_artifacts(parent.info.run_id, "report/trials.csv", str(folder / "artifacts"))
    rows = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    assert len(rows) == 6 and all(row["test_top5_error"] for row in rows if row["phase"] == "final")
    assert all(row["val_top5_error"] for row in rows if row["phase"] == "search" and row["status"] == "completed")
    metrics = parent.data.metrics
    assert all(f"{group}/test_top5_error_mean" in metrics for group in GROUPS)


def test_the_registered_models_predict_their_runs_test_error_from_uint8_crops(tiny_study) -> None:
    result, folder = tiny_study
    assert result.returncode == 0, result.stderr[-4000:]
    client, runs = _client(folder)
    index = scan_image_folders(next((folder / "cache").glob("extracted/*/tiny-imagenet-10")))
    view = eval_view(ImageSizes.scaled(64))
    crops = torch.stack([view(read_image(index.root / path)) for path, _ in index.val])
    labels = torch.tensor([label for _, label in index.val])
    mlflow.set_tracking_uri(client.tracking_uri)
    for group in GROUPS:
        version = client.get_model_version_by_alias(f"tiny_imagenet-{group}", "best")
        model = mlflow.pytorch.load_model(f"models:/tiny_imagenet-{group}@best")
        with torch.no_grad():
            logits = torch.cat([model(crops[start:start + 100]) for start in range(0, len(crops), 100)])
        assert logits.shape == (500, 10)
        error = 100.0 * (logits.argmax(1) != labels).float().mean().item()
        reported = client.get_run(version.run_id).data.metrics["final_test_error"]
        assert abs(error - reported) <= 0.4, (group, error, reported)  # at most 2 of 500 near-ties flip


# ---------------------------------------------------------------------------------------- data it cannot use
def _tree(root: Path, mistake: str) -> Path:
    tree = write_imagenet_tree(make_dataset(num_classes=3, train=30, test=9, size=16), root)
    if mistake == "no val":
        shutil.rmtree(tree / "val")
    elif mistake == "val class train lacks":
        shutil.copytree(tree / "val" / "n00000002", tree / "val" / "n00000099")
    elif mistake == "train class val lacks":
        shutil.rmtree(tree / "val" / "n00000002")
    return tree


@pytest.mark.parametrize(("mistake", "message"), [
    ("no val", "has train/ but no val/ folder"),
    ("val class train lacks", "has class folders that train/ lacks (n00000099)"),
    ("train class val lacks", "lacks class folders that train/ has (n00000002)"),
    ("everything held out", "dataset.val_split=30 holds out every one of the 30 training images: use fewer, e.g. "
                            "--set dataset.val_split=3"),
])
def test_imagenet_data_a_study_cannot_use_fails_in_one_line(mistake: str, message: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    tree = _tree(tmp_path / "data", mistake)

    def no_ray(*args: object, **kwargs: object) -> str:
        raise AssertionError("Ray must not start for bad data")

    monkeypatch.setattr(run_module, "local_ray_environment", lambda: None)
    monkeypatch.setattr(run_module, "connect_ray", no_ray)
    monkeypatch.chdir(tmp_path)
    split = "30" if mistake == "everything held out" else "3"
    code = run_module.main(["--spec", str(TINY), "--set", f"dataset.path={tree}", "--set",
                            f"dataset.val_split={split}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "mlflow.db").exists()


# ------------------------------------------------------------------------------ a trial of 2 workers, for real
def _command_line(config: TrainConfig) -> list[str]:
    """The engine's command-line options that give exactly ``config``."""
    args: list[str] = []
    for name, value in config.to_dict().items():
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(option_name(name) if value else "--no-" + name.replace("_", "-"))
        else:
            args += [option_name(name), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return args


@pytest.mark.e2e
def test_a_trial_of_two_gloo_workers_equals_the_engines_own_two_process_run(imagenet_data_dir: Path,
                                                                          tmp_path: Path) -> None:
    """One ImageNet trial as a TorchTrainer of 2 CPU workers (gloo, DDP) against ``torchrun --nproc-per-node 2`` of
    the engine with the same configuration: every evaluation's figures are equal (about 2 minutes)."""
    archive = imagenet_data_dir / "tiny-imagenet-10.tar.gz"
    overrides = [f"dataset.path={archive}", f"dataset.cache_dir={tmp_path / 'cache'}", "groups.archs=[resnet18]",
                 "search.trials_per_group=0", "search.initial_points=[{lr: 0.1, weight_decay: 1.0e-4}]",
                 "train.iterations=20", "train.eval_every=10", "train.batch_size=16", "train.image_size=32",
                 "train.mean_images=200", "train.threads=1", "resources.workers_per_trial=2",
                 "resources.cpus_per_worker=0.45"]
    study = run_study("--spec", str(TINY), *[arg for override in overrides for arg in ("--set", override)],
                      cwd=tmp_path, timeout=900)
    assert study.returncode == 0, study.stderr[-4000:]
    client, runs = _client(tmp_path)
    (trial,) = [run for run in runs if run.data.tags.get("resnet.phase") == "final"]
    spec = load_spec(TINY, overrides)
    config = spec.train_config(spec.study_groups()[0], spec.search.fixed_point(), seed=spec.train.seed, val_split=0)
    logged = {key[len("config."):]: json.loads(value) if value.startswith("[") else parse_value(value)
              for key, value in trial.data.params.items() if key.startswith("config.")}
    assert TrainConfig.from_dict(logged) == config  # the run the trial's MLflow params describe

    env = {**study_env(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "resnet_core.train", *_command_line(config), "--out", str(tmp_path / "engine"), "--no-progress"]
    engine = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert engine.returncode == 0 and "x2 ranks" in engine.stderr, engine.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "engine" / "metrics.csv").open()))
    assert [int(row["iteration"]) for row in rows] == [10, 20]
    for key in ("train_loss", "train_error", "test_loss", "test_error", "test_top5_error"):
        logged = [m.value for m in sorted(client.get_metric_history(trial.info.run_id, key), key=lambda m: m.step)]
        assert logged == [float(row[key]) for row in rows], key
