"""Plain helpers shared by the tests (no fixtures, no tests): import them from here.

Fixtures live in the ``conftest.py`` files; a test never imports a ``conftest`` or another test
module by name (pytest imports those itself, and a second import is a second copy).
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pydicom
import pydicom.config
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import db.engine
import db.exports
import db.jobs
import db.receiving
import db.results
from db.enums import ExportKind
from db.rows import Export, Result, Series
from model.spec import STROKE, CodedFinding

REPO_ROOT = Path(__file__).resolve().parents[1]

POSTGRES_URL = os.environ.get(
    "STROKE_TRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The real PostgreSQL that tests use (``.ci/run`` starts it); its schemas are throwaway."""


def own_redis_database(url: str) -> str:
    """``url`` with a database number of this pytest-xdist worker's own (gw0 keeps it).

    Celery queues and kombu's keys live in one Redis database, so tests running at once in
    two workers, each with a listener and workers on the default queue, would take each
    other's jobs; Redis has 16 databases (0-15).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(base + int(worker[2:])) % 16}"))


REDIS_URL = own_redis_database(
    os.environ.get("STROKE_TRIAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
)
"""The real Redis that tests use (``.ci/run`` starts it), a database per test process."""


def in_ci() -> bool:
    """True when the CI runner runs the suite (``CI=true``): missing peers fail there."""
    return os.environ.get("CI") == "true"


def require_peer(name: str, reason: str) -> NoReturn:
    """Stop a test whose peer (a service, a tool, the shared data) is missing.

    On a developer's machine the test is skipped with ``reason``; in CI (``CI=true``) it fails,
    because a CI run that silently skips its real-service tests proves nothing.

    Args:
        name: The missing peer, e.g. ``"PostgreSQL"`` or ``"DCMTK storescu"``.
        reason: Why it is missing and how to get it, as a full sentence.
    """
    message = f"{name} is not available: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true, so a missing peer fails the run)", pytrace=False)
    pytest.skip(message)


def require_tool(tool: str, package: str) -> str:
    """The path of a command-line tool, or :func:`require_peer` naming its Debian package."""
    path = shutil.which(tool)
    if path is None:
        require_peer(tool, f"{tool} is not on PATH (apt-get install {package}).")
    return path


@contextmanager
def relaxed_dicom_validation() -> Iterator[None]:
    """Only warn about invalid DICOM values inside this block (the session raises).

    For a test that reads a real third-party file known to be slightly invalid, or that builds
    an invalid instance on purpose; say which, and why, where it is used.
    """
    settings = pydicom.config.settings
    saved = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom.config.WARN
    settings.writing_validation_mode = pydicom.config.WARN
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def shared_data_dir() -> Path:
    """The folder of third-party data (never committed), from STROKE_TRIAGE_SHARED_DATA."""
    configured = os.environ.get("STROKE_TRIAGE_SHARED_DATA")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


_FIRST_TEST_PORT = 10000


def _test_ports() -> Iterator[int]:
    """This test process's own ports: a slice below the kernel's ephemeral range.

    A port from ``bind(("127.0.0.1", 0))`` is an ephemeral port, which the kernel also gives to
    outgoing connections (a storescu's, a client's): between the test picking it and its server
    binding it, a connection of the other pytest-xdist worker could take it (EADDRINUSE). Ports
    below the range are never handed out that way, and each worker has its own slice, so two
    workers never pick the same port.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % workers
    size = max(1, (ephemeral - _FIRST_TEST_PORT) // workers)
    first = _FIRST_TEST_PORT + worker * size
    start = first + (os.getpid() % size)  # another run at the same time starts elsewhere
    while True:
        yield from range(start, first + size)
        yield from range(first, start)


@functools.cache
def _this_process_ports() -> Iterator[int]:
    """The one sequence of :func:`_test_ports` this process draws from."""
    return _test_ports()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now, and that no other test will pick.

    Drawn in turn from this process's slice (:func:`_test_ports`), skipping ports in use
    (a server's, or one still in TIME_WAIT).
    """
    ports = _this_process_ports()
    for _ in range(65536):
        port = next(ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free TCP port below the ephemeral range")


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s} s")


@contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """URL of a new, empty schema in the real PostgreSQL, dropped afterwards.

    Calls :func:`require_peer` (skip, or fail in CI) when PostgreSQL is not reachable.
    """
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        admin.dispose()
        require_peer("PostgreSQL", f"it is not reachable at {POSTGRES_URL} ({exc.orig}).")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


_POSTGRES_TEMPLATE: list[tuple[str, str]] = []
"""(schema name, pg_dump of it): the one PostgreSQL schema migrated in this test run."""


def _postgres_template() -> tuple[str, str] | None:
    """A migrated schema's name and its ``pg_dump`` (made once per run); None without pg_dump."""
    if not _POSTGRES_TEMPLATE:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            return None
        with postgres_schema("st_template") as url:
            db.engine.migrate(url)
            schema = url.rsplit("%3D", 1)[1]
            libpq = make_url(POSTGRES_URL).set(drivername="postgresql")
            dumped = subprocess.run(
                [pg_dump, "--schema", schema, "--inserts", "--no-owner", "--no-privileges",
                 "--dbname", libpq.render_as_string(hide_password=False)],
                capture_output=True, text=True, check=True, timeout=60,
            )  # fmt: skip
        statements = "\n".join(
            line
            for line in dumped.stdout.splitlines()
            # psql's own commands (\restrict) are no SQL; the schema is created per test.
            if not line.startswith("\\") and line != f"CREATE SCHEMA {schema};"
        )
        _POSTGRES_TEMPLATE.append((schema, statements))
    return _POSTGRES_TEMPLATE[0]


@contextmanager
def migrated_postgres_schema(prefix: str) -> Iterator[str]:
    """URL of a new schema in the real PostgreSQL, migrated and empty; dropped afterwards.

    The schema is restored from a ``pg_dump`` of one schema migrated once per test run (an
    Alembic upgrade takes half a second or more): the same tables, sequences and revision as a
    migration of its own. Without ``pg_dump``, each schema is migrated.
    """
    with postgres_schema(prefix) as url:
        template = _postgres_template()
        if template is None:
            db.engine.migrate(url)
        else:
            schema, statements = template
            admin = create_engine(POSTGRES_URL)
            try:
                raw = admin.raw_connection()
                try:
                    raw.cursor().execute(statements.replace(schema, url.rsplit("%3D", 1)[1]))
                    raw.commit()
                finally:
                    raw.close()
            finally:
                admin.dispose()
        yield url


def dciodvfy_errors(path: Path) -> list[str]:
    """Run dciodvfy on a file; print its warnings and return its error lines."""
    completed = subprocess.run(
        [require_tool("dciodvfy", "dicom3tools"), str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    lines = (completed.stdout + completed.stderr).splitlines()
    print("\n".join(line for line in lines if line.startswith("Warning")))
    return [line for line in lines if line.startswith("Error")]


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stroke_triage ARGS`` as a user would, with only ``env``'s settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "stroke_triage", *args],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class CliDatabase:
    """A migrated SQLite database in a test's ``data`` folder, and the CLI settings that use it."""

    url: str
    env: dict[str, str]
    """``STROKE_TRIAGE_DATA_DIR`` and ``STROKE_TRIAGE_DATABASE_URL``, for :func:`run_cli`."""


_SQLITE_TEMPLATE: list[Path] = []
"""The one SQLite database migrated in this test run (see :func:`migrated_sqlite`)."""
_TEMPLATE_DIR = tempfile.TemporaryDirectory(prefix="stroke-triage-test-template-")


def migrated_sqlite(path: Path) -> str:
    """Put a migrated, empty SQLite database at ``path`` and return its URL.

    The database is a copy of one migrated once per test run (``alembic upgrade head`` takes
    a tenth of a second or more, and a hundred tests need an empty database): the same file as
    a migration of its own would leave. Tests of the migrations themselves call ``migrate``.
    """
    if not _SQLITE_TEMPLATE:
        template = Path(_TEMPLATE_DIR.name) / "template.db"
        engine = db.engine.create_engine_for(f"sqlite:///{template}")
        try:
            db.engine.migrate(engine)
        finally:
            engine.dispose()  # the last connection checkpoints the WAL into the file
        leftovers = [p.name for p in template.parent.iterdir() if p.name.endswith(("-wal", "-shm"))]
        assert not leftovers, f"the template database left {leftovers} behind"
        _SQLITE_TEMPLATE.append(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_SQLITE_TEMPLATE[0], path)
    return f"sqlite:///{path}"


def cli_sqlite_database(tmp_path: Path) -> CliDatabase:
    """Create ``tmp_path/data`` holding a migrated, empty ``triage.db`` for the CLI to run on."""
    data = tmp_path / "data"
    data.mkdir()
    url = migrated_sqlite(data / "triage.db")
    return CliDatabase(
        url=url, env={"STROKE_TRIAGE_DATA_DIR": str(data), "STROKE_TRIAGE_DATABASE_URL": url}
    )


@contextmanager
def database_session(url: str) -> Iterator[Session]:
    """A session on an engine of its own for ``url``, disposed afterwards; the caller commits."""
    engine = db.engine.create_engine_for(url)
    try:
        with db.engine.make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


# The seed factory: the one way tests build received series, jobs, results and exports in the
# database (``record_head_ct_series``, ``record_stored_files``, ``seed_job``, ``seed_verdict``,
# ``seed_result``, ``seed_export``), through db's own functions, never by hand.

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
SEED_TIME = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
"""The time the seeds below use when a test gives none: a fixed moment, so stages are exact."""


def instance_records(
    series: str,
    numbers: Iterable[int],
    *,
    at: datetime | None = None,
    folder: str | None = None,
    spacing_s: float = 0.0,
) -> list[db.receiving.InstanceRecord]:
    """CT instances ``{series}.{n}``, stored at ``{folder}/{n}.dcm`` (no file is written).

    Instance ``n`` arrives ``n * spacing_s`` seconds after ``at`` (the current time if None).
    """
    start = datetime.now(UTC) if at is None else at
    return [
        db.receiving.InstanceRecord(
            sop_instance_uid=f"{series}.{n}",
            sop_class_uid=CT_IMAGE_STORAGE,
            path=f"{folder or series}/{n}.dcm",
            transfer_syntax_uid=EXPLICIT_VR_LE,
            size_bytes=1000,
            received_at=start + timedelta(seconds=n * spacing_s),
        )
        for n in numbers
    ]


def record_head_ct_series(
    session: Session,
    *,
    series: str,
    study: str | None = None,
    count: int = 1,
    numbers: Iterable[int] | None = None,
    at: datetime | None = None,
    spacing_s: float = 0.0,
    calling_ae_title: str = "SCANNER",
    description: str | None = "HEAD",
    folder: str | None = None,
) -> Series:
    """Record CT instances of a head series as the listener does (not committed).

    The one seed of received series: the instances are ``{series}.1`` … ``{series}.{count}``
    (or ``numbers``), stored at ``{folder}/{n}.dcm`` (``{study}/{series}`` by default; no file
    is written). The study defaults to the series UID's parent (``1.2.3.1`` -> ``1.2.3``).
    """
    study = study or series.rsplit(".", 1)[0]
    return db.receiving.record_instances(
        session=session,
        study_instance_uid=study,
        series_instance_uid=series,
        modality="CT",
        series_description=description,
        calling_ae_title=calling_ae_title,
        instances=instance_records(
            series,
            range(1, count + 1) if numbers is None else numbers,
            at=at,
            folder=folder or f"{study}/{series}",
            spacing_s=spacing_s,
        ),
    )


def record_stored_files(
    session: Session,
    *,
    storage_dir: Path,
    paths: Sequence[Path],
    description: str | None = "HEAD",
    calling_ae_title: str = "SCANNER",
) -> str:
    """Record DICOM files already under ``storage_dir`` as the listener does (not committed).

    One series (the first file's), with each file's own UIDs, class, transfer syntax and size.
    Returns its Series Instance UID.
    """
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    now = datetime.now(UTC)
    series_uid = str(headers[0].SeriesInstanceUID)
    db.receiving.record_instances(
        session=session,
        study_instance_uid=str(headers[0].StudyInstanceUID),
        series_instance_uid=series_uid,
        modality="CT",
        series_description=description,
        calling_ae_title=calling_ae_title,
        instances=[
            db.receiving.InstanceRecord(
                sop_instance_uid=str(header.SOPInstanceUID),
                sop_class_uid=str(header.SOPClassUID),
                path=str(path.relative_to(storage_dir)),
                transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
                size_bytes=path.stat().st_size,
                received_at=now,
            )
            for path, header in zip(paths, headers, strict=True)
        ],
    )
    return series_uid


def seed_verdict(
    probability: float = 0.9,
    *,
    threshold: float = 0.5,
    fingerprint: str = "f" * 64,
    model_version: str = "1.0.0",
    model_sha256: str = "a" * 64,
    model_name: str = "vit-stroke",
    precision: str = "fp32",
    finding: CodedFinding = STROKE,
) -> db.results.Verdict:
    """A model's verdict on ``finding``: suspected when ``probability`` reaches ``threshold``."""
    return db.results.Verdict(
        probability=probability,
        suspected=probability >= threshold,
        threshold=threshold,
        model_name=model_name,
        model_version=model_version,
        model_sha256=model_sha256,
        input_fingerprint=fingerprint,
        precision=precision,
        device="cpu",
        **finding_columns(finding),
    )


def finding_columns(finding: CodedFinding) -> dict[str, str]:
    """A verdict's (or result row's) finding fields, from a model spec's finding."""
    return {
        "finding_scheme": finding.scheme,
        "finding_value": finding.value,
        "finding_meaning": finding.meaning,
        "finding_name": finding.short_name,
    }


def seed_result(
    session: Session,
    *,
    job_id: int,
    verdict: db.results.Verdict | None = None,
    slice_scores: Sequence[tuple[str, float]] = (),
    now: datetime | None = None,
) -> Result:
    """Store a verdict (:func:`seed_verdict` by default) as the job's result (not committed)."""
    return db.results.record_result(
        session=session,
        job_id=job_id,
        verdict=verdict or seed_verdict(),
        slice_scores=slice_scores,
        now=now,
    )


def seed_job(
    session: Session,
    *,
    series: str,
    stage: str = "pending",
    verdict: db.results.Verdict | None = None,
    at: datetime | None = None,
) -> tuple[int, int | None]:
    """Take a recorded series' new job to ``stage`` (not committed); its id and result id.

    Stages: ``pending`` (created), ``queued``, ``started``, ``inferred`` (result stored),
    ``done`` (finished) and ``failed`` (failed for good). Each step comes a second after the
    one before, from ``at`` (the current time if None).
    """
    stages = ("pending", "queued", "started", "inferred", "done")
    start = datetime.now(UTC) if at is None else at
    step = iter(start + timedelta(seconds=n) for n in range(10))
    job = db.jobs.create_job(session=session, series_instance_uid=series, now=next(step))
    job_id, result_id = int(job.id), None
    reach = stages.index("started") if stage == "failed" else stages.index(stage)
    if reach >= 1:
        db.jobs.mark_job_queued(session=session, job_id=job_id, task_id="t", now=next(step))
    if reach >= 2:
        db.jobs.start_job(session=session, job_id=job_id, worker="test", now=next(step))
    if reach >= 3:
        result = seed_result(
            session,
            job_id=job_id,
            verdict=verdict,
            slice_scores=[(f"{series}.1", (verdict or seed_verdict()).probability)],
            now=next(step),
        )
        result_id = int(result.id)
    if reach >= 4:
        db.jobs.finish_job(session=session, job_id=job_id, now=next(step))
    if stage == "failed":
        db.jobs.fail_job(
            session=session,
            job_id=job_id,
            error="series_unreadable: The series cannot be read.",
            final=True,
            now=next(step),
        )
    return job_id, result_id


def seed_export(
    session: Session,
    *,
    result_id: int,
    kind: ExportKind = ExportKind.SR,
    destination: str = "PACS",
    sop_instance_uid: str = "2.25.1",
    path: str = "reports/sr.dcm",
) -> Export:
    """Queue one output of a result for one destination (not committed): a ``PENDING`` export."""
    return db.exports.ensure_export(
        session=session,
        result_id=result_id,
        kind=kind,
        destination=destination,
        sop_instance_uid=sop_instance_uid,
        path=path,
    )


def record_suspected_result(session: Session, *, series: str) -> tuple[int, int]:
    """Create and start a job for a recorded series and store a suspected result (not committed).

    The result (probability 0.9) scores the series' first instance; no export is made. Returns
    the job id and the result id.
    """
    job_id, result_id = seed_job(session, series=series, stage="inferred")
    assert result_id is not None
    return job_id, result_id


class TcpProxy:
    """A TCP forwarder on a free local port that a test can cut and restore.

    Put it between a client and a real server to simulate a network or server outage without
    touching the server (the shared PostgreSQL and Redis must never be stopped). While cut, it
    closes every open connection and refuses new ones (connection refused).
    """

    def __init__(self, target_host: str, target_port: int, *, accepting: bool = True) -> None:
        """Listen on a free port; forward to the target while ``accepting``."""
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self.connections = 0
        if accepting:
            self.restore()

    def restore(self) -> None:
        """Accept and forward connections again."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Close every forwarded connection and stop listening (new ones are refused)."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    def close(self) -> None:
        """Cut for good."""
        self._closed = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        pair = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(pair), [], [], 0.5)
                with self._lock:
                    if client not in self._sockets:
                        return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._sockets.discard(client)
                self._sockets.discard(upstream)
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
