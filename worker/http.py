"""One HTTP(S) POST with TLS settings, for DICOMweb STOW-RS and webhooks.

Every way a POST can fail (no connection, TLS, a non-HTTP answer, HTTP 4xx/5xx) becomes one
:class:`HttpPostError`, which each caller turns into its own error message.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
    """The POST failed: ``status`` is the HTTP error status, or None when nothing answered."""

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class HttpAnswer:
    """A successful exchange's status and body."""

    status: int
    body: bytes


def post(url: str, *, body: bytes, headers: Mapping[str, str], target: HttpTarget) -> HttpAnswer:
    """POST ``body`` to ``url`` with ``target``'s timeout and TLS settings; read the answer.

    Raises:
        HttpPostError: HTTP 4xx/5xx (``status`` set, ``detail`` the reason), or no usable answer.
    """
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"User-Agent": USER_AGENT, **headers}
    )
    context = None
    if urllib.parse.urlsplit(url).scheme.lower() == "https":  # plain HTTP needs no TLS context
        context = client_context(verify=target.verify_tls, ca_file=target.ca_file)
    try:
        with urllib.request.urlopen(request, timeout=target.timeout_s, context=context) as response:
            return HttpAnswer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        raise HttpPostError(str(exc.reason), status=exc.code) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException: the peer answered something that is not HTTP (not an OSError).
        raise HttpPostError(f"{type(exc).__name__}: {exc}") from exc
