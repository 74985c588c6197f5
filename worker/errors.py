"""Exceptions raised by the worker package, and the error text we store and send.

Every error the worker raises derives from :class:`WorkerError`, so that the Celery task can
decide in one place which failures are retried and which are final.

What a failure leaves in the database (``last_error`` of a job, an export or a notification)
goes on to the console, read-scope API tokens and the notification destinations. It is an
:class:`ErrorCode` and a message written by us (:func:`public_error`), never an exception's
own text: pydicom, highdicom and the network libraries quote the values they choke on, which
may be patient data. That raw text goes to the log only (:func:`error_detail`).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from db.errors import DatabaseUnavailableError
from model.errors import ModelError, PreprocessError


class ErrorCode(StrEnum):
    """Why something failed, in a word a site can filter and alert on."""

    CONNECTION_REFUSED = "connection_refused"
    """Nothing listens at the destination's address and port."""
    TIMEOUT = "timeout"
    """The destination did not answer in time."""
    HOST_NOT_FOUND = "host_not_found"
    """The destination's host name does not resolve."""
    NETWORK_ERROR = "network_error"
    """Another network failure (no route, connection reset)."""
    TLS_FAILED = "tls_failed"
    """The TLS handshake failed (an untrusted certificate, a wrong host name)."""
    ASSOCIATION_REJECTED = "association_rejected"
    """The PACS rejected our DICOM association (the message says its reason)."""
    ASSOCIATION_ABORTED = "association_aborted"
    """The PACS aborted the association, or accepted none of our presentation contexts."""
    STORE_FAILED = "store_failed"
    """The PACS answered the C-STORE with a failure status (the message names it)."""
    ENCODE_FAILED = "encode_failed"
    """An object to send could not be encoded for the association (damaged content)."""
    HTTP_STATUS = "http_status"
    """A web destination answered with an HTTP error status."""
    HTTP_REDIRECT = "http_redirect"
    """A web destination answered with a redirect, which we never follow."""
    REFUSED = "refused"
    """The destination took the message but refused it (STOW-RS, HL7 ACK, SMTP)."""
    BAD_ANSWER = "bad_answer"
    """The destination's answer could not be understood."""
    LOGIN_FAILED = "login_failed"
    """The destination refused our credentials."""
    FILE_MISSING = "file_missing"
    """A file to send is gone from the data folder."""
    FILE_UNREADABLE = "file_unreadable"
    """A file to send is present but not readable DICOM (truncated, empty)."""
    FILE_CHANGED = "file_changed"
    """A file to send is not the one the worker wrote: changed or truncated since."""
    NOT_CONFIGURED = "not_configured"
    """The destination is no longer in the settings."""
    SERIES_UNREADABLE = "series_unreadable"
    """The stored series cannot be read, was purged, or holds nothing to classify."""
    SERIES_MISMATCH = "series_mismatch"
    """The task names another series than its job."""
    PREPROCESS_FAILED = "preprocess_failed"
    """The series' images could not be turned into the model's input (HU, windows)."""
    MODEL_FAILED = "model_failed"
    """The model could not classify the series."""
    REPORT_FAILED = "report_failed"
    """The SR or the heat-map capture could not be built."""
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The database did not answer."""
    INTERNAL_ERROR = "internal_error"
    """An unexpected error; the worker's log has the details."""


class WorkerError(Exception):
    """Base class of all errors raised by the worker package.

    ``str(error)`` is the message written by us (safe to store and send); ``detail`` is the
    underlying library's text, for the log only.
    """

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    """The code of this class of error (an instance may carry another)."""

    def __init__(
        self, message: str, *, code: ErrorCode | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.detail = detail


class ReportError(WorkerError):
    """A DICOM output (Structured Report or Secondary Capture) could not be built or read."""

    code = ErrorCode.REPORT_FAILED


class ExportError(WorkerError):
    """Sending DICOM objects to the destination failed.

    Connection failures, aborts, rejected associations, timeouts and non-success C-STORE
    statuses all raise this error; they are usually transient, so callers may retry.

    Attributes:
        status: The DICOM status returned by the peer, or None when no status was received.
    """

    code = ErrorCode.NETWORK_ERROR

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: ErrorCode | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, code=code, detail=detail)
        self.status = status


