"""The Ray cluster token file, readable by its owner only.

Ray 2.60 turns token authentication on for a local ``ray.init()`` and writes the token to
``~/.ray/auth_token`` with the process's umask (world-readable on most systems): anyone on the machine
could then submit jobs to the study's cluster. The study creates the file itself, mode 0600, before Ray
would, and tightens an existing one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32
"""256 bits, as Ray generates its own tokens."""


def token_path() -> Path:
    """Where Ray reads its token by default."""
    return Path.home() / ".ray" / "auth_token"


def ensure_private_token(path: Path | None = None) -> Path:
    """The token file at ``path`` (default ``~/.ray/auth_token``), created if missing, mode 0600 either way."""
    path = token_path() if path is None else path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path
    with os.fdopen(handle, "w") as stream:
        stream.write(secrets.token_hex(TOKEN_BYTES))
    return path
