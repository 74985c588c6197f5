"""The listener's own typed settings (the tying package composes them with the rest)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicom_edge import AETitle, KernelFamily

Durability = Literal["fsync", "os"]
"""When a C-STORE is answered: after fsync of file and folder, or once the OS has the bytes."""

#: Most receiving processes chosen by default (``processes = 0``).
DEFAULT_MAX_PROCESSES = 4

#: The slice thickness a model is taken to be made for when its spec does not say.
DEFAULT_MODEL_SLICE_THICKNESS_MM = 5.0


class ListenerConfig(BaseModel):
    """How the DICOM listener receives and when it judges a series complete."""

    model_config = ConfigDict(extra="forbid")

    ae_title: AETitle = Field("STROKETRIAGE", description="Our AE title (called AE).")
    require_called_ae_title: bool = Field(
        False,
        description="Refuse an association addressed to another called AE title than ae_title "
        "(A-ASSOCIATE-RJ, called AE title not recognised); off: any called AE title is accepted.",
    )
    host: str = Field("0.0.0.0", description="Address the listener binds to.")
    port: int = Field(11112, ge=1, le=65535, description="DICOM port the listener binds to.")
    metrics_host: str = Field("127.0.0.1", description="Address the listener's metrics bind to.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of the listener; 0: off."
    )
    quiet_period_s: float = Field(
        5.0, gt=0, description="A series is complete after this many seconds with no new instance."
    )
    quiet_period_overrides: dict[str, float] = Field(
        default_factory=dict, description="Per calling AE title quiet period, in seconds."
    )
    max_series_wait_s: float = Field(
        600.0, gt=0, description="A series that keeps trickling in is cut off after this long."
    )
    min_slices: int = Field(5, ge=1, description="Fewest axial CT slices worth classifying.")
    kernel_families: dict[str, KernelFamily] = Field(
        default_factory=dict,
        description="This site's reconstruction kernels, tried before the built-in table: a "
        "pattern (case-insensitive, * and ? wildcards) -> soft, bone, lung or sharp. Only "
        "soft-tissue series are classified; of a study's series the one the model suits best.",
    )
    check_interval_s: float = Field(0.5, gt=0, description="How often completion is checked.")
    reconcile_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often unqueued jobs in the outbox, and lost jobs, are sent again.",
    )
    queued_lease_s: float = Field(
        45.0,
        gt=0,
        description="A queued job no worker has taken after this long is published again "
        "(then after as long as it has waited, at least).",
    )
    job_max_attempts: int = Field(
        5,
        ge=1,
        description="A job whose worker is lost after this many attempts fails for good.",
    )
    max_associations: int = Field(
        10, ge=1, description="Concurrent associations accepted (all receiving processes together)."
    )
    allowed_calling_ae_titles: list[AETitle] = Field(
        default_factory=list, description="Calling AE allow-list; empty accepts any caller."
    )
    network_timeout_s: float = Field(60.0, gt=0, description="TCP inactivity timeout.")
    acse_timeout_s: float = Field(30.0, gt=0, description="Association negotiation timeout.")
    dimse_timeout_s: float = Field(60.0, gt=0, description="DIMSE message timeout.")
    calling_ae_addresses: dict[AETitle, list[str]] = Field(
        default_factory=dict,
        description="IP pinning: a calling AE listed here is accepted only from these "
        "addresses or networks (CIDR).",
    )
    tls_cert_file: Path | None = Field(
        None, description="DICOM TLS: our certificate (PEM); TLS is off when unset."
    )
    tls_key_file: Path | None = Field(None, description="DICOM TLS: our private key (PEM).")
    tls_ca_file: Path | None = Field(
        None, description="DICOM TLS: CA bundle; when set, callers must present a certificate."
    )
    min_free_disk_mb: float = Field(
        1024.0, ge=0, description="Refuse instances (0xA700) when storage has less free space."
    )
    queue_high_water: int = Field(
        1000,
        ge=0,
        description="Refuse associations while this many jobs wait (pending + queued); 0: off.",
    )
    max_image_pixels: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="Refuse an image whose rows x columns x frames x samples exceed this.",
    )
    wait_for_database: bool = Field(
        False,
        description="Answer C-STORE only after the database record is committed "
        "(the file is always durable first).",
    )
    durability: Durability = Field(
        "fsync",
        description="fsync: a C-STORE is answered once the file and its folder are on disk; "
        "os: once the operating system has the bytes (faster, a power cut can lose them).",
    )
    processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Receiving processes sharing the port (the least busy accepts each "
        "association); 0: one per core, "
        "at most 4.",
    )

    @field_validator("calling_ae_addresses")
    @classmethod
    def _valid_addresses(cls, values: dict[str, list[str]]) -> dict[str, list[str]]:
        for networks in values.values():
            for network in networks:
                ipaddress.ip_network(network, strict=False)
        return values

    @model_validator(mode="after")
    def _tls_pair(self) -> ListenerConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together.")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_ca_file needs tls_cert_file and tls_key_file.")
        return self

    @property
    def tls_enabled(self) -> bool:
        """Whether associations are accepted over DICOM TLS only."""
        return self.tls_cert_file is not None

    @property
    def fsync(self) -> bool:
        """Whether received files are flushed to disk before success is answered."""
        return self.durability == "fsync"

    @property
    def receiving_processes(self) -> int:
        """How many processes receive: ``processes``, or one per core (at most 4) when 0."""
        if self.processes:
            return self.processes
        return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_PROCESSES))

    def quiet_period_for(self, calling_ae_title: str) -> float:
        """The quiet period that applies to one calling AE."""
        return self.quiet_period_overrides.get(calling_ae_title.strip(), self.quiet_period_s)


class ListenerRuntime(BaseModel):
    """Values the tying package resolves for the listener (paths and URLs)."""

    storage_dir: Path
    database_url: str
    broker_url: str
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    task_queue: str = "stroke-triage"
    model_slice_thickness_mm: float = Field(
        DEFAULT_MODEL_SLICE_THICKNESS_MM,
        gt=0,
        description="Slice thickness of the model's training data (its spec's), which the "
        "choice of a study's series prefers.",
    )
