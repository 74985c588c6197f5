"""A database outage under the listener: nothing accepted is lost, answers say what happened.

A TCP proxy written in the test stands between the listener and the real PostgreSQL (a
throwaway schema); cutting the proxy is the outage. The shared PostgreSQL is never stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.engine import Engine

from db.models import Instance
from tests.helpers import TcpProxy, run_cli, wait_until
from tests.listener.helpers import LISTENER_AE, RunningListener, ct_dataset, scu

Start = Callable[..., RunningListener]
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


@pytest.fixture
def proxy(postgres_schema_url: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_schema_url)
    forwarder = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    yield forwarder
    forwarder.close()


@pytest.fixture
def proxied_url(postgres_schema_url: str, proxy: TcpProxy) -> str:
    """The schema's URL through the proxy (what the listener uses)."""
    url = make_url(postgres_schema_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def direct(postgres_schema_url: str) -> Iterator[Engine]:
    """An engine straight to the schema (what the test checks with)."""
    engine = create_engine(postgres_schema_url)
    yield engine
    engine.dispose()


def _recorded(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(Instance.sop_instance_uid)).scalars())


def _send(
    port: int, datasets: list[FileDataset], between: Callable[[int], None] | None = None
) -> list[int]:
    """C-STORE each dataset on one association; ``between(i)`` runs before the i-th."""
    assoc = scu().associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    statuses = []
    try:
        for index, ds in enumerate(datasets):
            if between is not None:
                between(index)
            statuses.append(int(assoc.send_c_store(ds).Status))
    finally:
        assoc.release()
    return statuses


def _series(count: int) -> list[FileDataset]:
    study, series = generate_uid(), generate_uid()
    return [ct_dataset(study_uid=study, series_uid=series, number=n) for n in range(1, count + 1)]


def test_recorder_keeps_what_it_accepted_through_an_outage(
    start_listener_for_test: Start, proxy: TcpProxy, proxied_url: str, direct: Engine
) -> None:
    running = start_listener_for_test(database_url=proxied_url)
    datasets = _series(12)
    uids = {str(ds.SOPInstanceUID) for ds in datasets}

    def cut_midway(index: int) -> None:
        if index == 4:
            running.listener.recorder.flush(30)
            proxy.cut()

    statuses = _send(running.port, datasets, cut_midway)

    # Every C-STORE succeeded: the files are durable, the records wait for the database.
    assert statuses == [SUCCESS] * 12
    assert len(running.stored_files()) == 12
    time.sleep(2.5)  # the recorder fails and retries at least once meanwhile
    assert running.listener.recorder.backlog == 8
    assert len(_recorded(direct)) == 4

    proxy.restore()
    assert running.listener.recorder.flush(60), "the recorder did not catch up"
    assert _recorded(direct) == uids
    with direct.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM instances")).scalar_one()
    assert rows == 12, "an instance was recorded twice"


def test_wait_for_database_answers_once_the_record_is_committed(
    start_listener_for_test: Start, proxy: TcpProxy, proxied_url: str, direct: Engine
) -> None:
    running = start_listener_for_test(database_url=proxied_url, wait_for_database=True)
    first, second = _series(2)
    outage_s = 2.0

    def cut_then_restore(index: int) -> None:
        if index == 1:
            proxy.cut()
            threading.Timer(outage_s, proxy.restore).start()

    started = time.monotonic()
    statuses = _send(running.port, [first, second], cut_then_restore)
    elapsed = time.monotonic() - started

    assert statuses == [SUCCESS, SUCCESS]
    # The answer to the second waited for the database, and the record was there at once.
    assert elapsed >= outage_s
    assert _recorded(direct) == {str(first.SOPInstanceUID), str(second.SOPInstanceUID)}


def test_wait_for_database_refuses_when_the_database_stays_away(
    start_listener_for_test: Start, proxy: TcpProxy, proxied_url: str, direct: Engine
) -> None:
    # The record timeout is the DIMSE timeout: keep it short, and the sender's longer.
    running = start_listener_for_test(
        database_url=proxied_url, wait_for_database=True, dimse_timeout_s=2.0
    )
    (ds,) = _series(1)

    statuses = _send(running.port, [ds], lambda index: proxy.cut())

    # 0xA700: out of resources, the sender may send again later...
    assert statuses == [OUT_OF_RESOURCES]
    # ...but the file was durable before the answer, and is recorded once the database is back.
    assert len(running.stored_files()) == 1
    proxy.restore()
    wait_until(lambda: _recorded(direct) == {str(ds.SOPInstanceUID)}, timeout_s=60)


def test_listener_start_with_an_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    """At start-up the listener migrates: no database, no listener (exit 2, one message)."""
    closed = TcpProxy("127.0.0.1", 9, accepting=False)  # a free port nobody listens on
    done = run_cli(
        ["listen"],
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(closed.port),
            "STROKE_TRIAGE_DATABASE_URL": (
                f"postgresql+psycopg://postgres@127.0.0.1:{closed.port}/test"
            ),
        },
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "database" in done.stderr.lower()
    assert "Connection refused" in done.stderr
    assert "Traceback" not in done.stderr
