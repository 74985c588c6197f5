"""Webhook: an HTTPS POST of a JSON document, signed with HMAC-SHA256 over timestamp and body.

Headers: ``X-Stroke-Triage-Timestamp`` (Unix seconds) and ``X-Stroke-Triage-Signature``
(``sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + body)>``), and ``Idempotency-Key``.
A receiver recomputes the signature, compares it in constant time, and refuses a timestamp
older than a few minutes (a replay).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from worker import http
from worker.notify.config import WebhookDestination
from worker.notify.errors import NotificationError
from worker.notify.message import Notice

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Stroke-Triage-Signature"
TIMESTAMP_HEADER = "X-Stroke-Triage-Timestamp"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: bytes,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic and fresh (for receivers and tests)."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def post(destination: WebhookDestination, notice: Notice) -> None:
    """POST the notice; any answer but 2xx is a failure.

    Raises:
        NotificationError: No connection, a TLS failure, or a non-2xx answer.
    """
    body = json.dumps(notice.document(), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    try:
        answer = http.post(
            destination.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": notice.key,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(
                    destination.secret.get_secret_value().encode(), timestamp, body
                ),
            },
            target=destination,
        )
    except http.HttpPostError as exc:
        raise NotificationError(
            f"The webhook {destination.name} failed: {exc.message}.",
            code=exc.code,
            detail=exc.detail,
        ) from exc
    log.info(
        "Webhook %s: notification %s accepted (%d)", destination.name, notice.key, answer.status
    )
