"""Helpers for end-to-end tests: a stand-in PACS, service processes, a scanner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.helpers import require_tool

LISTENER_AE = "STROKETRIAGE"


class PacsStub:
    """A pynetdicom storage SCP written for the tests: it plays the PACS."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ae_title = "TESTPACS"
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        assert server is not None  # block=False returns the running server
        self.server = server
        self.port = int(server.server_address[1])

    def _on_store(self, event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        target = self.folder / f"{request.AffectedSOPInstanceUID}.dcm"
        partial = target.with_suffix(".part")  # wait_for() must never see half a file
        partial.write_bytes(event.encoded_dataset())
        partial.replace(target)
        return 0x0000

    def wait_for(self, count: int = 1, timeout_s: float = 120.0) -> list[Path]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            files = sorted(self.folder.glob("*.dcm"))
            if len(files) >= count:
                return files
            time.sleep(0.2)
        raise AssertionError(
            f"the PACS received {len(list(self.folder.glob('*.dcm')))} "
            f"objects in {timeout_s} s, expected {count}"
        )


@dataclass
class Service:
    """Service processes started for one test, stopped and logged at the end."""

    workdir: Path
    env: dict[str, str]
    processes: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, command: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{command}-{len(self.processes)}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", command],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        self.processes.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for _, log in self.processes
        )

    def wait_listening(self, port: int, timeout_s: float = 60.0) -> None:
        echoscu = shutil.which("echoscu")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process, _ in self.processes:
                if process.poll() is not None:
                    raise AssertionError(f"a service process exited early:\n{self.logs()}")
            if echoscu:
                done = subprocess.run(
                    [echoscu, "-aec", LISTENER_AE, "127.0.0.1", str(port)],
                    capture_output=True,
                    check=False,
                    env={**os.environ, "TCP_NODELAY": "1"},
                )
                if done.returncode == 0:
                    return
            time.sleep(0.3)
        raise AssertionError(f"the listener never answered C-ECHO:\n{self.logs()}")

    def stop(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        for process, _ in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def storescu(files: list[Path], port: int, *, calling_ae: str = "SCANNER") -> None:
    """Send files with DCMTK's storescu, the way a scanner would."""
    binary = require_tool("storescu", "dcmtk")
    done = subprocess.run(
        [binary, "-aet", calling_ae, "-aec", LISTENER_AE, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
