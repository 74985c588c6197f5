"""DICOMweb STOW-RS client: send our SR (and SC) to a DICOMweb server instead of by C-STORE.

One POST of ``multipart/related; type="application/dicom"`` to ``{base}/studies/{study}``
(PS3.18 10.5), so that the server checks the objects belong to that study. Basic or bearer
auth; TLS verification on unless turned off.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import pydicom

from worker.errors import ExportError
from worker.notify.config import DicomWebDestination
from worker.notify.tls import client_context

log = logging.getLogger(__name__)

FAILED_SOP_SEQUENCE = "00081198"
"""Failed SOP Sequence of the STOW-RS response: the instances the server refused."""


def multipart_body(parts: Sequence[bytes], boundary: str) -> bytes:
    """The multipart/related body of DICOM files (each part is application/dicom)."""
    chunks: list[bytes] = []
    for part in parts:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            part,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _auth_header(destination: DicomWebDestination) -> dict[str, str]:
    if destination.token is not None:
        return {"Authorization": f"Bearer {destination.token.get_secret_value()}"}
    if destination.username is not None:
        password = destination.password.get_secret_value() if destination.password else ""
        basic = base64.b64encode(f"{destination.username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def stow(*, paths: Sequence[Path], destination: DicomWebDestination) -> None:
    """Store DICOM files of one study on a DICOMweb server by STOW-RS.

    Raises:
        ExportError: Unreachable, refused (HTTP 4xx/5xx), or some instance failed.
    """
    if not paths:
        return
    study_uids = {
        str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID) for path in paths
    }
    if len(study_uids) != 1:
        raise ExportError(f"STOW-RS sends one study at a time, not {sorted(study_uids)}.")
    study_uid = study_uids.pop()
    boundary = f"stroke-triage-{uuid.uuid4().hex}"
    request = urllib.request.Request(
        f"{destination.url}/studies/{study_uid}",
        data=multipart_body([path.read_bytes() for path in paths], boundary),
        method="POST",
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            "User-Agent": "stroke-triage",
            **_auth_header(destination),
        },
    )
    context = client_context(verify=destination.verify_tls, ca_file=destination.ca_file)
    try:
        with urllib.request.urlopen(
            request, timeout=destination.timeout_s, context=context
        ) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        raise ExportError(
            f"STOW-RS to {destination.url} failed with HTTP {exc.code} {exc.reason}."
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: the peer answered something that is not HTTP (not an OSError).
        raise ExportError(
            f"STOW-RS to {destination.url} failed: {type(exc).__name__}: {exc}."
        ) from exc
    failed = _failed_instances(answer)
    if status not in (200, 202) or failed:
        raise ExportError(
            f"STOW-RS to {destination.url} answered HTTP {status}; {failed} instance(s) refused."
        )
    log.info("STOW-RS: %d instance(s) of study %s stored at %s", len(paths), study_uid, destination)


def _failed_instances(answer: bytes) -> int:
    try:
        document = json.loads(answer or b"{}")
    except ValueError:
        return 0
    if not isinstance(document, dict):
        return 0
    failed = document.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    return len(failed) if isinstance(failed, list) else 0
