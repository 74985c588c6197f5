"""The site key: a secret made once per data folder that keys the accession-number HMAC.

Accession numbers are short and often sequential, so a bare hash of one is reversed by hashing
every candidate. Keyed with a secret kept apart from the database (``site.key`` in the data
folder, readable by the service's user only), a stored HMAC says nothing to whoever reads the
database or a backup of it without the key. Deleting the key makes every stored accession HMAC
unmatchable: keep it with the data folder's backups.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

KEY_FILE_NAME = "site.key"
#: Bytes of key material (as hex in the file).
KEY_BYTES = 32
#: How long a process waits for the key another one is writing at the same moment.
WAIT_FOR_WRITER_S = 5.0


def site_key(data_dir: Path) -> bytes:
    """The data folder's site key, created (mode 600) on first use.

    Raises:
        RuntimeError: The key file exists but holds no key.
    """
    path = data_dir / KEY_FILE_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, f"{key.hex()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def _read(path: Path) -> bytes:
    """The key in ``path``, waiting a moment if its writer has created but not yet filled it."""
    deadline = time.monotonic() + WAIT_FOR_WRITER_S
    while not (text := path.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise RuntimeError(
            f"The site key file {path} holds no {KEY_BYTES}-byte key; restore it from the data "
            "folder's backup (deleting it makes the stored accession numbers unmatchable)."
        )
    return key
