"""Done-when of issue 26, end to end: DCMTK's storescu sends a head CT study of four series (brain
kernel, bone kernel, thin slices, a coronal reformat) to the listener; Orthanc, as the PACS, gets
exactly one SR and one SC, on the brain-kernel series, and the stroke team one alert with the
preview (attached to the e-mail that opts in, linked behind a token in the webhook). A second
study's later, better series revises its report and its alert.

The study is built from the real GE head CT by rewriting its UIDs, kernel, description,
thickness and orientation with pydicom.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.e2e.helpers import Service, storescu
from tests.helpers import dciodvfy_errors, free_port, run_cli
from tests.notify_peers import OrthancDicomWeb, SmtpServer, WebhookReceiver, make_certificate

pytestmark = pytest.mark.slow

ORTHANC_AUTH = "Basic c3Ryb2tlOnRyaWFnZQ=="  # stroke:triage, as OrthancDicomWeb registers


def write_variant(
    source: Path,
    folder: Path,
    study_uid: str,
    *,
    number: int,
    description: str,
    kernel: str,
    thickness: float,
    accession: str,
    coronal: bool = False,
) -> tuple[str, list[Path]]:
    """The GE head CT as another series of ``study_uid``: new UIDs, kernel, thickness, ..."""
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    paths = []
    for index, path in enumerate(sorted(source.glob("*.dcm"))):
        dataset = pydicom.dcmread(path)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.SeriesNumber = number
        dataset.SeriesDescription = description
        dataset.ConvolutionKernel = kernel
        dataset.SliceThickness = thickness
        dataset.AccessionNumber = accession
        if coronal:
            dataset.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
            dataset.ImagePositionPatient = ["-125", f"{-70 + 5 * index}", "160"]
        out = folder / f"{index:03d}.dcm"
        dataset.save_as(out)
        paths.append(out)
    return series_uid, paths


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancDicomWeb]:
    server = OrthancDicomWeb(tmp_path / "orthanc")
    yield server
    server.discard()


def _objects(orthanc: OrthancDicomWeb, study_uid: str, modality: str) -> list[str]:
    """Orthanc's instance ids of one modality in the study with this Study Instance UID."""
    found = []
    for study in orthanc.get("/studies?expand"):
        if study["MainDicomTags"]["StudyInstanceUID"] != study_uid:
            continue
        for series in orthanc.get(f"/studies/{study['ID']}/series"):
            if series["MainDicomTags"].get("Modality") == modality:
                found += series["Instances"]
    return found


def _file(orthanc: OrthancDicomWeb, instance: str) -> pydicom.Dataset:
    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}/file",
        headers={"Authorization": ORTHANC_AUTH},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return pydicom.dcmread(io.BytesIO(response.read()))


