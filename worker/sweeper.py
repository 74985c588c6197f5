"""A background thread in each worker process that drains the export and notification outboxes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from db.engine import SessionFactory
from worker.config import WorkerConfig
from worker.notify.send import sweep_notifications
from worker.outbox import sweep

log = logging.getLogger(__name__)


class ExportSweeper:
    """Calls :func:`worker.outbox.sweep` every ``interval_s`` until stopped."""

    def __init__(
        self,
        sessions: SessionFactory,
        config: WorkerConfig,
        *,
        interval_s: float,
        storage_dir: Path | None = None,
    ) -> None:
        """Prepare the sweeper; :meth:`start` runs it. ``storage_dir``: the stored series,
        where a failure's message reads its accession number."""
        self._sessions = sessions
        self._config = config
        self._storage_dir = storage_dir
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="export-sweeper", daemon=True)

    def start(self) -> None:
        """Start sweeping in a daemon thread."""
        self._thread.start()
        log.info("Export sweeper started (every %.1f s)", self._interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                sweep(self._sessions, config=self._config)
                # After the reports: a notification never goes before the SR it announces.
                sweep_notifications(
                    self._sessions, config=self._config, storage_dir=self._storage_dir
                )
            except Exception:  # the database may be away for a while; keep the thread alive
                log.exception("Outbox sweep failed; trying again in %.1f s", self._interval_s)
