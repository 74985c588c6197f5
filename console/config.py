"""The admin console's own typed settings, and the runtime values the tying package resolves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from console.viewer import check_viewer_template


class ApiConfig(BaseModel):
    """Where the admin console listens and how it behaves."""

    enabled: bool = Field(True, description="`stroke-triage up` also serves the admin console.")
    host: str = Field("127.0.0.1", description="Address the admin console binds to.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port of the admin console.")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty turns CORS off."
    )
    session_secret: str | None = Field(
        None,
        description="Key from which the dashboard forms' CSRF tokens are derived; default: "
        "one derived from the data folder's site key (site.key), so open pages survive a "
        "restart.",
    )
    suspected_window_h: float = Field(
        6.0, gt=0, description="Suspected series this recent stay on top of the worklist."
    )
    refresh_s: int = Field(15, ge=0, description="Worklist auto-refresh period; 0: off.")
    broker_timeout_s: float = Field(
        1.0, gt=0, description="How long /ready waits for the broker before calling it down."
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) the console serves HTTPS with; needs "
        "tls_key_file. Without it the console speaks plain HTTP.",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of tls_cert_file (readable by the service only)."
    )
    viewer_url: str = Field(
        "",
        description="Link to open a study in the site's viewer, shown on the worklist and the "
        "series page: a URL with {study_instance_uid}, {series_instance_uid} or "
        "{accession_number} in it, e.g. https://pacs/ohif/viewer?StudyInstanceUIDs="
        "{study_instance_uid}. Empty: no link.",
    )
    tls_by_proxy: bool = Field(
        False,
        description="A reverse proxy in front terminates TLS: the console may then bind a "
        "non-loopback address over plain HTTP, and its cookies are marked Secure.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "api.tls_cert_file and api.tls_key_file go together: set both, or neither."
            )
        return self

    @field_validator("viewer_url")
    @classmethod
    def _viewer_template(cls, value: str) -> str:
        check_viewer_template(value.strip())
        return value.strip()

    @property
    def serves_tls(self) -> bool:
        """Whether the console itself speaks HTTPS."""
        return self.tls_cert_file is not None


class ConsoleRuntime(BaseModel):
    """Values the tying package resolves for the console and the admin commands."""

    config: ApiConfig = Field(default_factory=ApiConfig)
    data_dir: Path
    storage_dir: Path
    reports_dir: Path
    database_url: str
    broker_url: str
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    inference_queue: str = Field(
        "stroke-triage", description="The queue a re-queued series is sent to."
    )
    queued_lease_s: float = Field(
        600.0, description="How long a re-queued job may wait on the broker (the listener's)."
    )
    log_level: str = "INFO"
