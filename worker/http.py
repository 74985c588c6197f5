"""One HTTP(S) POST with TLS settings, for DICOMweb STOW-RS and webhooks (httpx).

Redirects are never followed: an answer 3xx is a failure (:attr:`ErrorCode.HTTP_REDIRECT`).
Following one would turn the POST into a GET on another URL (an SSO login page, a moved
endpoint), report success although the target received nothing, and carry the bearer token,
the webhook signature and the Idempotency-Key to whatever host the redirect names.

Every way a POST can fail (no connection, TLS, a non-HTTP answer, a redirect, HTTP 4xx/5xx)
becomes one :class:`HttpPostError` with an error code and a message written by us; each caller
adds what it was sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from worker.errors import ErrorCode, describe_network_error
from worker.notify.tls import client_context

USER_AGENT = "stroke-triage"


class HttpTarget(Protocol):
    """The connection settings of a destination (DICOMweb, webhook)."""

    @property
    def timeout_s(self) -> float: ...

    @property
    def verify_tls(self) -> bool: ...

    @property
    def ca_file(self) -> Path | None: ...


class HttpPostError(Exception):
    """The POST failed.

    Attributes:
        code: Why, as an error code.
        message: What happened, a clause in our words (no text of the peer's), for callers to
            put after ``... failed: ``.
        status: The HTTP status when the peer answered one, else None.
        detail: The library's own text, for the log only.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, status: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class HttpAnswer:
    """A successful (2xx) exchange's status and body."""

    status: int
    body: bytes


def post(url: str, *, body: bytes, headers: Mapping[str, str], target: HttpTarget) -> HttpAnswer:
    """POST ``body`` to ``url`` with ``target``'s timeout and TLS settings; read the answer.

    Raises:
        HttpPostError: No answer, a redirect (never followed) or HTTP 4xx/5xx.
    """
    https = urlsplit(url).scheme.lower() == "https"
    verify = client_context(verify=target.verify_tls, ca_file=target.ca_file) if https else False
    try:
        with httpx.Client(
            verify=verify, timeout=target.timeout_s, follow_redirects=False
        ) as client:
            response = client.post(url, content=body, headers={"User-Agent": USER_AGENT, **headers})
    except httpx.TimeoutException as exc:
        raise HttpPostError(
            ErrorCode.TIMEOUT, f"no answer within {target.timeout_s:g} s", detail=repr(exc)
        ) from exc
    except httpx.RemoteProtocolError as exc:
        raise HttpPostError(
            ErrorCode.BAD_ANSWER, "its answer is not HTTP", detail=repr(exc)
        ) from exc
    except httpx.HTTPError as exc:
        code, message = describe_network_error(exc)
        raise HttpPostError(code, message, detail=repr(exc)) from exc
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        where = urlsplit(location).hostname or urlsplit(url).hostname or "?"
        raise HttpPostError(
            ErrorCode.HTTP_REDIRECT,
            f"it answered {_status_text(status)}, a redirect to {where} that is not followed "
            "(point the setting at the final URL)",
            status=status,
            detail=f"Location: {location}",
        )
    if not 200 <= status < 300:
        raise HttpPostError(
            ErrorCode.HTTP_STATUS,
            f"it answered {_status_text(status)}",
            status=status,
            detail=response.text[:500],
        )
    return HttpAnswer(status, response.content)


def _status_text(status: int) -> str:
    """``HTTP 302 Found``: the status and its standard phrase (not the peer's own words)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
