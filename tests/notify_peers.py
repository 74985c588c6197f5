"""Real notification peers on 127.0.0.1 for the tests: HTTPS webhook (and a redirecting one),
SMTP (STARTTLS or implicit TLS), MLLP (plain or TLS), Orthanc."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from hl7apy.core import Message as Hl7Message
from hl7apy.parser import parse_message

from tests.helpers import free_port, require_tool


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1, made by the openssl CLI."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(folder: Path) -> Certificate:
    openssl = require_tool("openssl", "openssl")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


def _serve(
    handler: type[BaseHTTPRequestHandler], certificate: Certificate | None = None
) -> ThreadingHTTPServer:
    """An HTTP server (HTTPS with ``certificate``) on a free port of 127.0.0.1, serving."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if certificate is not None:
        server.socket = certificate.server_context().wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@dataclass
class WebhookReceiver:
    """An HTTPS server that checks the HMAC signature with its own secret, like a real receiver.

    ``answers`` is the HTTP status of each authentic request in turn (then 200). A request with
    a bad signature or a stale timestamp gets 401. ``accepted`` holds the documents answered 2xx.
    """

    certificate: Certificate
    secret: bytes
    answers: list[int] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers.get("X-Stroke-Triage-Timestamp", "")
                signature = self.headers.get("X-Stroke-Triage-Signature", "")
                expected = (
                    "sha256="
                    + hmac.new(
                        receiver.secret, timestamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
                if not (fresh and hmac.compare_digest(expected, signature)):
                    receiver.rejected += 1
                    self._answer(401)
                    return
                document = json.loads(body)
                document["_idempotency_header"] = self.headers.get("Idempotency-Key")
                receiver.requests.append(document)
                status = receiver.answers.pop(0) if receiver.answers else 200
                if 200 <= status < 300:
                    receiver.accepted.append(document)
                self._answer(status)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _serve(Handler, self.certificate)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/hooks/stroke"

    def destination(self, **settings: Any) -> dict[str, Any]:
        """The ``worker.notifications`` entry that reaches this receiver; ``settings`` go on top."""
        return {
            "kind": "webhook",
            "name": "pager",
            "url": self.url,
            "secret": self.secret.decode(),
            "ca_file": str(self.certificate.cert),
            **settings,
        }

    def stop(self) -> None:
        _stop(self.server)


@dataclass
class RecordingHttpServer:
    """A plain-HTTP server on ``localhost`` that answers 200 to anything and records it.

    Stands for the host a redirect points at: whatever reaches it (and its headers) was sent
    to another host than the one configured.
    """

    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record  # noqa: N815 (http.server's names)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _serve(Handler)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.server.server_address[1]}/landing"

    def stop(self) -> None:
        _stop(self.server)


@dataclass
class RedirectingServer:
    """An HTTPS server that answers every POST with ``status`` and ``Location: location``.

    What a webhook or STOW-RS URL behind an SSO login page, or a moved endpoint, answers.
    """

    certificate: Certificate
    location: str
    status: int = 302
    requests: int = 0

    def __post_init__(self) -> None:
        redirecting = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                redirecting.requests += 1
                self.send_response(redirecting.status)
                self.send_header("Location", redirecting.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _serve(Handler, self.certificate)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        _stop(self.server)


class _Mailbox:
    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.messages: list[Message] = []
        self.delivered_to: list[list[str]] = []
        self.refuse = refuse

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's name)
        self, server: object, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 (aiosmtpd's name)
        self, server: object, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content))
        self.delivered_to.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS required before AUTH LOGIN/PLAIN with one user.

    With ``implicit_tls`` it speaks TLS from the first byte instead (SMTPS, as on port 465).
    Recipients in ``refuse`` get ``550`` at RCPT TO, as an unknown user does.
    """

    def __init__(
        self,
        certificate: Certificate,
        *,
        user: str,
        password: str,
        implicit_tls: bool = False,
        refuse: frozenset[str] = frozenset(),
    ) -> None:
        self.mailbox = _Mailbox(refuse)
        self.logins: list[str] = []
        self.certificate, self.user, self.password = certificate, user, password
        self.implicit_tls = implicit_tls

        def authenticate(
            server: object, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                user.encode(),
                password.encode(),
            )
            if ok:
                self.logins.append(user)
            return AuthResult(success=ok)

        self.port = free_port()
        tls: dict[str, Any] = (
            # aiosmtpd counts only STARTTLS as TLS for AUTH; the whole session is TLS here.
            {"ssl_context": certificate.server_context(), "auth_require_tls": False}
            if implicit_tls
            else {
                "tls_context": certificate.server_context(),
                "require_starttls": True,
                "auth_require_tls": True,
            }
        )
        self.controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_required=True,
            **tls,
        )
        self.controller.start()

    @property
    def messages(self) -> list[Message]:
        return self.mailbox.messages

    def destination(self, **settings: Any) -> dict[str, Any]:
        """The ``worker.notifications`` entry that reaches this server, logged in, over TLS;
        ``settings`` go over it."""
        return {
            "kind": "email",
            "name": "stroke-team",
            "host": "127.0.0.1",
            "port": self.port,
            **({"implicit_tls": True} if self.implicit_tls else {}),
            "username": self.user,
            "password": self.password,
            "sender": "triage@hospital.test",
            "recipients": ["stroke@hospital.test"],
            "ca_file": str(self.certificate.cert),
            **settings,
        }

    def stop(self) -> None:
        self.controller.stop()


class MllpListener:
    """An MLLP listener that parses each ORU with hl7apy and answers with an hl7apy ACK.

    ``code`` is the acknowledgment code it answers (AA, or AE for the failure case); with a
    ``certificate`` it speaks MLLP over TLS only.
    """

    def __init__(self, code: str = "AA", *, certificate: Certificate | None = None) -> None:
        self.code = code
        self.messages: list[Hl7Message] = []
        self.context = certificate.server_context() if certificate else None
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.context is not None:
                try:
                    connection.settimeout(5)
                    connection = self.context.wrap_socket(connection, server_side=True)
                except OSError:
                    connection.close()
                    continue
            with connection:
                connection.settimeout(5)
                data = b""
                while b"\x1c\x0d" not in data:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                text = data.strip(b"\x0b").split(b"\x1c")[0].decode()
                message = parse_message(text, find_groups=True)
                self.messages.append(message)
                ack = Hl7Message("ACK", version="2.5.1")
                ack.msh.msh_3 = "RIS"
                ack.msh.msh_7 = time.strftime("%Y%m%d%H%M%S")
                ack.msh.msh_9 = "ACK^R01^ACK"
                ack.msh.msh_10 = f"ACK{len(self.messages)}"
                ack.msh.msh_11 = "P"
                ack.msh.msh_12 = "2.5.1"
                ack.msa.msa_1 = self.code
                ack.msa.msa_2 = message.msh.msh_10.value
                if self.code != "AA":
                    ack.msa.msa_3 = "Unknown order"
                connection.sendall(b"\x0b" + ack.to_er7().encode() + b"\x1c\x0d")

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(2)


class OrthancDicomWeb:
    """Debian's Orthanc with its DICOMweb plugin, on free ports, for STOW-RS tests."""

    PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

    def __init__(self, folder: Path) -> None:
        binary = require_tool("Orthanc", "orthanc")
        if not self.PLUGIN.is_file():
            require_tool("libOrthancDicomWeb.so", "orthanc-dicomweb")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "notify-test",
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {"stroke": "triage"},
            "Plugins": [str(self.PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (folder / "config.json").write_text(json.dumps(config))
        self.log_file = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [binary, str(folder / "config.json")], stdout=self.log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("Orthanc did not start:\n" + self.log())

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}")
        request.add_header("Authorization", "Basic c3Ryb2tlOnRyaWFnZQ==")  # stroke:triage
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log_file.close()

    def discard(self) -> None:
        """Kill Orthanc at the end of a test: its storage goes with ``tmp_path``.

        Orthanc's own shutdown (``stop``) takes 3 s, its HTTP and DICOM servers polling.
        """
        self.process.kill()
        self.process.wait(10)
        self.log_file.close()
