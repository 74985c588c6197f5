"""The DICOM listener: pynetdicom Storage SCPs, their recorders and the completion monitor.

With ``processes = N`` the listener's process and N - 1 children (:mod:`listener.supervisor`)
each run an SCP on the listener's one listening socket, the least busy accepting each
association (:mod:`listener.balance`); the leader (:mod:`listener.leader`) alone
recovers files at start-up and runs completion and the reconciler.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from logging.handlers import QueueListener
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

import compat
from db.engine import Engine, SessionFactory, create_engine_for, make_session_factory, migrate
from listener import incoming, metrics
from listener.admission import AdmissionPolicy, handle_association_request
from listener.balance import AcceptBalance, SharedCounts
from listener.child_logs import ChildLogging, forward_child_logs, log_through_parent
from listener.completion import CompletionMonitor
from listener.config import ListenerConfig, ListenerRuntime
from listener.handlers import (
    StoreContext,
    handle_connection_close,
    handle_connection_open,
    handle_echo,
    handle_released,
    handle_store,
)
from listener.interruptions import QuietPeriods
from listener.leader import LeaderElection, LeaderLock
from listener.publish import JobPublisher
from listener.recorder import BATCH_WINDOW_S, InstanceRecorder
from listener.recovery import record_unrecorded, remove_partial_files
from listener.resources import ResourceGuard
from listener.scp import BalancedServer, ListenerServer, build_ae
from listener.supervisor import FLUSH, ReceiverGroup
from listener.tls import server_ssl_context

log = logging.getLogger(__name__)

#: How long the monitor waits for queued records before judging series.
FLUSH_TIMEOUT_S = 10.0


@dataclass
class Receiving:
    """One process's SCP and recorder."""

    server: ThreadedAssociationServer
    recorder: InstanceRecorder
    context: StoreContext

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, then commit the queued records."""
        self.server.shutdown()  # pynetdicom's also closes the socket
        self.context.readers.shutdown()
        self.recorder.stop()


def _prepare_receiving(
    config: ListenerConfig, storage_dir: Path, sessions: SessionFactory
) -> tuple[StoreContext, ResourceGuard]:
    recorder = InstanceRecorder(
        session_factory=sessions,
        # A caller waiting for the commit must not wait for a batch window as well.
        batch_window_s=0.0 if config.wait_for_database else BATCH_WINDOW_S,
    )
    recorder.start()
    guard = ResourceGuard(
        storage_dir=storage_dir,
        min_free_disk_mb=config.min_free_disk_mb,
        session_factory=sessions,
        queue_high_water=config.queue_high_water,
    )
    context = StoreContext(
        storage_dir=storage_dir,
        recorder=recorder,
        guard=guard,
        max_image_pixels=config.max_image_pixels,
        wait_for_database=config.wait_for_database,
        record_timeout_s=config.dimse_timeout_s,
        fsync=config.fsync,
        # An abort seen here is committed to the database, where the leader reads it.
        quiet_periods=QuietPeriods(session_factory=sessions, flush_records=recorder.flush),
    )
    return context, guard


def _serve(
    config: ListenerConfig,
    context: StoreContext,
    guard: ResourceGuard,
    *,
    balance: AcceptBalance | None = None,
    listening: socket.socket | None = None,
) -> Receiving:
    """Start an SCP: alone on its port, or (``balance`` set) one of several on one socket.

    ``listening`` is the listener's socket, inherited by a child; ``None`` binds a new one.
    """
    policy = AdmissionPolicy(config=config, guard=guard, balance=balance)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_connection_open),
        (evt.EVT_CONN_OPEN, incoming.start, [context.storage_dir]),
        (evt.EVT_REQUESTED, handle_association_request, [policy]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, metrics.timed_store(handle_store), [context]),
        (evt.EVT_CONN_OPEN, metrics.connection_opened),
        (evt.EVT_CONN_CLOSE, metrics.connection_closed),
        (evt.EVT_ACCEPTED, metrics.association_accepted),
        (evt.EVT_RELEASED, handle_released, [context]),
        (evt.EVT_CONN_CLOSE, handle_connection_close, [context]),
        (evt.EVT_CONN_CLOSE, incoming.finish),
    ]
    server_class: type[ThreadedAssociationServer] = ListenerServer
    if balance is not None:
        handlers.append((evt.EVT_CONN_CLOSE, _connection_closed, [balance]))
        server_class = cast(
            type[ThreadedAssociationServer],
            functools.partial(BalancedServer, balance=balance, listening=listening),
        )
    ae = build_ae(config)
    server = ae.make_server(
        (config.host, config.port),
        evt_handlers=handlers,
        ssl_context=server_ssl_context(config),
        server_class=server_class,
    )
    compat.add_server(ae, server)  # as AE.start_server does; shutdown() stops it
    threading.Thread(
        target=make_target(server.serve_forever), name="dicom-acceptor", daemon=True
    ).start()
    return Receiving(server=server, recorder=context.recorder, context=context)


def _connection_closed(event: Any, balance: AcceptBalance) -> None:
    """EVT_CONN_CLOSE: publish the lower count at once, for the next accept anywhere."""
    balance.refresh()


@dataclass(frozen=True)
class ReceiverSetup:
    """What every receiving child gets from the listener's process."""

    config: ListenerConfig
    runtime: ListenerRuntime
    metrics_dir: Path
    """Its metrics go to files here, which the listener's metrics port serves."""
    listening: socket.socket
    """The listener's listening socket (inherited, not bound again)."""
    counts: SharedCounts
    """Open connections per process (:mod:`listener.balance`); the child's is ``counts[slot]``."""
    logging: ChildLogging
    """Where the child's log records go (the listener's own handlers)."""


