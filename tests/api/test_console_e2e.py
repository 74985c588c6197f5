"""The console end to end: storescu -> `stroke-triage up` -> SR and SC at a stand-in PACS.

One run of the service (all logging at DEBUG, metrics ports on, heat-map SC on) checks:
- the listener's and worker's /metrics moved by the right amounts (issue 14, metrics);
- none of the patient's name, ID or birth date appears in any log line (no PHI in logs);
- in real headless Chromium, the series is on the worklist with its verdict and its page
  shows the heat maps (screenshots in tests/artifacts/dashboard/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.api.browser import ARTIFACTS, click_through
from tests.e2e.helpers import PacsStub, Service, storescu
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

PATIENT_NAME = "Quolmbyx^Zerwintha"
PATIENT_ID = "PHI7734121X"
STATION = "CT_E2E"
BIRTH_DATE = "19410203"
#: Every form in which the patient could leak into a log line.
PHI = [
    "Quolmbyx",
    "Zerwintha",
    PATIENT_ID,
    BIRTH_DATE,
    "1941-02-03",
    "03.02.1941",
    "02/03/1941",
]


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[PacsStub]:
    folder = tmp_path / "pacs"
    folder.mkdir()
    stub = PacsStub(folder)
    yield stub
    stub.server.shutdown()


@pytest.fixture
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import create_random_checkpoint

    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _copies_with_patient(ge_head_ct: Path, folder: Path) -> list[Path]:
    """The GE series as a new series of a patient whose name, ID and birth date we know."""
    folder.mkdir()
    series_uid = pydicom.uid.generate_uid()
    study_uid = pydicom.uid.generate_uid()
    copies = []
    for source in sorted(ge_head_ct.glob("*.dcm")):
        ds = pydicom.dcmread(source)
        ds.PatientName = PATIENT_NAME
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = BIRTH_DATE
        ds.StationName = STATION
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        target = folder / source.name
        ds.save_as(target, enforce_file_format=True)
        copies.append(target)
    assert len(copies) == 28
    return copies


def _scrape(port: int) -> dict[str, float]:
    """Samples of a /metrics page: 'name{labels}' -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def _sample(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        found = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
        if base == name and found == wanted:
            return value
    return 0.0


def _get_json(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "stroke_triage", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_metrics_no_phi_and_dashboard_after_a_real_series(
    tmp_path: Path,
    pacs: PacsStub,
    tiny_checkpoint: Path,
    ge_head_ct: Path,
    browser: object,
) -> None:
    from selenium.webdriver.common.by import By

    files = _copies_with_patient(ge_head_ct, tmp_path / "scan")
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    listener_port, api_port = free_port(), free_port()
    listener_metrics, worker_metrics = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LOG_LEVEL": "DEBUG",
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(listener_port),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "1.5",
            "STROKE_TRIAGE_LISTENER__METRICS_PORT": str(listener_metrics),
            "STROKE_TRIAGE_WORKER__METRICS_PORT": str(worker_metrics),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(tiny_checkpoint),
            "STROKE_TRIAGE_WORKER__SECONDARY_CAPTURE": "true",
            "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                [{"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.port}]
            ),
            "STROKE_TRIAGE_API__PORT": str(api_port),
            "STROKE_TRIAGE_API__REFRESH_S": "0",
            "STROKE_TRIAGE_TASK_QUEUE": f"test-console-{uuid.uuid4().hex[:8]}",
        }
    )
    service = Service(workdir=tmp_path, env=env)
    try:
        service.start("up")
        service.wait_listening(listener_port)
        storescu(files, listener_port)
        try:
            objects = pacs.wait_for(2)  # the SR and the heat-map SC
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{service.logs()}") from exc
        assert len(objects) == 2
        # The patient really went through: the report carries the name the logs must not.
        assert any(
            str(pydicom.dcmread(o, stop_before_pixels=True).PatientName) == PATIENT_NAME
            for o in objects
        )

        # Metrics: the export and the job are counted just after the PACS has the objects.
        def worker_done() -> bool:
            return (
                _sample(_scrape(worker_metrics), "stroke_triage_worker_jobs_total", outcome="done")
                == 1
            )

        wait_until(worker_done, timeout_s=20)
        listened = _scrape(listener_metrics)
        assert (
            _sample(listened, "stroke_triage_listener_instances_received_total", status="success")
            == 28
        )
        assert _sample(listened, "stroke_triage_listener_store_seconds_count") == 28
        assert _sample(listened, "stroke_triage_listener_series_completed_total") == 1
        assert _sample(listened, "stroke_triage_listener_associations_accepted_total") >= 1
        assert _sample(listened, "stroke_triage_listener_associations_open") == 0
        worked = _scrape(worker_metrics)
        assert _sample(worked, "stroke_triage_worker_inference_seconds_count") == 1
        assert _sample(worked, "stroke_triage_worker_last_instance_to_sr_seconds_count") == 1
        assert _sample(worked, "stroke_triage_worker_exports_total", status="sent") == 2
        assert _sample(worked, "stroke_triage_worker_exports_total", status="failed") == 0
        assert _sample(worked, "stroke_triage_queue_depth") == 0
        info = [k for k in worked if k.startswith("stroke_triage_worker_model_info{")]
        assert len(info) == 1 and 'sha256="' in info[0]
        console = _scrape(api_port)
        assert _sample(console, "stroke_triage_series", status="done") == 1

        # The dashboard, with a read token.
        token = _cli(env, "token", "create", "--name", "e2e", "--scope", "read").splitlines()[0]
        base = f"http://127.0.0.1:{api_port}"
        browser.get(f"{base}/login")  # type: ignore[attr-defined]
        browser.find_element(By.ID, "token").send_keys(token)  # type: ignore[attr-defined]
        click_through(browser, browser.find_element(By.ID, "login-button"))  # type: ignore[attr-defined]
        rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr")  # type: ignore[attr-defined]
        assert len(rows) == 1, browser.page_source  # type: ignore[attr-defined]
        assert re.search(r"SUSPECTED|not suspected", rows[0].text, re.IGNORECASE), rows[0].text
        assert PATIENT_ID not in browser.page_source  # type: ignore[attr-defined]
        # "From" is the scanner's Station Name, not the calling AE title.
        sender = rows[0].find_element(By.CSS_SELECTOR, "td.sender").text
        assert sender == STATION, sender
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "e2e-1-worklist.png"))  # type: ignore[attr-defined]
        browser.get(f"{base}/series/{series_uid}")  # type: ignore[attr-defined]
        images = browser.find_elements(By.CSS_SELECTOR, ".heatmaps img")  # type: ignore[attr-defined]
        assert images, browser.page_source  # type: ignore[attr-defined]
        loaded = browser.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.querySelectorAll('.heatmaps img'))"
            ".every(i => i.complete && i.naturalWidth > 0);"
        )
        assert loaded, "a heat-map image did not load"
        browser.save_screenshot(str(ARTIFACTS / "e2e-2-series.png"))  # type: ignore[attr-defined]
        browser.execute_script("arguments[0].scrollIntoView();", images[0])  # type: ignore[attr-defined]
        browser.save_screenshot(str(ARTIFACTS / "e2e-3-heatmaps.png"))  # type: ignore[attr-defined]
        # The API too, so that its request handling logs at DEBUG.
        request = urllib.request.Request(
            f"{base}/api/series/{series_uid}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["series_instance_uid"] == series_uid
        # The health page's facts, from the listener's and the worker's heartbeats.
        status = _get_json(f"{base}/api/status", token)
        assert [p["up"] for p in status["listeners"]] == [True], status
        assert status["workers_up"] == 1 and status["workers_with_model"] == 1, status
        assert status["workers"][0]["details"]["model_version"], status
        assert status["queue_depth"] == 0 and status["last_instance_at"], status
        assert status["disk"]["measured_by"] == "listener", status
        # An admin finds the series by the patient's ID (never written to a log, below).
        admin = _cli(env, "token", "create", "--name", "e2e-admin", "--scope", "admin")
        found = _get_json(f"{base}/api/series?q={PATIENT_ID}", admin.splitlines()[0])
        assert [s["series_instance_uid"] for s in found] == [series_uid]
        assert _get_json(f"{base}/api/series?q={PATIENT_ID}", token) == []
    finally:
        service.stop()

    # No PHI in any log line of the listener, the worker and the console (all in `up`).
    logs = "\n".join(log.read_text(errors="replace") for _, log in service.processes)
    assert "DEBUG" in logs
    assert series_uid in logs  # the logs are there, and they name the series by its UID
    leaks = [line for line in logs.splitlines() if any(p in line for p in PHI)]
    assert not leaks, "\n".join(leaks[:20])
