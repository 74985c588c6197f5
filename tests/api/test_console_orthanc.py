"""Orthanc as the site's PACS with an auto-route, as issue 24 tried it (real Orthanc, real `up`).

Orthanc routes every object it receives over DICOM to the listener, so our own SR and heat-map
SC come back to us; then the whole study is routed again, the CT included. The console must
show one series, done, with a latency that is not negative; our reports are no series and no
skipped series, and their series pages say whose reports they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Service
from tests.e2e.test_e2e_orthanc import Orthanc
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

#: Orthanc's auto-route: whatever arrives over DICOM goes on to the listener.
AUTO_ROUTE = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' then
    SendToModality(instanceId, 'triage')
  end
end
"""


@pytest.fixture
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import create_random_checkpoint

    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def _api(base: str, path: str, token: str) -> Any:
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _found(base: str, path: str, token: str) -> bool:
    try:
        _api(base, path, token)
    except urllib.error.HTTPError:
        return False
    return True


def test_our_reports_routed_back_by_orthanc_are_not_series(
    tmp_path: Path, tiny_checkpoint: Path, ge_head_ct: Path
) -> None:
    listener_port, api_port = free_port(), free_port()
    orthanc = Orthanc(tmp_path / "orthanc", listener_port)
    config = json.loads((orthanc.folder / "config.json").read_text())
    (orthanc.folder / "route.lua").write_text(AUTO_ROUTE)
    config["LuaScripts"] = [str(orthanc.folder / "route.lua")]
    (orthanc.folder / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(listener_port),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "1.5",
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(tiny_checkpoint),
            "STROKE_TRIAGE_WORKER__SECONDARY_CAPTURE": "true",
            "STROKE_TRIAGE_WORKER__PACS": orthanc.destination,
            "STROKE_TRIAGE_API__PORT": str(api_port),
            "STROKE_TRIAGE_TASK_QUEUE": f"test-echo-{uuid.uuid4().hex[:8]}",
        }
    )
    service = Service(workdir=tmp_path, env=env)
    orthanc.start()
    try:
        service.start("up")
        service.wait_listening(listener_port)
        token = subprocess.run(
            [
                sys.executable,
                "-m",
                "stroke_triage",
                "token",
                "create",
                "--name",
                "t",
                "--scope",
                "read",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()[0]
        base = f"http://127.0.0.1:{api_port}"
        study = {
            orthanc.request("POST", "/instances", path.read_bytes())["ParentStudy"]
            for path in sorted(ge_head_ct.glob("*.dcm"))
        }.pop()
        send = json.dumps({"Resources": [study], "Synchronous": True}).encode()
        orthanc.request("POST", "/modalities/triage/store", send)

        def ours() -> dict[str, str]:
            series = orthanc.get(f"/studies/{study}/series")
            return {
                s["MainDicomTags"]["Modality"]: s["MainDicomTags"]["SeriesInstanceUID"]
                for s in series
                if s["MainDicomTags"].get("Modality") in ("SR", "OT")
            }

        wait_until(lambda: len(ours()) == 2, timeout_s=120)
        reports = ours()
        # Orthanc routed them back: the listener has them as series of their own.
        for uid in reports.values():
            wait_until(lambda uid=uid: _found(base, f"/api/series/{uid}", token), timeout_s=60)
        (ct,) = _api(base, "/api/series", token)
        wait_until(
            lambda: (
                _api(base, f"/api/series/{ct['series_instance_uid']}", token)["latency_s"]
                is not None
            ),
            timeout_s=60,
        )
        first = _api(base, f"/api/series/{ct['series_instance_uid']}", token)

        # A re-route of the whole study, the CT and our reports included.
        time.sleep(1.0)
        orthanc.request("POST", "/modalities/triage/store", send)
        time.sleep(4.0)  # past the quiet period: the listener judged what it got
        (again,) = _api(base, "/api/series", token)
        assert again["series_instance_uid"] == first["series_instance_uid"]
        assert again["last_received_at"] > again["reported_at"], again  # received after it
        assert again["status"] == "done" and again["export_status"] == "sent"
        assert again["latency_s"] == first["latency_s"] and again["latency_s"] >= 0
        stats = _api(base, "/api/stats?days=2", token)
        assert stats["skipped_series"] == 0 and stats["results"] == 1, stats
        assert stats["latency_p50_s"] >= 0
        for uid in reports.values():
            echo = _api(base, f"/api/series/{uid}", token)
            assert echo["own_report_of"] == again["series_instance_uid"], echo
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.logs()}\n{orthanc.log()}") from exc
    finally:
        service.stop()
        orthanc.discard()