def _wait(predicate: Callable[[], bool], service: Service, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened:\n{service.logs()}")


def _get(url: str, token: str | None = None) -> tuple[int, bytes, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def _attachments(message: Message) -> list[Message]:
    return [part for part in message.walk() if part.get_content_disposition() == "attachment"]


def test_one_study_one_report_one_alert_with_a_preview_and_a_better_series_revises(
    service: Service, orthanc: OrthancDicomWeb, ge_head_ct: Path, tmp_path: Path
) -> None:
    certificate = make_certificate(tmp_path / "tls")
    webhook = WebhookReceiver(certificate, secret=b"e2e-secret")
    smtp = SmtpServer(certificate, user="triage", password="pw")
    api_port = free_port()
    console = f"http://127.0.0.1:{api_port}"
    try:
        verdicts = {"on": ["suspected", "not_suspected"]}
        service.env.update(
            {
                "STROKE_TRIAGE_API__PORT": str(api_port),
                "STROKE_TRIAGE_WORKER__CONSOLE_URL": console,
                "STROKE_TRIAGE_WORKER__SECONDARY_CAPTURE": "true",
                "STROKE_TRIAGE_WORKER__EXPORT_SWEEP_INTERVAL_S": "0.5",
                "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                    [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}]
                ),
                "STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps(
                    [
                        webhook.destination(**verdicts),
                        smtp.destination(name="mail", attach_preview=True, **verdicts),
                    ]
                ),
            }
        )
        studies: dict[str, dict[str, tuple[str, list[Path]]]] = {}
        for name, accession in (("A", "E2E26A"), ("B", "E2E26B")):
            uid = generate_uid()
            base = tmp_path / f"study-{name}"
            studies[uid] = {
                "brain": write_variant(
                    ge_head_ct, base / "brain", uid, number=2, description="HEAD 5mm STD",
                    kernel="STANDARD", thickness=5.0, accession=accession,
                ),
                "bone": write_variant(
                    ge_head_ct, base / "bone", uid, number=3, description="HEAD 5mm BONE",
                    kernel="BONEPLUS", thickness=5.0, accession=accession,
                ),
                "thin": write_variant(
                    ge_head_ct, base / "thin", uid, number=4, description="HEAD 1.25mm STD",
                    kernel="STANDARD", thickness=1.25, accession=accession,
                ),
                "coronal": write_variant(
                    ge_head_ct, base / "coronal", uid, number=5, description="COR MPR",
                    kernel="STANDARD", thickness=5.0, accession=accession, coronal=True,
                ),
            }  # fmt: skip
        study_a, study_b = studies
        a, b = studies[study_a], studies[study_b]
        service.start("up")
        port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
        service.wait_listening(port)

        # Study A whole; study B without its 5 mm brain series, which comes later.
        first = [*a["bone"][1], *a["thin"][1], *a["brain"][1], *a["coronal"][1]]
        storescu([*first, *b["coronal"][1], *b["bone"][1], *b["thin"][1]], port)
        _wait(
            lambda: (
                len(_objects(orthanc, study_a, "SR")) >= 1
                and len(_objects(orthanc, study_a, "OT")) >= 1
                and len(_objects(orthanc, study_b, "SR")) >= 1
                and len(webhook.accepted) >= 2
                and len(smtp.messages) >= 2
            ),
            service,
            "the first reports and alerts",
            timeout_s=240,
        )
        storescu(b["brain"][1], port)  # the better series of study B, after its report
        _wait(
            lambda: (
                len(_objects(orthanc, study_b, "SR")) >= 2
                and len(webhook.accepted) >= 3
                and len(smtp.messages) >= 3
            ),
            service,
            "study B's revised report and alert",
            timeout_s=180,
        )
        time.sleep(3.0)  # a few sweeps more: nothing may come a second time

        # Study A: exactly one SR and one SC, on the brain-kernel series.
        (sr_a,) = _objects(orthanc, study_a, "SR")
        assert len(_objects(orthanc, study_a, "OT")) == 1
        report_a = _file(orthanc, sr_a)
        assert report_a.SeriesDescription.startswith("AI STROKE TRIAGE: ")
        assert report_a.SeriesDescription.endswith(" - series 2 HEAD 5mm STD")
        evidence = {
            item.SeriesInstanceUID
            for study in report_a.CurrentRequestedProcedureEvidenceSequence
            for item in study.ReferencedSeriesSequence
        }
        assert evidence == {a["brain"][0]}
        assert "PredecessorDocumentsSequence" not in report_a

        # Study B: the thin series' report, then the brain series' naming it as its predecessor.
        reports_b = sorted(
            (_file(orthanc, instance) for instance in _objects(orthanc, study_b, "SR")),
            key=lambda ds: str(ds.SeriesDescription).endswith("series 2 HEAD 5mm STD"),
        )
        earlier_b, revised_b = reports_b
        assert earlier_b.SeriesDescription.endswith(" - series 4 HEAD 1.25mm STD")
        assert revised_b.SeriesDescription.endswith(" - series 2 HEAD 5mm STD")
        (predecessor,) = [
            item.ReferencedSOPInstanceUID
            for study in revised_b.PredecessorDocumentsSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        ]
        assert predecessor == earlier_b.SOPInstanceUID
        revised_path = tmp_path / "revised-sr.dcm"
        revised_b.save_as(revised_path)
        assert dciodvfy_errors(revised_path) == []
        assert len(_objects(orthanc, study_b, "OT")) == 2  # each report has its heat map

        # One alert for study A, and for study B one plus its revision.
        by_study: dict[str, list[dict[str, Any]]] = {}
        for document in webhook.accepted:
            by_study.setdefault(document["study_instance_uid"], []).append(document)
        (alert_a,) = by_study[study_a]
        assert alert_a["series_instance_uid"] == a["brain"][0]
        assert (alert_a["series_number"], alert_a["series_description"]) == (2, "HEAD 5mm STD")
        assert alert_a["revises"] is None
        first_b, revision_b = by_study[study_b]
        assert first_b["series_instance_uid"] == b["thin"][0]
        assert revision_b["series_instance_uid"] == b["brain"][0]
        assert revision_b["revises"]["series_number"] == 4
        assert revision_b["revises"]["result_id"] == first_b["result_id"]
        subjects = sorted(str(message["Subject"]) for message in smtp.messages)
        assert len(subjects) == 3
        assert sum("(REVISED) - E2E26B" in subject for subject in subjects) == 1
        assert sum(subject.endswith(" - E2E26A") for subject in subjects) == 1
        for message in smtp.messages:  # the e-mail destination opted in: each has the preview
            (part,) = _attachments(message)
            assert part.get_content_type() == "image/jpeg"

        # The preview link needs a token; the console shows every series and its reason.
        preview_url = alert_a["preview_url"]
        assert preview_url == f"{console}/previews/{alert_a['result_id']}.jpg"
        assert _get(preview_url)[0] == 401
        env = {k: v for k, v in service.env.items() if k.startswith("STROKE_TRIAGE_")}
        created = run_cli(["token", "create", "--name", "e2e", "--scope", "read"], env)
        assert created.returncode == 0, created.stderr
        token = created.stdout.splitlines()[0].strip()
        code, image, content_type = _get(preview_url, token)
        assert (code, content_type) == (200, "image/jpeg")
        assert Image.open(io.BytesIO(image)).format == "JPEG"
        code, body, _ = _get(f"{console}/api/studies/{study_a}", token)
        assert code == 200, body
        shown = json.loads(body)
        assert shown["chosen"]["series_instance_uid"] == a["brain"][0]
        reasons = {s["series_instance_uid"]: s["choice_reason"] for s in shown["series"]}
        assert "bone kernel BONEPLUS" in reasons[a["bone"][0]]
        assert "thinner slices than the chosen series (1.25 mm" in reasons[a["thin"][0]]
        assert "not an axial series (reformat" in reasons[a["coronal"][0]]
        (report,) = shown["reports"]
        assert report["result_id"] == alert_a["result_id"] and report["preview_url"]
        shown_b = json.loads(_get(f"{console}/api/studies/{study_b}", token)[1])
        assert shown_b["chosen"]["series_instance_uid"] == b["brain"][0]
        assert [r["superseded"] for r in shown_b["reports"]] == [False, True]
        assert (
            "thinner slices"
            in {s["series_instance_uid"]: s["choice_reason"] for s in shown_b["series"]}[
                b["thin"][0]
            ]
        )
    finally:
        webhook.stop()
        smtp.stop()
