"""How the console is served: HTTPS from its own TLS files, no plain HTTP on a public address
unless a proxy terminates TLS (issue 23), and a taken port stops `up` (issue 24)."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path

import pytest

from console.config import ApiConfig
from console.errors import ConsoleStartError
from console.server import BackgroundConsole
from stroke_triage.settings import Settings
from tests.helpers import free_port, migrated_sqlite, run_cli
from tests.notify_peers import make_certificate


def _settings(tmp_path: Path, **api: object) -> Settings:
    url = migrated_sqlite(tmp_path / "console.db")
    return Settings(data_dir=tmp_path / "data", database_url=url, api=ApiConfig(**api))


def test_console_serves_https_with_its_own_certificate(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path / "tls")
    port = free_port()
    settings = _settings(
        tmp_path, port=port, tls_cert_file=certificate.cert, tls_key_file=certificate.key
    )
    console = BackgroundConsole(settings.console_runtime())
    try:
        assert console.url == f"https://127.0.0.1:{port}/"
        context = ssl.create_default_context(cafile=str(certificate.cert))
        with urllib.request.urlopen(f"{console.url}health", context=context, timeout=5) as answer:
            assert answer.status == 200
            assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        with pytest.raises(OSError):  # no plain HTTP on the TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        console.stop()


def test_tls_settings_go_in_pairs() -> None:
    with pytest.raises(ValueError, match=r"tls_cert_file and api\.tls_key_file go together"):
        ApiConfig(tls_cert_file=Path("cert.pem"))


def test_plain_http_on_a_public_address_is_refused_with_the_settings_named(
    tmp_path: Path,
) -> None:
    url = migrated_sqlite(tmp_path / "console.db")
    env = {
        "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
        "STROKE_TRIAGE_DATABASE_URL": url,
        "STROKE_TRIAGE_API__HOST": "0.0.0.0",
        "STROKE_TRIAGE_API__PORT": str(free_port()),
    }
    done = run_cli(["api"], env, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("stroke-triage: The admin console would serve plain HTTP on 0.0.0.0")
    for name in (
        "STROKE_TRIAGE_API__TLS_CERT_FILE",
        "STROKE_TRIAGE_API__TLS_KEY_FILE",
        "STROKE_TRIAGE_API__TLS_BY_PROXY",
        "api.host",
    ):
        assert name in line


def test_a_proxy_terminating_tls_allows_a_public_bind(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, host="0.0.0.0", port=port, tls_by_proxy=True)
    console = BackgroundConsole(settings.console_runtime())
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
    finally:
        console.stop()


def test_a_taken_port_is_an_error_at_once(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConsoleStartError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            BackgroundConsole(_settings(tmp_path, port=port).console_runtime())


def test_up_stops_with_exit_2_when_the_console_port_is_taken(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__PORT": str(free_port()),
            "STROKE_TRIAGE_API__PORT": str(port),
        }
        done = run_cli(["up"], env, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("stroke-triage:")]
    assert said == [
        f"stroke-triage: The admin console cannot listen on 127.0.0.1:{port}: Address already "
        "in use. Choose a free port with api.port (STROKE_TRIAGE_API__PORT), or turn the "
        "console off with api.enabled = false."
    ], done.stderr
    assert "Traceback" not in done.stderr
