"""TLS client contexts for the notification channels and DICOMweb."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(*, verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """A client context: verification on (system CAs, or ``ca_file``) unless turned off."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        # Only for test rigs and closed networks; the README says so.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
