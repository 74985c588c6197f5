"""The worker's own typed settings (the tying package composes them with the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from dicom_edge import AETitle, PacsDestination
from worker.notify.config import (
    DicomWebDestination,
    HttpUrl,
    NotificationDestination,
    check_unique_names,
)


class WorkerConfig(BaseModel):
    """How the worker classifies and where it sends the results."""

    checkpoint: Path | None = Field(
        None, description="Checkpoint folder (spec.json + model.safetensors); default: shipped."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs: CUDA when present, else CPU."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 only where the device supports it and the model's spec says "
        "bf16 gives fp32's answers (bf16_agrees_with_fp32); else fp32.",
    )
    batch_size: int = Field(32, ge=1, description="Slices per forward pass.")
    concurrency: int = Field(
        1,
        ge=1,
        description="Worker processes per host; with more than one, each runs torch on one "
        "thread, and the broker must be Redis (refused on the embedded folder queue).",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the worker's metrics bind to.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics port of each worker; 0: off."
    )
    pacs: list[PacsDestination] = Field(
        default_factory=list, description="Where SRs are sent; empty keeps them on disk only."
    )
    calling_ae_title: AETitle = Field("STROKETRIAGE", description="Our AE title when we send.")
    export_max_attempts: int = Field(
        5, ge=1, description="Tries per PACS before an export is a dead letter."
    )
    export_backoff_s: float = Field(
        10.0, gt=0, description="First wait before an export is retried; doubles each try."
    )
    task_max_retries: int = Field(
        3, ge=0, description="Retries of a task after a transient error (PACS, database)."
    )
    task_retry_backoff_s: float = Field(
        5.0, gt=0, description="First wait before a task is retried; doubles each retry."
    )
    gpu_queue: str | None = Field(
        None,
        description="Queue only workers with CUDA consume; when set, series are inferred there.",
    )
    warm_up: bool = Field(
        True, description="Load the model when a worker starts, not on its first series."
    )
    export_sweep_interval_s: float = Field(
        5.0, gt=0, description="How often each worker resends due exports from the outbox."
    )
    job_lease_s: float = Field(
        30.0,
        gt=0,
        description="A running job whose worker has not renewed its lease for this long is "
        "lost and published again.",
    )
    job_heartbeat_interval_s: float = Field(
        10.0, gt=0, description="How often a worker renews the lease of the job it runs."
    )
    secondary_capture: bool = Field(
        False, description="Also send a heat-map Secondary Capture for viewers without SR."
    )
    institution_name: str | None = Field(
        None, description="Institution Name written into the reports."
    )
    notifications: Annotated[list[NotificationDestination], AfterValidator(check_unique_names)] = (
        Field(
            default_factory=list,
            description="Webhook, e-mail and HL7 destinations told of results "
            "(see docs/notifications.md).",
        )
    )
    dicomweb: list[DicomWebDestination] = Field(
        default_factory=list,
        description="DICOMweb servers that get the SR (and SC) by STOW-RS, like the PACS.",
    )
    mode: Literal["live", "shadow"] = Field(
        "live",
        description="shadow: store every result, send only to PACS marked shadow = true.",
    )
    challenger_checkpoint: Path | None = Field(
        None,
        description="Second checkpoint run on each series after the SR is out; stored, never sent.",
    )
    console_url: HttpUrl | None = Field(
        None,
        description="Public base URL of the admin console; notifications link its series page.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> WorkerConfig:
        if self.job_heartbeat_interval_s >= self.job_lease_s:
            raise ValueError("job_heartbeat_interval_s must be shorter than job_lease_s.")
        return self


class WorkerRuntime(BaseModel):
    """Values the tying package resolves for the worker (paths and URLs)."""

    storage_dir: Path
    reports_dir: Path
    database_url: str
    data_folder: Path | None = Field(
        None, description="The data folder (its site key); default: the storage folder's parent."
    )
    broker_url: str
    broker_transport_options: dict[str, Any] = Field(default_factory=dict)
    task_queue: str = "stroke-triage"

    @property
    def data_dir(self) -> Path:
        """The data folder, which holds the site key (``site.key``)."""
        return self.data_folder or self.storage_dir.parent
