"""A local SQLite store that several processes open while it is being created: MLflow builds its schema in
place, in seconds, and a second process that opens the file meanwhile finds half of it. Each study's tracker
creates a store that does not exist yet under a name of its own and links it into place complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, study_env
from mlflow.tracking import MlflowClient

from study.tracking import StudyTracker, create_sqlite_store

OPEN_A_STUDY = """
import sys
from study.tracking import StudyTracker
StudyTracker(sys.argv[1], sys.argv[2], sys.argv[2])
print("opened", sys.argv[2])
"""


def test_studies_started_together_on_a_new_store_all_open_it(tmp_path: Path) -> None:
    """Three studies (real processes) start at once on a store that does not exist yet: each opens it and
    creates its experiment (before, two of three failed: "table ... already exists" or a duplicate column)."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    names = ["first", "second", "third"]
    started = [subprocess.Popen([sys.executable, "-c", OPEN_A_STUDY, uri, name], cwd=REPO, env=study_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in names]
    for name, process in zip(names, started):
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        assert out.strip() == f"opened {name}"
    client = MlflowClient(uri)
    assert {name for name in names if client.get_experiment_by_name(name) is not None} == set(names)
    assert [path.name for path in (tmp_path / "store").iterdir()] == ["mlflow.db"]  # no staging copy left


def test_an_existing_store_is_opened_as_it_is(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    StudyTracker(uri, "kept", "kept")
    before = (tmp_path / "mlflow.db").stat()
    create_sqlite_store(uri)
    after = (tmp_path / "mlflow.db").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert MlflowClient(uri).get_experiment_by_name("kept") is not None
