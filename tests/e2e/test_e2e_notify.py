"""Done-when of issue 15: one suspected series from storescu gives, in one run, the SR in Orthanc
by C-STORE and by STOW-RS, a signed webhook, an e-mail and an acknowledged HL7 ORU, each once."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from model.phantom import Lesion, write_phantom_series
from tests.e2e.helpers import Service, storescu
from tests.helpers import run_cli
from tests.notify_peers import (
    MllpListener,
    OrthancDicomWeb,
    SmtpServer,
    WebhookReceiver,
    make_certificate,
)

pytestmark = pytest.mark.slow

ACCESSION = "E2E0001"


@pytest.fixture
def suspected_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A test copy of the tiny checkpoint whose threshold (0.0) makes every series suspected."""
    folder = tmp_path / "suspected-ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    spec = json.loads((folder / "spec.json").read_text())
    spec["threshold"] = 0.0
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancDicomWeb]:
    server = OrthancDicomWeb(tmp_path / "orthanc")
    yield server
    server.discard()


def _wait(predicate: Callable[[], bool], service: Service, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} never happened:\n{service.logs()}")


def test_suspected_series_reaches_pacs_dicomweb_webhook_email_and_hl7_once(
    service: Service, orthanc: OrthancDicomWeb, suspected_checkpoint: Path, tmp_path: Path
) -> None:
    certificate = make_certificate(tmp_path / "tls")
    webhook = WebhookReceiver(certificate, secret=b"e2e-secret")
    smtp = SmtpServer(certificate, user="triage", password="pw")
    mllp = MllpListener("AA")
    try:
        common = {"on": ["suspected"], "calling_ae_titles": ["SCANNER"]}
        service.env.update(
            {
                "STROKE_TRIAGE_WORKER__CHECKPOINT": str(suspected_checkpoint),
                "STROKE_TRIAGE_WORKER__EXPORT_SWEEP_INTERVAL_S": "0.5",
                "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                    [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}]
                ),
                "STROKE_TRIAGE_WORKER__DICOMWEB": json.dumps(
                    [
                        {
                            "url": orthanc.dicomweb_url,
                            "username": "stroke",
                            "password": "triage",
                            "allow_plain_http": True,
                        }
                    ]
                ),
                "STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps(
                    [
                        webhook.destination(**common),
                        smtp.destination(name="mail", **common),
                        {
                            "kind": "hl7",
                            "name": "ris",
                            "host": "127.0.0.1",
                            "port": mllp.port,
                            **common,
                        },
                    ]
                ),
            }
        )
        files = write_phantom_series(tmp_path / "scan", n_slices=8, size=64, lesion=Lesion.INFARCT)
        for path in files:
            dataset = pydicom.dcmread(path)
            dataset.AccessionNumber = ACCESSION
            dataset.save_as(path)
        study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
        service.start("up")
        service.wait_listening(int(service.env["STROKE_TRIAGE_LISTENER__PORT"]))
        storescu(files, int(service.env["STROKE_TRIAGE_LISTENER__PORT"]))

        def sr_instances() -> list[str]:
            studies = orthanc.get("/studies?expand")
            return [
                instance
                for study in studies
                for series in study["Series"]
                if orthanc.get(f"/series/{series}")["MainDicomTags"]["Modality"] == "SR"
                for instance in orthanc.get(f"/series/{series}")["Instances"]
            ]

        _wait(
            lambda: bool(webhook.accepted and smtp.messages and mllp.messages),
            service,
            "every notification",
            timeout_s=120,
        )
        _wait(lambda: len(sr_instances()) >= 1, service, "the SR in Orthanc", timeout_s=30)
        time.sleep(2.0)  # a few sweeps more: nothing may be sent a second time
        (study,) = orthanc.get("/studies?expand")
        assert study["MainDicomTags"]["StudyInstanceUID"] == study_uid
        # C-STORE and STOW-RS deliver the same SR (one SOP Instance UID): Orthanc keeps one.
        assert len(sr_instances()) == 1
        env = {k: v for k, v in service.env.items() if k.startswith("STROKE_TRIAGE_")}
        exports = run_cli(["exports"], env)
        assert exports.returncode == 0, exports.stderr
        sent = [line for line in exports.stdout.splitlines() if " sent " in f" {line} "]
        assert len(sent) == 2, exports.stdout  # by C-STORE and by STOW-RS
        assert any(orthanc.dicomweb_url in line for line in sent), exports.stdout
        listed = run_cli(["notifications", "--status", "sent"], env)
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.strip().splitlines()) == 2 + 3, listed.stdout
        (document,) = webhook.accepted
        assert document["verdict"] == "SUSPECTED" and document["accession_number"] == ACCESSION
        assert webhook.rejected == 0 and len(webhook.requests) == 1
        (message,) = smtp.messages
        assert message["Subject"] == f"AI STROKE TRIAGE: SUSPECTED - {ACCESSION}"
        (oru,) = mllp.messages
        assert len(oru.msh.msh_10.to_er7()) == 20
        assert oru.msh.msh_10.to_er7() in listed.stdout
        order = oru.oru_r01_patient_result.oru_r01_order_observation
        assert order.obr.obr_3.to_er7() == ACCESSION
        assert order.oru_r01_observation[0].obx.obx_5.to_er7() == "SUSPECTED"
    finally:
        webhook.stop()
        smtp.stop()
        mllp.stop()
