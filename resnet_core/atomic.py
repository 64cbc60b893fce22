"""Files replaced in one rename: a reader (another process, a resumed run) sees the old file or the new one,
never half of one. The one place this is written; checkpoints, run files and analysis tables all use it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def replacing(path: Path, mode: str = "w", durable: bool = False) -> Iterator[IO]:
    """A stream to a temporary file next to ``path`` that replaces ``path`` when the block ends without error
    (and is removed when it raises); ``durable`` also flushes it to disk before the rename (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    """Replace ``path`` by ``text`` atomically."""
    with replacing(path) as stream:
        stream.write(text)
    return Path(path)
