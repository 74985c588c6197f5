"""The embedded folder queue (kombu's filesystem transport, compat.folder_queue): a message is
read whole or not at all, and one that cannot be read is dropped without stopping the consumer.

kombu's own channel opens the final message file, then writes it: a consumer polling at that
moment read an empty file and the worker stopped (JSONDecodeError, seen in the e2e study test).
"""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from queue import Empty

import pytest
from kombu.connection import Connection
from kombu.transport import filesystem
from kombu.transport.redis import Transport as RedisTransport

from compat.folder_queue import TRANSPORT, Channel, Transport, transport_for


def _connection(folder: Path) -> Connection:
    messages = folder / "messages"
    messages.mkdir(parents=True, exist_ok=True)
    return Connection(  # type: ignore[no-untyped-call]
        "filesystem://",
        transport=TRANSPORT,
        transport_options={
            "data_folder_in": str(messages),
            "data_folder_out": str(messages),
            "control_folder": str(folder / "control"),
            "polling_interval": 0.01,
        },
    )


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "queue"


@pytest.fixture
def name() -> str:
    """A queue name of the test's own: kombu keeps the bindings it declared in the class, per
    process, and would not declare them again in another test's folder."""
    return f"jobs-{uuid.uuid4().hex}"


def test_the_folder_queue_is_ours_for_filesystem_urls_only(tmp_path: Path) -> None:
    assert transport_for("filesystem://") == TRANSPORT
    assert transport_for("redis://127.0.0.1:6379/0") is None
    # kombu's private methods the channel overrides are still there.
    assert callable(filesystem.Channel._put) and callable(filesystem.Channel._get)
    with _connection(tmp_path) as connection:
        assert isinstance(connection.default_channel, Channel)


def _produce(folder: Path, name: str, count: int, body: str) -> None:
    with _connection(folder) as connection:
        queue = connection.SimpleQueue(name)
        for number in range(count):
            queue.put({"body": f"{number}:{body}"})


def test_messages_written_while_a_consumer_polls_arrive_whole(folder: Path, name: str) -> None:
    """Large messages sent by another process (as the listener is), taken as they come."""
    count, body = 30, "x" * 8_000_000  # writing one takes long enough to be seen half done
    with _connection(folder) as connection:
        queue = connection.SimpleQueue(name)  # declared before the producer starts
        producer = multiprocessing.get_context("spawn").Process(
            target=_produce, args=(folder, name, count, body)
        )
        producer.start()
        received: list[str] = []
        try:
            while len(received) < count:
                message = queue.get(timeout=60)
                message.ack()  # an unacknowledged message is put back when closing
                received.append(message.payload["body"])
        finally:
            producer.join(60)
    assert producer.exitcode == 0
    assert [text.split(":")[0] for text in received] == [str(n) for n in range(count)]
    assert all(text.endswith(body) for text in received)
    # Nothing left behind: no message, no temporary file.
    assert list((folder / "messages").iterdir()) == []


def test_a_message_file_that_cannot_be_read_is_dropped_and_the_next_one_delivered(
    folder: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _connection(folder) as connection:
        queue = connection.SimpleQueue(name)
        # A crash's leftover, older than any message to come: an empty message file.
        (folder / "messages" / f"1_leftover.{name}.msg").write_bytes(b"")
        queue.put({"job": 7})
        with caplog.at_level(logging.ERROR, logger="compat.folder_queue"):
            with pytest.raises(Empty):
                queue.get(block=False)  # the broken one: dropped, no exception out of kombu
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"job": 7}
    assert "could not be read" in caplog.text and "dropped" in caplog.text


@pytest.mark.parametrize("broker", ["embedded", "redis"])
def test_the_worker_and_the_listener_use_it_on_the_embedded_folder_queue_only(
    tmp_path: Path, broker: str
) -> None:
    from listener.publish import JobPublisher
    from stroke_triage.settings import load_settings
    from worker.celery_app import create_celery_app

    url = None if broker == "embedded" else "redis://127.0.0.1:1/0"  # never connected to
    settings = load_settings(data_dir=tmp_path / "data", broker_url=url)
    expected = Transport if broker == "embedded" else RedisTransport
    worker_app = create_celery_app(settings.worker, settings.worker_runtime())
    runtime = settings.listener_runtime()
    publisher = JobPublisher(
        sessions=lambda: None,  # type: ignore[arg-type]  # nothing is sent
        broker_url=runtime.broker_url,
        transport_options=runtime.broker_transport_options,
        queue=runtime.task_queue,
        lease_s=60.0,
    )
    for app in (worker_app, publisher._app):
        with app.connection_for_write() as connection:
            assert connection.get_transport_cls() is expected  # no connection is made