def serve_receiver(setup: ReceiverSetup, slot: int, control: Connection) -> None:
    """A child receiving process: accept on the listener's socket until told to stop.

    Sends the port on ``control`` once serving. Answers ``(FLUSH, n)`` with
    ``(n, committed)`` once every record queued so far is committed (the leader judges series
    from committed state only); stops when anything else arrives or when it closes (the
    listener's process died).
    """
    log_through_parent(setup.logging)
    metrics.use_children_dir(setup.metrics_dir)
    engine = create_engine_for(setup.runtime.database_url)
    sessions = make_session_factory(engine)
    context, guard = _prepare_receiving(setup.config, setup.runtime.storage_dir, sessions)
    balance = AcceptBalance.for_slot(setup.counts, slot)
    receiving = _serve(setup.config, context, guard, balance=balance, listening=setup.listening)
    try:
        control.send(receiving.port)
        while (message := control.recv())[0] == FLUSH:
            control.send((message[1], receiving.recorder.flush(FLUSH_TIMEOUT_S)))
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        receiving.stop()
        engine.dispose()


@dataclass
class Listener:
    """A running listener; stop() shuts everything down."""

    receiving: Receiving
    monitor: CompletionMonitor
    publisher: JobPublisher
    engine: Engine
    election: LeaderElection
    receivers: ReceiverGroup | None = None
    balance: AcceptBalance | None = None
    """Open connections per receiving process, with more than one."""
    child_logs: QueueListener | None = None
    """Writes the receiving children's log records, with more than one process."""
    stopped: bool = False

    @property
    def server(self) -> ThreadedAssociationServer:
        """This process's association server."""
        return self.receiving.server

    @property
    def recorder(self) -> InstanceRecorder:
        """This process's recorder (children have their own)."""
        return self.receiving.recorder

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful when configured as 0)."""
        return self.receiving.port

    @property
    def is_leader(self) -> bool:
        """Whether this process runs completion, the reconciler and recovery."""
        return self.election.is_leader

    def stop(self) -> None:
        """Stop the children, stop accepting, commit queued records, stop the monitor."""
        if self.stopped:
            return
        self.stopped = True
        if self.receivers is not None:
            self.receivers.stop()
        if self.child_logs is not None:
            self.child_logs.stop()  # after the children: their last lines are written first
        self.receiving.stop()
        self.monitor.stop()
        self.election.stop()
        self.publisher.close()
        self.engine.dispose()


def start_listener(config: ListenerConfig, runtime: ListenerRuntime) -> Listener:
    """Migrate, elect, recover, start the SCPs and (as leader) the monitor; non-blocking."""
    storage_dir = runtime.storage_dir
    storage_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(runtime.database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    context, guard = _prepare_receiving(config, storage_dir, sessions)
    publisher = JobPublisher(
        sessions=sessions,
        broker_url=runtime.broker_url,
        transport_options=runtime.broker_transport_options,
        queue=runtime.task_queue,
        lease_s=config.queued_lease_s,
    )
    receivers: ReceiverGroup | None = None

    def flush_records() -> None:
        # Every receiving process's records, so that quiet periods count from committed state.
        context.recorder.flush(FLUSH_TIMEOUT_S)
        if receivers is not None:
            receivers.flush(FLUSH_TIMEOUT_S)

    monitor = CompletionMonitor(
        config=config,
        session_factory=sessions,
        storage_dir=storage_dir,
        publisher=publisher,
        before_judging=flush_records,
        # Series left receiving by a crash, or by an aborted association, get a fresh quiet
        # period (counted from start-up, or from the abort) before they are judged.
        quiet_periods=context.quiet_periods,
        model_slice_thickness_mm=runtime.model_slice_thickness_mm,
    )
    lock = LeaderLock(storage_dir)
    recovered = lock.try_acquire()
    if recovered:
        # Before anyone here receives: later, partial files may be writes in progress.
        remove_partial_files(storage_dir)
        incoming.remove_leftovers(storage_dir)
        record_unrecorded(storage_dir, sessions)

    def lead() -> None:
        if not recovered:  # took over from another listener on this folder
            record_unrecorded(storage_dir, sessions)
        # Nothing was judged here until now: every series' quiet period starts afresh.
        monitor.quiet_periods.restart_all()
        monitor.start()

    count = config.receiving_processes
    log_writer: QueueListener | None = None
    balance = AcceptBalance.create(count) if count > 1 else None
    receiving = _serve(config, context, guard, balance=balance)
    election = LeaderElection(lock, lead, retry_s=config.check_interval_s)
    if balance is not None:
        child_config = config.model_copy(update={"port": receiving.port})

        metrics_dir = metrics.prepare_children_dir(
            storage_dir.parent / "metrics" / f"listener-{os.getpid()}"
        )
        counts = balance.counts

        def after_death(pid: int, slot: int) -> None:
            AcceptBalance.vacate(counts, slot)
            metrics.child_died(pid)
            _recover_after_death(storage_dir, sessions, pid, leader=election.is_leader)

        child_logging, log_writer = forward_child_logs(multiprocessing.get_context("forkserver"))
        receivers = ReceiverGroup(
            count=count - 1,
            target=serve_receiver,
            args=(
                ReceiverSetup(
                    config=child_config,
                    runtime=runtime,
                    metrics_dir=metrics_dir,
                    listening=cast(socket.socket, receiving.server.socket),
                    counts=counts,
                    logging=child_logging,
                ),
            ),
            on_death=after_death,
        )
        # The fork server imports prometheus_client once, from this environment: with the
        # variable set, its children's samples are file-backed (each child names its folder).
        with _environment(metrics.ENV, str(metrics_dir)):
            receivers.start()
    # Completion starts once every receiver serves (their start-up is not quiet time).
    election.start()
    log.info(
        "Listening as %s on %s:%d with %d process(es) (TLS %s, durability %s, quiet period "
        "%.1f s, %s)",
        config.ae_title,
        config.host,
        receiving.port,
        count,
        "on" if config.tls_enabled else "off",
        config.durability,
        config.quiet_period_s,
        "leader" if election.is_leader else "standby",
    )
    return Listener(
        receiving=receiving,
        monitor=monitor,
        publisher=publisher,
        engine=engine,
        election=election,
        receivers=receivers,
        balance=balance,
        child_logs=log_writer,
    )


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable (unless set) for the block only."""
    if os.environ.get(name):
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _recover_after_death(
    storage_dir: Path, sessions: SessionFactory, pid: int, *, leader: bool
) -> None:
    """Remove a dead receiver's temporary files; record the files it stored but not recorded.

    Its temporary file names carry this host's name and its pid (see
    :func:`dicom_edge.durable.writer_tag`), and so do its incoming folders.
    """
    removed = remove_partial_files(storage_dir, pid)
    incoming.remove_leftovers(storage_dir, pid)
    recorded = record_unrecorded(storage_dir, sessions) if leader else 0
    log.warning(
        "Receiving process %d died: removed %d partial files, recorded %d instances",
        pid,
        removed,
        recorded,
    )
