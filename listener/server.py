"""The DICOM listener: a pynetdicom Storage SCP, its recorder and the completion monitor."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from db.engine import Engine, create_engine_for, make_session_factory, migrate
from listener.admission import AdmissionPolicy, handle_association_request
from listener.completion import CompletionMonitor
from listener.config import ListenerConfig, ListenerRuntime
from listener.dispatch import TaskDispatcher
from listener.handlers import (
    StoreContext,
    handle_connection_open,
    handle_echo,
    handle_store,
)
from listener.recorder import InstanceRecorder
from listener.recovery import record_unrecorded, remove_partial_files
from listener.resources import ResourceGuard
from listener.tls import server_ssl_context

log = logging.getLogger(__name__)

#: How long the monitor waits for queued records before judging series.
FLUSH_TIMEOUT_S = 10.0
#: Largest PDU we receive (DCMTK's own upper limit); fewer PDUs per instance than 16 KiB.
MAXIMUM_PDU_SIZE = 131072


def build_ae(config: ListenerConfig) -> AE:
    """An AE that accepts C-ECHO and every storage SOP class in every transfer syntax."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.acse_timeout = config.acse_timeout_s
    ae.dimse_timeout = config.dimse_timeout_s
    ae.network_timeout = config.network_timeout_s
    ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    return ae


@dataclass
class Listener:
    """A running listener; stop() shuts everything down."""

    server: ThreadedAssociationServer
    monitor: CompletionMonitor
    dispatcher: TaskDispatcher
    recorder: InstanceRecorder
    engine: Engine

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful when configured as 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, commit queued records, stop the monitor, release the broker."""
        self.server.shutdown()
        self.recorder.stop()
        self.monitor.stop()
        self.dispatcher.close()
        self.engine.dispose()


def start_listener(config: ListenerConfig, runtime: ListenerRuntime) -> Listener:
    """Migrate, recover unrecorded files, start the SCP and the monitor (non-blocking)."""
    storage_dir = runtime.storage_dir
    storage_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(runtime.database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    remove_partial_files(storage_dir)
    record_unrecorded(storage_dir, sessions)
    recorder = InstanceRecorder(
        session_factory=sessions,
        # A caller waiting for the commit must not wait for a batch window as well.
        batch_window_s=0.0 if config.wait_for_database else 0.05,
    )
    recorder.start()
    guard = ResourceGuard(
        storage_dir=storage_dir,
        min_free_disk_mb=config.min_free_disk_mb,
        session_factory=sessions,
        queue_high_water=config.queue_high_water,
    )
    dispatcher = TaskDispatcher(
        broker_url=runtime.broker_url,
        transport_options=runtime.broker_transport_options,
        queue=runtime.task_queue,
    )
    context = StoreContext(
        storage_dir=storage_dir,
        recorder=recorder,
        guard=guard,
        max_image_pixels=config.max_image_pixels,
        wait_for_database=config.wait_for_database,
        record_timeout_s=config.dimse_timeout_s,
    )
    policy = AdmissionPolicy(config=config, guard=guard)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_connection_open),
        (evt.EVT_REQUESTED, handle_association_request, [policy]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
    ]
    server = build_ae(config).start_server(
        (config.host, config.port),
        block=False,
        evt_handlers=handlers,
        ssl_context=server_ssl_context(config),
    )
    assert server is not None
    monitor = CompletionMonitor(
        config=config,
        session_factory=sessions,
        storage_dir=storage_dir,
        dispatcher=dispatcher,
        before_judging=lambda: recorder.flush(FLUSH_TIMEOUT_S),
    )
    monitor.start()
    log.info(
        "Listening as %s on %s:%d (TLS %s, quiet period %.1f s)",
        config.ae_title,
        config.host,
        server.server_address[1],
        "on" if config.tls_enabled else "off",
        config.quiet_period_s,
    )
    return Listener(
        server=server, monitor=monitor, dispatcher=dispatcher, recorder=recorder, engine=engine
    )
