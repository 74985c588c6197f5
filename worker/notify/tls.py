"""TLS client contexts for the notification channels and DICOMweb."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path


def client_context(*, verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """A client context: verification on (system CAs, or ``ca_file``) unless turned off.

    Building one loads the CA certificates (tens of milliseconds), so contexts are cached per
    setting; a changed ``ca_file`` (another modification time or size) gets a new one.
    """
    if ca_file is None:
        return _cached_context(verify, None, None)
    try:
        stat = Path(ca_file).stat()
    except OSError:  # let ssl raise its own error about the missing file, uncached
        return _new_context(verify, str(ca_file))
    return _cached_context(verify, str(ca_file), (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=16)
def _cached_context(
    verify: bool, ca_file: str | None, version: tuple[int, int] | None
) -> ssl.SSLContext:
    return _new_context(verify, ca_file)


def _new_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # Only for test rigs and closed networks; the README says so.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
