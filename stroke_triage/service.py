"""Running the service: the listener, the workers, or both in one process."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from db.engine import migrate
from listener.config import ListenerConfig, ListenerRuntime
from stroke_triage.data_lock import DataDirLock, DataDirLockedError
from stroke_triage.settings import Settings

if TYPE_CHECKING:
    from listener.server import Listener

log = logging.getLogger(__name__)


def start_listener(config: ListenerConfig, runtime: ListenerRuntime) -> Listener:
    """Start the DICOM listener (pynetdicom, Celery are imported only now)."""
    from listener.server import start_listener as start

    return start(config, runtime)


class ServiceError(Exception):
    """The service cannot start; the message says why and what to do."""


def check_checkpoint(settings: Settings) -> None:
    """Refuse to start without a usable checkpoint, and say how to get one."""
    check_checkpoint_folder(settings)
    # Imported here so that `stroke-triage listen` never loads torch.
    from model.checkpoint import load_checkpoint
    from model.errors import ModelError
    from worker.context import checkpoint_dir

    directory = checkpoint_dir(settings.worker)
    try:
        loaded = load_checkpoint(directory)
    except ModelError as exc:
        raise ServiceError(
            f"{exc}\nNo usable model checkpoint at {directory}. Train one with "
            "`stroke-triage train --data DIR --output DIR` and point "
            "STROKE_TRIAGE_WORKER__CHECKPOINT at it (see docs/model-card.md)."
        ) from exc
    if not loaded.spec.trained:
        log.warning("Checkpoint %s is randomly initialised: verdicts mean nothing.", directory)


def check_checkpoint_folder(settings: Settings) -> None:
    """Refuse a configured checkpoint folder that does not exist, without importing torch."""
    configured = settings.worker.checkpoint
    if configured is not None and not configured.is_dir():
        # Said before importing torch (15-40 s on a busy machine) for the commonest mistake.
        raise ServiceError(
            f"No usable model checkpoint at {configured}: the folder does not exist. Train one "
            "with `stroke-triage train --data DIR --output DIR` and point "
            "STROKE_TRIAGE_WORKER__CHECKPOINT at it (see docs/model-card.md)."
        )


def check_worker_pool(settings: Settings) -> None:
    """Refuse prefork children on the embedded folder queue, and say what to do instead.

    The folder queue has no event loop, so Celery runs its blocking prefork pool there, whose
    idle children share one lock to read their next task: a child killed while it holds it (the
    OOM killer, a ``kill -9``) leaves every other child waiting for it forever. The worker then
    takes no task and does not stop on SIGTERM. With Redis, Celery's asynchronous pool gives
    each child its own pipe.
    """
    concurrency = settings.worker.concurrency
    if concurrency > 1 and settings.resolved_broker_url.startswith("filesystem://"):
        raise ServiceError(
            f"worker.concurrency is {concurrency}, but the broker is the embedded folder queue, "
            "where Celery's pool of several processes stops for good once one of them is "
            "killed. Set STROKE_TRIAGE_BROKER_URL to a Redis URL (redis://host:6379/0), or keep "
            "STROKE_TRIAGE_WORKER__CONCURRENCY=1 and start one `stroke-triage work` per core."
        )


def run_listener(settings: Settings) -> int:
    """Run the listener until SIGINT or SIGTERM."""
    settings.ensure_dirs()
    stop = threading.Event()
    _on_signals(stop.set)
    with _serving(settings):
        stop.wait()
    return 0


@contextmanager
def _serving(settings: Settings) -> Iterator[Listener]:
    """Hold the data folder's lock and run the listener inside the block.

    Raises:
        ServiceError: Another service holds the data folder, or the port is taken.
    """
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirLockedError as exc:
        raise ServiceError(str(exc)) from None
    try:
        check_port_free(settings.listener.host, settings.listener.port)
        try:
            listener = start_listener(settings.listener, settings.listener_runtime())
        except OSError as exc:  # lost a race for the port since the check
            raise ServiceError(
                _port_message(settings.listener.host, settings.listener.port, exc)
            ) from exc
        from listener.metrics import serve_metrics

        stop_metrics = serve_metrics(
            host=settings.listener.metrics_host, port=settings.listener.metrics_port
        )
        try:
            yield listener
        finally:
            if stop_metrics is not None:
                stop_metrics()
            listener.stop()
    finally:
        lock.release()


def check_port_free(host: str, port: int) -> None:
    """Bind and release ``host:port`` as the listener will, so that a taken port is a clear error.

    Raises:
        ServiceError: The port is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::" binds every IPv6 address
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As socketserver does: reuse a port in TIME_WAIT, but never one that is listening.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServiceError(_port_message(host, port, exc)) from None


def _port_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        reason = "another program (perhaps another stroke-triage) is already listening there"
    else:
        reason = exc.strerror or str(exc)
    return (
        f"Cannot listen on {host}:{port}: {reason}. Stop that program, or choose another port "
        "with STROKE_TRIAGE_LISTENER__PORT."
    )


def run_worker(settings: Settings) -> int:
    """Run a Celery worker on the task queue until it is told to stop."""
    check_worker_pool(settings)
    settings.ensure_dirs()
    _prefork_metrics(settings)
    check_checkpoint(settings)
    migrate(settings.resolved_database_url)
    return _worker_main(settings)


def _prefork_metrics(settings: Settings) -> None:
    """Prefork pool children write their metrics to files the parent serves (see worker.metrics).

    Called before anything imports prometheus_client, which picks its value store on import.
    """
    if settings.worker.concurrency > 1 and settings.worker.metrics_port:
        from worker.metrics_dir import use_multiprocess_dir

        use_multiprocess_dir(settings.data_dir / "metrics" / str(os.getpid()))


def _worker_main(settings: Settings) -> int:
    """Run the Celery worker; the folders, the checkpoint and the schema are checked already."""
    from stroke_triage.shutdown import wake_idle_worker_on_term
    from worker.celery_app import create_celery_app

    wake_idle_worker_on_term()  # SIGTERM stops an idle worker now, not after 2-4 s of polling
    app = create_celery_app(settings.worker, settings.worker_runtime())
    concurrency = settings.worker.concurrency
    argv = [
        "worker",
        f"--queues={settings.task_queue}",
        f"--loglevel={settings.log_level}",
        f"--concurrency={concurrency}",
        f"--pool={'solo' if concurrency == 1 else 'prefork'}",
        f"--hostname=stroke-triage-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv)
    return 0


def run_all(settings: Settings) -> int:
    """Listener and worker in one process (the embedded default).

    The listener starts first and answers the scanner at once (it never needs torch); it also
    migrates the database. Only then are torch and the checkpoint loaded and the worker
    started, while the listener keeps receiving: instances that arrive meanwhile are stored
    and their jobs queued as usual, and the worker takes them when it is ready.
    """
    check_worker_pool(settings)
    settings.ensure_dirs()
    check_checkpoint_folder(settings)
    _prefork_metrics(settings)
    with _serving(settings):
        from console.server import start_console

        console = start_console(settings.console_runtime())
        try:
            check_checkpoint(settings)
            return _worker_main(settings)
        finally:
            if console is not None:
                console.stop()


def _on_signals(callback: Callable[[], object]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("Signal %d: shutting down", signum)
        callback()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
