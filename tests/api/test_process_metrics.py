"""The listener's and worker's metric helpers, without a network (the e2e test has one)."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace

import pytest
from pydicom import Dataset

import listener.metrics as lm
import worker.metrics as wm
from listener.admission import Rejection, RejectResult
from listener.status import StoreStatus
from tests.helpers import free_port


def _value(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_store_answers_are_counted_by_status_and_timed() -> None:
    def refuse(event: object) -> Dataset:
        answer = Dataset()
        answer.Status = int(StoreStatus.INVALID_UID)
        return answer

    ok = lm.timed_store(lambda event: StoreStatus.SUCCESS)
    refused = lm.timed_store(refuse)
    name = "stroke_triage_listener_instances_received_total"
    before_ok = _value(lm.REGISTRY, name, status="success")
    before_bad = _value(lm.REGISTRY, name, status="invalid_uid")
    before_n = _value(lm.REGISTRY, "stroke_triage_listener_store_seconds_count")
    ok(SimpleNamespace())  # type: ignore[arg-type]
    ok(SimpleNamespace())  # type: ignore[arg-type]
    refused(SimpleNamespace())  # type: ignore[arg-type]
    assert _value(lm.REGISTRY, name, status="success") == before_ok + 2
    assert _value(lm.REGISTRY, name, status="invalid_uid") == before_bad + 1
    assert _value(lm.REGISTRY, "stroke_triage_listener_store_seconds_count") == before_n + 3


@pytest.mark.parametrize(
    ("rejection", "label"),
    [
        (Rejection(RejectResult.PERMANENT, 1, 3, "calling AE title not allowed"), None),
        (Rejection(RejectResult.TRANSIENT, 3, 1, "disk 97 % full at /data"), "out of resources"),
    ],
)
def test_refused_associations_have_bounded_reasons(rejection: Rejection, label: str | None) -> None:
    label = label or rejection.reason
    name = "stroke_triage_listener_associations_refused_total"
    before = _value(lm.REGISTRY, name, reason=label)
    lm.association_refused(
        reason=rejection.reason, transient=rejection.result == RejectResult.TRANSIENT
    )
    assert _value(lm.REGISTRY, name, reason=label) == before + 1


def test_skip_reasons_lose_their_numbers() -> None:
    assert lm.reason_label("3 axial slices, fewer than the 5 needed") == (
        "N axial slices, fewer than the N needed"
    )
    assert lm.reason_label("not a head: body part CHEST") == "not a head"


def test_worker_port_serves_its_metrics_and_the_queue_depth(tmp_path: object) -> None:
    class Sessions:
        def __call__(self) -> object:
            raise OSError("no database here")

    wm.job_outcome("done")
    wm.export_attempt(sent=False)
    port = free_port()
    stop = wm.serve_metrics(host="127.0.0.1", port=port, sessions=Sessions())  # type: ignore[arg-type]
    assert stop is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        stop()
    assert 'stroke_triage_worker_jobs_total{outcome="done"}' in text
    assert 'stroke_triage_worker_exports_total{status="failed"}' in text
    # The database is down: the scrape still answers, without the queue depth.
    assert "stroke_triage_queue_depth " not in text
    assert wm.serve_metrics(host="127.0.0.1", port=0, sessions=Sessions()) is None  # type: ignore[arg-type]
