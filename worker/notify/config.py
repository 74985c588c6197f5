"""Settings of the notification destinations and of the DICOMweb (STOW-RS) destinations."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from dicom_edge import AETitle

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

HD_LENGTH = 20
"""HL7 v2.5.1: the namespace ID (HD.1) of MSH-3 to MSH-6 holds at most 20 characters."""


class Trigger(StrEnum):
    """What makes a destination send a notification."""

    SUSPECTED = "suspected"
    """The model flags the series."""
    NOT_SUSPECTED = "not_suspected"
    """The model does not flag the series."""
    FAILED = "failed"
    """The series could not be classified, or an export of its report is dead."""


def check_url(value: str) -> str:
    """Return an http(s) URL without a trailing slash, or raise ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("The URL must start with http:// or https:// and name a host.")
    if parts.username is not None or parts.password is not None:
        # URLs appear in logs and error messages; credentials have their own secret settings.
        raise ValueError(
            "The URL must not carry a user name or password; use the destination's own "
            "credential settings."
        )
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError("The URL has a port outside 1-65535.") from exc
    return value.strip().rstrip("/")


HttpUrl = Annotated[str, AfterValidator(check_url)]
"""An http:// or https:// URL (validated, trailing slash removed)."""


class _Destination(BaseModel):
    """What every notification destination has: a name, triggers and filters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Unique name (outbox rows refer to it).")
    on: list[Trigger] = Field(default_factory=lambda: [Trigger.SUSPECTED], min_length=1)
    calling_ae_titles: list[AETitle] = Field(
        default_factory=list, description="Only series sent by these AEs; empty: any."
    )
    station_names: list[str] = Field(
        default_factory=list, description="Only series from these Station Names; empty: any."
    )

    def accepts(self, trigger: Trigger, *, calling_ae_title: str, station_name: str) -> bool:
        """Whether this destination wants a notification of this event from this source."""
        if trigger not in self.on:
            return False
        if self.calling_ae_titles and calling_ae_title not in self.calling_ae_titles:
            return False
        return not self.station_names or station_name in self.station_names


class WebhookDestination(_Destination):
    """An HTTPS endpoint that receives a signed JSON document."""

    kind: Literal["webhook"]
    url: HttpUrl
    secret: SecretStr = Field(description="Shared secret of the HMAC-SHA256 signature.")
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0)
    allow_plain_http: bool = Field(
        False, description="Allow an http:// URL (the body carries accession numbers)."
    )

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> WebhookDestination:
        # The document names the study and its accession number: only over TLS by default.
        if self.url.startswith("http://") and not self.allow_plain_http:
            raise ValueError(
                f"The webhook {self.name!r} has a plain http:// URL; use https:// or set "
                "allow_plain_http = true for a receiver on a trusted network."
            )
        return self


class EmailDestination(_Destination):
    """An SMTP server (STARTTLS, or implicit TLS on port 465, and login) and the addresses."""

    kind: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(
        587, ge=1, le=65535, description="SMTP port; default 587, or 465 with implicit_tls."
    )
    starttls: bool = Field(True, description="STARTTLS before login (ignored with implicit_tls).")
    implicit_tls: bool = Field(
        False, description="TLS from the first byte (SMTPS, usually port 465), not STARTTLS."
    )
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(min_length=3)
    recipients: list[str] = Field(min_length=1)
    include_patient_name: bool = False
    attach_preview: bool = Field(
        False,
        description="Attach the preview of the key slices (a small JPEG: patient data, not "
        "for diagnosis); off by default.",
    )
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls_port(cls, data: Any) -> Any:
        # SMTPS listens on 465: a site that turns implicit TLS on should not also have to
        # remember the port (an explicit port still wins).
        if isinstance(data, dict) and data.get("implicit_tls") is True and "port" not in data:
            return {**data, "port": 465}
        return data

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> EmailDestination:
        # Without TLS, AUTH PLAIN/LOGIN carry the password in clear on the network.
        if self.username and not (self.starttls or self.implicit_tls):
            raise ValueError(
                f"The e-mail destination {self.name!r} has a username but starttls = false "
                "and implicit_tls = false, which would send the password in clear; set "
                "starttls = true (port 587) or implicit_tls = true (port 465)."
            )
        return self


class Hl7Destination(_Destination):
    """An HL7 v2 interface engine that takes ORU^R01 over MLLP and answers with an ACK."""

    kind: Literal["hl7"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # MSH-3 to MSH-6 (HD.1, IS) hold at most 20 characters: longer ones make no valid message.
    sending_application: str = Field("STROKETRIAGE", min_length=1, max_length=HD_LENGTH)
    sending_facility: str = Field("AI", min_length=1, max_length=HD_LENGTH)
    receiving_application: str = Field("RIS", min_length=1, max_length=HD_LENGTH)
    receiving_facility: str = Field("HOSPITAL", min_length=1, max_length=HD_LENGTH)
    processing_id: Literal["P", "T", "D"] = "P"
    timeout_s: float = Field(10.0, gt=0)
    tls: bool = Field(False, description="MLLP over TLS (the interface engine's TLS port).")
    verify_tls: bool = True
    ca_file: Path | None = None
    include_patient_identifiers: bool = Field(
        False,
        description="Send the Patient ID (PID-3) and name (PID-5); otherwise PID-3 is UNKNOWN "
        "and the receiver matches the order by accession number (OBR-3, OBR-18).",
    )


NotificationDestination = Annotated[
    WebhookDestination | EmailDestination | Hl7Destination, Field(discriminator="kind")
]
"""One notification destination; ``kind`` says which."""


class DicomWebDestination(BaseModel):
    """A DICOMweb server that receives our reports by STOW-RS instead of C-STORE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: HttpUrl = Field(max_length=128, description="Base URL of the DICOMweb service.")
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = Field(None, description="Bearer token (instead of basic auth).")
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_s: float = Field(30.0, gt=0)
    allow_plain_http: bool = Field(
        False, description="Allow an http:// URL (the reports carry patient data)."
    )

    @model_validator(mode="after")
    def _https_unless_allowed(self) -> DicomWebDestination:
        # The SR names the patient and holds the verdict: only over TLS by default.
        if self.url.startswith("http://") and not self.allow_plain_http:
            raise ValueError(
                f"The DICOMweb server {self.url} has a plain http:// URL; use https:// or set "
                "allow_plain_http = true for a server on a trusted network."
            )
        return self

    def __str__(self) -> str:
        return self.url


def check_unique_names(
    destinations: list[NotificationDestination],
) -> list[NotificationDestination]:
    """Raise ValueError if two destinations share a name."""
    names = [destination.name for destination in destinations]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Notification destination names must be unique: {duplicates}.")
    return destinations
