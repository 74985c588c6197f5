"""`stroke-triage demo`: the whole path once, on embedded defaults, then shut down.

It starts `stroke-triage up` (listener and worker in one process) in a temporary data
folder, sends a head CT series (a synthetic phantom by default), waits for the SR to reach
a stand-in PACS, prints the verdict and the SR's path, and stops everything.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_edge.peers import FolderPacs, echo, send_files
from model.checkpoint import DEFAULT_CHECKPOINT_DIR, create_random_checkpoint
from model.phantom import Lesion, write_phantom_series
from model.spec import INTRACRANIAL_HAEMORRHAGE, CodedFinding, ModelSpec
from worker.report import read_finding

log = logging.getLogger(__name__)

LISTENER_AE = "STROKETRIAGE"
STARTUP_TIMEOUT_S = 90.0
RESULT_TIMEOUT_S = 120.0
CONSOLE_TIMEOUT_S = 30.0
QUIET_PERIOD_S = 2.0
_ARTICLED = {Lesion.INFARCT: "an infarct", Lesion.HAEMORRHAGE: "a haemorrhage"}


class DemoError(Exception):
    """The demo could not finish; the message says where it stopped."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo prints."""

    suspected: bool
    probability: float
    report_path: Path
    model_trained: bool
    model_version: str
    seconds: float
    console_lines: tuple[str, ...] = ()
    finding: CodedFinding = INTRACRANIAL_HAEMORRHAGE
    """What the model detects (its spec's finding)."""
    phantom: bool = True
    """Whether the series was the synthetic phantom (no patient, so no diagnosis)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _checkpoint(workdir: Path) -> tuple[Path, ModelSpec]:
    """The shipped checkpoint, or a tiny random one when none is shipped."""
    directory = DEFAULT_CHECKPOINT_DIR
    if not (directory / "spec.json").is_file():
        directory = create_random_checkpoint(workdir / "random-checkpoint")
    return directory, ModelSpec.from_json((directory / "spec.json").read_text())


def run_demo(*, series_dir: Path | None, workdir: Path | None = None) -> DemoResult:
    """Run the demo and return what it found."""
    started = time.monotonic()
    root = workdir or Path(tempfile.mkdtemp(prefix="stroke-triage-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    checkpoint, spec = _checkpoint(root)
    print(describe_model(spec))
    phantom = series_dir is None
    if series_dir is None:
        series_dir = root / "phantom"
        lesion = phantom_lesion(spec.finding)
        files = write_phantom_series(series_dir, lesion=lesion, seed=1)
        print(f"Wrote a synthetic head CT phantom with {_ARTICLED[lesion]}: {len(files)} slices")
    else:
        files = sorted(p for p in series_dir.rglob("*") if p.is_file() and _is_dicom(p))
        if not files:
            raise DemoError(f"No DICOM files found in {series_dir}.")
        print(f"Sending {len(files)} DICOM files from {series_dir}")

    pacs = FolderPacs(root / "pacs")
    port = _free_port()
    api_port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(root / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(port),
            "STROKE_TRIAGE_LISTENER__AE_TITLE": LISTENER_AE,
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": str(QUIET_PERIOD_S),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
            "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                [{"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}]
            ),
            "STROKE_TRIAGE_LOG_LEVEL": "WARNING",
            "STROKE_TRIAGE_API__HOST": "127.0.0.1",
            "STROKE_TRIAGE_API__PORT": str(api_port),
        }
    )
    for key in ("STROKE_TRIAGE_DATABASE_URL", "STROKE_TRIAGE_BROKER_URL", "STROKE_TRIAGE_CONFIG"):
        env.pop(key, None)
    log_path = root / "service.log"
    with log_path.open("wb") as service_log:
        service = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", "up"],
            env=env,
            stdout=service_log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_listener(service, port, log_path)
            console_lines = _open_console(env, api_port)
            stored = send_files(files, host="127.0.0.1", port=port, called_ae_title=LISTENER_AE)
            print(f"Listener stored {stored} of {len(files)} instances; waiting for the report")
            report_path = _wait_for_report(service, pacs, log_path)
        finally:
            service.terminate()
            try:
                service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
            pacs.stop()
    import pydicom

    suspected, probability = read_finding(pydicom.dcmread(report_path))
    return DemoResult(
        suspected,
        probability,
        report_path,
        spec.trained,
        spec.version,
        time.monotonic() - started,
        console_lines,
        finding=spec.finding,
        phantom=phantom,
    )


def describe_model(spec: ModelSpec) -> str:
    """What the model can see, from its spec: ``Model ... detects Intracranial hemorrhage``."""
    finding = spec.finding
    return (
        f"Model {spec.name} {spec.version} detects {finding.meaning} "
        f"({finding.scheme} {finding.value}, shown as {finding.short_name.upper()}); "
        "it says nothing about anything else."
    )


def phantom_lesion(finding: CodedFinding) -> Lesion:
    """The phantom's lesion: a haemorrhage for a haemorrhage model, else an infarct."""
    return Lesion.HAEMORRHAGE if finding.value == INTRACRANIAL_HAEMORRHAGE.value else Lesion.INFARCT


