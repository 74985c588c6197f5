"""The outbox: a broker outage loses nothing; the reconciler queues the job once Redis is back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

import db.jobs
from db.enums import JobStatus
from db.models import Job
from tests.helpers import free_port, require_tool
from tests.listener.helpers import RunningListener, storescu, wait_until, write_series

Start = Callable[..., RunningListener]


class RedisServer:
    """A private redis-server without persistence, which the test stops and starts."""

    def __init__(self, port: int) -> None:
        self.binary = require_tool("redis-server", "redis-server")
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_until(lambda: _pings(client), timeout_s=20)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


def _jobs(running: RunningListener) -> list[Job]:
    with running.sessions() as session:
        return db.jobs.list_jobs(session=session)


def test_reconciler_queues_the_job_when_the_broker_is_back(
    start_listener_for_test: Start, redis_server: RedisServer, tmp_path: Path
) -> None:
    running = start_listener_for_test(
        broker_url=f"redis://127.0.0.1:{redis_server.port}/0",
        reconcile_interval_s=0.5,
        quiet_period_s=0.3,
    )
    redis_server.stop()
    files = write_series(tmp_path / "s", 4)
    assert storescu(files, running.port).returncode == 0
    wait_until(lambda: bool(_jobs(running)))
    time.sleep(1.5)  # the reconciler tries (and fails) a few times meanwhile
    jobs = _jobs(running)
    assert [(job.status, job.instance_count) for job in jobs] == [(JobStatus.PENDING, 4)]
    job_id = jobs[0].id

    redis_server.start()

    def queued() -> bool:
        with running.sessions() as session:
            return db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.QUEUED

    wait_until(queued, timeout_s=60)
    client = redis.Redis(port=redis_server.port)
    assert client.llen(running.runtime.task_queue) == 1
