"""The console's key, from which the dashboard forms' CSRF tokens are derived.

Sessions themselves live in the database (``db.console_sessions``). A key made up per process
would make every open page's forms stale when the service restarts. Unless
``api.session_secret`` is set, the first console on a data folder creates
``console-session.key`` there (readable by the service's user only) and every later one, after
a restart or beside it, reads the same key.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

KEY_FILE_NAME = "console-session.key"
#: How long a console waits for the key another one is writing at the same moment.
WAIT_FOR_WRITER_S = 5.0


def session_secret(configured: str | None, data_dir: Path) -> str:
    """``configured`` if set, else the data folder's key (created on first use)."""
    if configured:
        return configured
    path = data_dir / KEY_FILE_NAME
    key = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    try:
        os.write(fd, f"{key}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read(path: Path) -> str:
    """The key in ``path``, waiting a moment if its writer has created but not yet filled it."""
    deadline = time.monotonic() + WAIT_FOR_WRITER_S
    while not (key := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not key:
        raise RuntimeError(f"The console's key file {path} is empty; delete it and restart.")
    return key