def _open_console(env: dict[str, str], api_port: int) -> tuple[str, ...]:
    """Wait for the admin console of the demo's service, print its URL and a read token.

    Returns:
        The lines that say, once the demo has stopped, how to browse its results again.
    """
    url = f"http://127.0.0.1:{api_port}/"
    deadline = time.monotonic() + CONSOLE_TIMEOUT_S
    while not _console_up(url):
        if time.monotonic() > deadline:
            print(f"The admin console did not start on {url}; the demo goes on without it.")
            return ()
        time.sleep(0.2)
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "stroke_triage",
            "token",
            "create",
            "--name",
            "demo",
            "--scope",
            "read",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if created.returncode != 0 or not created.stdout.strip():
        print(f"Dashboard: {url} (no read token: {created.stderr.strip()[-300:]})")
        return ()
    token = created.stdout.splitlines()[0].strip()
    print(f"Dashboard (up while the demo runs): {url}")
    print(f"Read token (log in with it): {token}")
    again = (
        f"STROKE_TRIAGE_DATA_DIR={env['STROKE_TRIAGE_DATA_DIR']} "
        f"STROKE_TRIAGE_API__PORT={api_port} stroke-triage api"
    )
    return (
        "The dashboard stopped with the demo. To browse its results again (same read token):",
        f"  {again}",
    )


def _console_up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}health", timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _log_tail(log_path: Path) -> str:
    """The end of the service log, for an error message."""
    try:
        return log_path.read_text(errors="replace")[-3000:]
    except OSError as exc:
        return f"(the service log {log_path} cannot be read: {exc})"


def _wait_for_listener(
    service: subprocess.Popen[bytes],
    port: int,
    log_path: Path,
    *,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise DemoError(
                f"The service exited with code {service.returncode} before it was ready:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        if _port_open(port) and echo(
            host="127.0.0.1", port=port, called_ae_title=LISTENER_AE, timeout_s=2
        ):
            return
        time.sleep(0.3)
    raise DemoError(
        f"The listener did not answer C-ECHO within {timeout_s:.0f} s. Service log:\n"
        + _log_tail(log_path)
    )


def _wait_for_report(service: subprocess.Popen[bytes], pacs: FolderPacs, log_path: Path) -> Path:
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while time.monotonic() < deadline:
        received = pacs.received()
        if received:
            return received[0]
        if service.poll() is not None:
            raise DemoError(
                f"The service exited with code {service.returncode}:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.2)
    raise DemoError(
        f"No report reached the PACS within {RESULT_TIMEOUT_S:.0f} s. Service log:\n"
        + log_path.read_text(errors="replace")[-3000:]
    )


def print_result(result: DemoResult) -> None:
    """Print the verdict for a person."""
    verdict = "SUSPECTED" if result.suspected else "NOT SUSPECTED"
    name = result.finding.short_name.upper()
    print(f"Verdict: {name} {verdict} (probability {result.probability:.2f})")
    if result.phantom:
        print(
            "The series was a synthetic phantom, not a patient: the verdict shows that the path "
            "works, not what the model would say of a real head CT, and it is no diagnosis."
        )
    print(f"Structured Report: {result.report_path}")
    print(f"Finished in {result.seconds:.1f} s")
    for line in result.console_lines:
        print(line)
    print(
        f"Model: {result.model_version}. Research software, not for clinical use; its measured "
        "accuracy and its limits are in docs/model-card.md."
    )
    if not result.model_trained:
        print(
            "WARNING: no trained checkpoint is shipped, so the demo used a RANDOMLY "
            "INITIALISED ViT. This verdict means nothing; it only shows the path works."
        )
