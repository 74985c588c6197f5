"""Serving the console with uvicorn: in the foreground, or in a thread next to the service."""

from __future__ import annotations

import logging
import threading

import uvicorn

from console.app import create_app
from console.config import ConsoleRuntime

log = logging.getLogger(__name__)


def _server(runtime: ConsoleRuntime) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(runtime),
        host=runtime.config.host,
        port=runtime.config.port,
        log_level=runtime.log_level.lower(),
        # uvicorn's access log prints full URLs; they carry UIDs only, but keep it quiet.
        access_log=False,
        log_config=None,
    )
    return uvicorn.Server(config)


def run_api(runtime: ConsoleRuntime) -> int:
    """Serve the console until SIGINT or SIGTERM."""
    log.info("Admin console on http://%s:%s/", runtime.config.host, runtime.config.port)
    _server(runtime).run()
    return 0


class BackgroundConsole:
    """The console served from a daemon thread (for `stroke-triage up` and the demo)."""

    def __init__(self, runtime: ConsoleRuntime) -> None:
        """Start serving; :meth:`stop` ends it."""
        self.url = f"http://{runtime.config.host}:{runtime.config.port}/"
        self._server = _server(runtime)
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        log.info("Admin console on %s", self.url)

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; the service goes on without it
            log.warning("The admin console could not start on %s (port taken?).", self.url)

    def stop(self) -> None:
        """Ask the server to finish and wait a little for it."""
        self._server.should_exit = True
        self._thread.join(timeout=5)


def start_console(runtime: ConsoleRuntime) -> BackgroundConsole | None:
    """Serve the console in the background if ``api.enabled``; None when it is off."""
    if not runtime.config.enabled:
        return None
    return BackgroundConsole(runtime)
