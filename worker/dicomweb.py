"""DICOMweb STOW-RS client: send our SR (and SC) to a DICOMweb server instead of by C-STORE.

One POST of ``multipart/related; type="application/dicom"`` to ``{base}/studies/{study}``
(PS3.18 10.5), so that the server checks the objects belong to that study. Basic or bearer
auth; TLS verification on unless turned off.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import pydicom

from worker import http
from worker.errors import ExportError
from worker.notify.config import DicomWebDestination

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
    try:
        answer = http.post(
            f"{destination.url}/studies/{study_uid}",
            body=multipart_body([path.read_bytes() for path in paths], boundary),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                **_auth_header(destination),
            },
            target=destination,
        )
    except http.HttpPostError as exc:
        if exc.status is not None:
            raise ExportError(
                f"STOW-RS to {destination.url} failed with HTTP {exc.status} {exc.detail}."
            ) from exc
        raise ExportError(f"STOW-RS to {destination.url} failed: {exc.detail}.") from exc
    status = answer.status
    failed = _failed_instances(answer.body)
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
