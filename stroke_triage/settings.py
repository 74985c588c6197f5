"""One typed settings object: environment variables (STROKE_TRIAGE_*), an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

import model
from console.config import ApiConfig, ConsoleRuntime
from listener.config import DEFAULT_MODEL_SLICE_THICKNESS_MM, ListenerConfig, ListenerRuntime
from model.spec import ModelSpec
from stroke_triage.settings_errors import (
    SettingsError,
    check_environment,
    explain,
    read_toml,
    settings_variables,
)
from worker.config import WorkerConfig, WorkerRuntime
from worker.routing import inference_queue

ENV_PREFIX = "STROKE_TRIAGE_"
CONFIG_FILE_ENV = "STROKE_TRIAGE_CONFIG"


class Settings(BaseSettings):
    """All of stroke-triage's settings.

    Built once by an entry point and passed down; nothing reads it at import time.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    data_dir: Path = Field(
        Path("stroke-triage-data"),
        description="Root of received DICOM, reports, the embedded database and queue.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file under data_dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default: a folder queue under data_dir."
    )
    task_queue: str = Field("stroke-triage", description="Celery queue the tasks go to.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    listener: ListenerConfig = Field(default_factory=ListenerConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)

    @field_validator("log_level")
    @classmethod
    def _valid_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"log level {value!r} is not one of DEBUG, INFO, WARNING, ERROR.")
        return level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    # Resolved paths and URLs -------------------------------------------------------------

    @property
    def storage_dir(self) -> Path:
        """Where received instances are stored."""
        return self.data_dir / "storage"

    @property
    def reports_dir(self) -> Path:
        """Where the reports we create are kept (a copy of what is sent)."""
        return self.data_dir / "reports"

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite under the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'stroke-triage.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's filesystem transport (no server)."""
        return self.broker_url or "filesystem://"

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        """Transport options: the folder queue lives under the data folder when embedded."""
        if self.resolved_broker_url.startswith("filesystem://"):
            queue_dir = (self.data_dir / "queue").resolve()
            return {
                "data_folder_in": str(queue_dir / "messages"),
                "data_folder_out": str(queue_dir / "messages"),
                "control_folder": str(queue_dir / "control"),
                "polling_interval": 0.2,
            }
        return {"visibility_timeout": 3600}

    def ensure_dirs(self) -> None:
        """Create the data folders (and the folder queue's) if missing."""
        for path in (self.data_dir, self.storage_dir, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)
        for key in ("data_folder_in", "control_folder"):
            folder = self.broker_transport_options.get(key)
            if folder:
                Path(folder).mkdir(parents=True, exist_ok=True)

    def listener_runtime(self) -> ListenerRuntime:
        """The resolved values the listener needs."""
        return ListenerRuntime(
            storage_dir=self.storage_dir.resolve(),
            database_url=self.resolved_database_url,
            broker_url=self.resolved_broker_url,
            broker_transport_options=self.broker_transport_options,
            task_queue=inference_queue(self.worker, self.task_queue),
            model_slice_thickness_mm=model_slice_thickness_mm(self.worker.checkpoint),
        )

    def console_runtime(self) -> ConsoleRuntime:
        """The resolved values the console and the admin commands need."""
        return ConsoleRuntime(
            config=self.api,
            data_dir=self.data_dir,
            storage_dir=self.storage_dir.resolve(),
            reports_dir=self.reports_dir.resolve(),
            database_url=self.resolved_database_url,
            broker_url=self.resolved_broker_url,
            broker_transport_options=self.broker_transport_options,
            inference_queue=inference_queue(self.worker, self.task_queue),
            queued_lease_s=self.listener.queued_lease_s,
            log_level=self.log_level,
        )

    def worker_runtime(self) -> WorkerRuntime:
        """The resolved values the worker needs."""
        return WorkerRuntime(
            storage_dir=self.storage_dir.resolve(),
            reports_dir=self.reports_dir.resolve(),
            database_url=self.resolved_database_url,
            broker_url=self.resolved_broker_url,
            broker_transport_options=self.broker_transport_options,
            task_queue=self.task_queue,
        )


def model_slice_thickness_mm(checkpoint: Path | None) -> float:
    """The slice thickness the worker's model was made for, from its checkpoint's ``spec.json``.

    Read with the spec's own model (``model.spec`` imports only pydantic), so that the listener
    sees the value the worker will, and never imports torch; 5 mm when the spec does not say, or
    is not a valid spec (the worker reports a broken checkpoint itself).
    """
    # model.checkpoint.DEFAULT_CHECKPOINT_DIR, without importing model.checkpoint (torch).
    folder = checkpoint or Path(model.__file__).parent / "weights"
    try:
        spec = ModelSpec.from_json((folder / "spec.json").read_bytes())
    except (OSError, ValidationError):
        return DEFAULT_MODEL_SLICE_THICKNESS_MM
    return spec.slice_thickness_mm or DEFAULT_MODEL_SLICE_THICKNESS_MM


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: explicit overrides, then STROKE_TRIAGE_* variables, then a TOML file.

    The file is ``config_file`` or the one named by ``STROKE_TRIAGE_CONFIG``.

    Raises:
        FileNotFoundError: The settings file does not exist.
        SettingsError: A mistake in the variables or the file: an unknown variable or key (with
            the nearest valid name), bad JSON or TOML, or a bad value; one line each, naming the
            variable or the file's key that holds it.
    """
    environ = dict(os.environ)
    path = config_file
    if path is None and environ.get(CONFIG_FILE_ENV):
        path = Path(environ[CONFIG_FILE_ENV])
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"The settings file {path} does not exist.")
    problems = check_environment(Settings, ENV_PREFIX, environ)
    file_data = None
    if path is not None:
        try:
            file_data = read_toml(path, Settings)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsError("\n".join(problems))
    settings_class = Settings
    if path is not None:

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

        settings_class = FileSettings
    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        raise explain(
            exc,
            variables=settings_variables(Settings, ENV_PREFIX),
            environ=environ,
            file_data=file_data,
            file=path,
        ) from None