@dataclass(frozen=True)
class PublicError:
    """An error as stored and sent: a code and a message written by us."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def parse(cls, text: str | None) -> PublicError | None:
        """Read back a stored ``code: message`` (a message stored without a code gets
        ``job_failed``); None for no text."""
        if not text:
            return None
        code, separator, message = text.partition(": ")
        if separator and code.replace("_", "").isalpha() and code.islower():
            return cls(code, message)
        return cls("job_failed", text)


#: Errors whose own text is not ours (it may quote values of the data): a fixed message.
_GENERIC_MESSAGES = {
    ErrorCode.REPORT_FAILED: "The report (SR or heat-map capture) could not be built.",
    ErrorCode.PREPROCESS_FAILED: (
        "The series' images could not be read as HU for the model (pixel data that does not "
        "decode, or no usable Rescale Slope/Intercept); the worker's log names the instance."
    ),
    ErrorCode.MODEL_FAILED: "The model could not classify the series.",
    ErrorCode.DATABASE_UNAVAILABLE: "The database did not answer.",
    ErrorCode.INTERNAL_ERROR: "An unexpected error stopped the work; see the worker's log.",
}


def public_error(exc: BaseException) -> PublicError:
    """The code and our message for a failure, safe to store and send.

    Our own errors keep their message (we wrote it), except those that wrap a library's text
    (:class:`ReportError`); anything else gets a fixed message naming the code only.
    """
    if isinstance(exc, WorkerError) and not isinstance(exc, ReportError):
        return PublicError(str(exc.code), str(exc))
    if isinstance(exc, ReportError):
        code = ErrorCode.REPORT_FAILED
    elif isinstance(exc, PreprocessError):
        code = ErrorCode.PREPROCESS_FAILED
    elif isinstance(exc, ModelError):
        code = ErrorCode.MODEL_FAILED
    elif isinstance(exc, DatabaseUnavailableError):
        code = ErrorCode.DATABASE_UNAVAILABLE
    else:
        code = ErrorCode.INTERNAL_ERROR
    return PublicError(str(code), _GENERIC_MESSAGES[code])


def error_detail(exc: BaseException) -> str:
    """Everything known about a failure, for the log only (it may quote data)."""
    detail = getattr(exc, "detail", None)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} ({detail})" if detail else text


def describe_network_error(exc: BaseException) -> tuple[ErrorCode, str]:
    """The code and our words for a failed connection, from the OS or TLS error behind it.

    Walks the exception's causes (httpx, smtplib and pynetdicom wrap the socket's error). The
    words name only what the OS or OpenSSL says (an errno, a verification reason), never the
    peer's text.
    """
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            return ErrorCode.TLS_FAILED, (
                f"the TLS certificate was not accepted: {reason} ({cause.reason})"
            )
        if isinstance(cause, ssl.SSLError):
            return ErrorCode.TLS_FAILED, f"the TLS handshake failed ({cause.reason or 'SSLError'})"
        if isinstance(cause, socket.gaierror):
            return ErrorCode.HOST_NOT_FOUND, "the host name does not resolve"
        if isinstance(cause, ConnectionRefusedError):
            return (
                ErrorCode.CONNECTION_REFUSED,
                "the connection was refused",
            )
        if isinstance(cause, TimeoutError | socket.timeout):
            return ErrorCode.TIMEOUT, "no answer in time"
    for cause in _causes(exc):
        number = cause.errno if isinstance(cause, OSError) else None
        if number is not None and number in errno.errorcode:
            name = errno.errorcode[number]
            return ErrorCode.NETWORK_ERROR, f"a network error ({name}: {os.strerror(number)})"
    return ErrorCode.NETWORK_ERROR, f"a network error ({type(exc).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, innermost last."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
