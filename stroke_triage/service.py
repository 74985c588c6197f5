"""Running the service: the listener, the workers, or both in one process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

from db.engine import migrate
from listener.server import start_listener
from stroke_triage.settings import Settings

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """The service cannot start; the message says why and what to do."""


def check_checkpoint(settings: Settings) -> None:
    """Refuse to start without a usable checkpoint, and say how to get one."""
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


def run_listener(settings: Settings) -> int:
    """Run the listener until SIGINT or SIGTERM."""
    settings.ensure_dirs()
    listener = start_listener(settings.listener, settings.listener_runtime())
    stop = threading.Event()
    _on_signals(stop.set)
    try:
        stop.wait()
    finally:
        listener.stop()
    return 0


def run_worker(settings: Settings) -> int:
    """Run a Celery worker on the task queue until it is told to stop."""
    settings.ensure_dirs()
    check_checkpoint(settings)
    migrate(settings.resolved_database_url)
    return _worker_main(settings)


def _worker_main(settings: Settings) -> int:
    """Run the Celery worker; the folders, the checkpoint and the schema are checked already."""
    from worker.celery_app import create_celery_app

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

    The folders and the checkpoint are checked once, and the listener migrates the database
    once, before the worker starts.
    """
    settings.ensure_dirs()
    check_checkpoint(settings)
    listener = start_listener(settings.listener, settings.listener_runtime())
    try:
        return _worker_main(settings)
    finally:
        listener.stop()


def _on_signals(callback: Callable[[], object]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("Signal %d: shutting down", signum)
        callback()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
