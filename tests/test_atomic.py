"""Files replaced atomically: the old file or the new one, never half of one, and no temporary left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnet_core.atomic import replacing, write_text


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = write_text(tmp_path / "results.json", "old\n")
    with pytest.raises(RuntimeError), replacing(path) as stream:
        stream.write("half of the new")
        raise RuntimeError("the disk filled up")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_finished_write_replaces_the_file_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "run" / "checkpoint.pt"
    with replacing(path, "wb", durable=True) as stream:
        stream.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]
