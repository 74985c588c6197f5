"""DICOMweb STOW-RS client: send our SR (and SC) to a DICOMweb server instead of by C-STORE.

One POST of ``multipart/related; type="application/dicom"`` to ``{base}/studies/{study}``
(PS3.18 10.5), so that the server checks the objects belong to that study. Basic or bearer
auth; TLS verification on unless turned off. The bytes sent are the stored files' own.

The POST is :func:`worker.http.post` (httpx) rather than ``dicomweb-client``: that library
posts through ``requests``, which follows a 302/303 as a GET to the redirect's host and treats
any 3xx as success, verifies TLS against certifi's bundle rather than the system's CAs or our
``ca_file`` context, retries on its own inside our outbox's backoff, and re-encodes the files.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Sequence

from worker import http
from worker.errors import ErrorCode, ExportError
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


def stow(
    *, parts: Sequence[bytes], study_instance_uid: str, destination: DicomWebDestination
) -> None:
    """Store DICOM files (their bytes, as stored) of one study on a DICOMweb server by STOW-RS.

    Raises:
        ExportError: Unreachable, a redirect, refused (HTTP 4xx/5xx), or an instance failed.
    """
    if not parts:
        return
    boundary = f"stroke-triage-{uuid.uuid4().hex}"
    try:
        answer = http.post(
            f"{destination.url}/studies/{study_instance_uid}",
            body=multipart_body(parts, boundary),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
                **_auth_header(destination),
            },
            target=destination,
        )
    except http.HttpPostError as exc:
        raise ExportError(
            f"STOW-RS to {destination.url} failed: {exc.message}.",
            code=exc.code,
            status=exc.status,
            detail=exc.detail,
        ) from exc
    failed = _failed_instances(answer.body)
    if answer.status not in (200, 202) or failed:
        raise ExportError(
            f"The DICOMweb server {destination.url} answered HTTP {answer.status} and refused "
            f"{failed} of {len(parts)} instance(s) (Failed SOP Sequence).",
            code=ErrorCode.REFUSED,
            detail=answer.body[:500].decode(errors="replace"),
        )
    log.info(
        "STOW-RS: %d instance(s) of study %s stored at %s",
        len(parts),
        study_instance_uid,
        destination,
    )


def _failed_instances(answer: bytes) -> int:
    try:
        document = json.loads(answer or b"{}")
    except ValueError:
        return 0
    if not isinstance(document, dict):
        return 0
    failed = document.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    return len(failed) if isinstance(failed, list) else 0
