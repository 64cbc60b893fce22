"""Packaging that tells the truth: the console scripts the install promises run, and every third-party package
the code imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "bad", "message"), [
    ("resnet-study", ["--set", "oops"], "override 'oops' must look like key.path=value"),
    ("resnet-train", ["--arch", "resnet21"], "unknown architecture 'resnet21'"),
])
def test_each_console_script_runs_and_answers_bad_input_in_one_line(script: str, bad: list[str], message: str) -> None:
    path = Path(sys.executable).with_name(script)
    assert path.exists(), f"{script} is not installed: pip install -e ."
    result = subprocess.run([str(path), *bad], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1


def _top_level_imports(folder: Path) -> set[str]:
    names: set[str] = set()
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def _declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            for requirement in requirements}


@pytest.mark.parametrize(("folders", "extra"), [(("resnet_core", "study", "benchmarks"), None), (("tests",), "test")])
def test_every_imported_package_is_declared(folders: tuple[str, ...], extra: str | None) -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = _declared(project["dependencies"])
    if extra:
        declared |= _declared(project["optional-dependencies"][extra])
    local = {"resnet_core", "study", "benchmarks", "conftest", "synthetic", "archive_writers", "ddp_imagenet_rank"}
    distributions = packages_distributions()
    missing = {}
    for name in set().union(*(_top_level_imports(REPO / folder) for folder in folders)):
        if name in local or name in sys.stdlib_module_names or name == "__future__":
            continue
        providers = {dist.lower().replace("_", "-") for dist in distributions.get(name, [])}
        if not providers & declared:
            missing[name] = sorted(providers) or ["(not installed)"]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
