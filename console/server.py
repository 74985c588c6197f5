"""Serving the console with uvicorn: in the foreground, or in a thread next to the service.

The port is bound and the TLS files loaded before serving, so that a taken port or a bad
setting stops the command with one clear message (exit 2) instead of a console that is silently
missing.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time

import uvicorn

from console.app import create_app
from console.config import ApiConfig, ConsoleRuntime
from console.errors import ConsoleStartError

log = logging.getLogger(__name__)

#: How long a background console may take to start serving.
START_TIMEOUT_S = 30.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_transport(config: ApiConfig) -> None:
    """Refuse plain HTTP on a non-loopback address unless a proxy in front terminates TLS.

    Raises:
        ConsoleStartError: Naming the settings that fix it.
    """
    if config.serves_tls or config.tls_by_proxy or _is_loopback(config.host):
        return
    raise ConsoleStartError(
        f"The admin console would serve plain HTTP on {config.host}, which is not a loopback "
        "address: tokens and patient names would cross the network in clear. Set "
        "api.tls_cert_file and api.tls_key_file (STROKE_TRIAGE_API__TLS_CERT_FILE, "
        "STROKE_TRIAGE_API__TLS_KEY_FILE) to serve HTTPS, or api.tls_by_proxy = true "
        "(STROKE_TRIAGE_API__TLS_BY_PROXY) if a reverse proxy in front terminates TLS, or "
        "set api.host to 127.0.0.1."
    )


def _bind(config: ApiConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ConsoleStartError(
            f"The admin console cannot listen on {config.host}:{config.port}: "
            f"{exc.strerror or exc}. Choose a free port with api.port "
            "(STROKE_TRIAGE_API__PORT), or turn the console off with api.enabled = false."
        ) from exc
    sock.set_inheritable(True)
    return sock


def _server(runtime: ConsoleRuntime) -> uvicorn.Server:
    config = runtime.config
    server_config = uvicorn.Config(
        create_app(runtime),
        host=config.host,
        port=config.port,
        log_level=runtime.log_level.lower(),
        # uvicorn's access log prints full URLs, and a search URL carries what was searched for
        # (a patient's name): never logged here (a reverse proxy must not log it either).
        access_log=False,
        log_config=None,
        ssl_certfile=config.tls_cert_file,
        ssl_keyfile=config.tls_key_file,
    )
    try:
        server_config.load()
    except (OSError, ssl.SSLError) as exc:
        raise ConsoleStartError(
            "The admin console cannot load its TLS certificate and key "
            f"(api.tls_cert_file {config.tls_cert_file}, api.tls_key_file "
            f"{config.tls_key_file}): {exc}."
        ) from exc
    return uvicorn.Server(server_config)


def console_url(config: ApiConfig) -> str:
    """The console's address as a browser on this host opens it."""
    scheme = "https" if config.serves_tls else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{scheme}://{host}:{config.port}/"


def run_api(runtime: ConsoleRuntime) -> int:
    """Serve the console until SIGINT or SIGTERM.

    Raises:
        ConsoleStartError: The console cannot serve as configured.
    """
    check_transport(runtime.config)
    server = _server(runtime)
    sock = _bind(runtime.config)
    log.info("Admin console on %s", console_url(runtime.config))
    server.run(sockets=[sock])
    return 0


class BackgroundConsole:
    """The console served from a daemon thread (for `stroke-triage up` and the tests)."""

    def __init__(self, runtime: ConsoleRuntime) -> None:
        """Start serving and wait until it does; :meth:`stop` ends it.

        Raises:
            ConsoleStartError: The console cannot serve as configured.
        """
        check_transport(runtime.config)
        self.url = console_url(runtime.config)
        self._server = _server(runtime)
        self._socket = _bind(runtime.config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise ConsoleStartError(f"The admin console did not start on {self.url}.")
            time.sleep(0.02)
        if not self._server.started:
            raise ConsoleStartError(
                f"The admin console could not start on {self.url}: {self._failure!r}."
            )
        log.info("Admin console on %s", self.url)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:
            self._failure = exc

    def stop(self) -> None:
        """Ask the server to finish and wait a little for it."""
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()


def start_console(runtime: ConsoleRuntime) -> BackgroundConsole | None:
    """Serve the console in the background if ``api.enabled``; None when it is off.

    Raises:
        ConsoleStartError: The console is enabled but cannot serve as configured.
    """
    if not runtime.config.enabled:
        return None
    return BackgroundConsole(runtime)
