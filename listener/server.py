"""The DICOM listener: a pynetdicom Storage SCP plus the completion monitor."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from db.engine import create_engine_for, make_session_factory, migrate
from listener.completion import CompletionMonitor
from listener.config import ListenerConfig, ListenerRuntime
from listener.dispatch import TaskDispatcher
from listener.handlers import (
    StoreContext,
    handle_connection_open,
    handle_echo,
    handle_store,
)

log = logging.getLogger(__name__)


def build_ae(config: ListenerConfig) -> AE:
    """An AE that accepts C-ECHO and every storage SOP class in every transfer syntax."""
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.acse_timeout = config.acse_timeout_s
    ae.dimse_timeout = config.dimse_timeout_s
    ae.network_timeout = config.network_timeout_s
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    if config.allowed_calling_ae_titles:
        ae.require_calling_aet = list(config.allowed_calling_ae_titles)
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

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful when configured as 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop accepting, finish the monitor, release the broker."""
        self.server.shutdown()
        self.monitor.stop()
        self.dispatcher.close()


def start_listener(config: ListenerConfig, runtime: ListenerRuntime) -> Listener:
    """Migrate the database, start the SCP and the completion monitor (non-blocking)."""
    runtime.storage_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(runtime.database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    dispatcher = TaskDispatcher(
        broker_url=runtime.broker_url,
        transport_options=runtime.broker_transport_options,
        queue=runtime.task_queue,
    )
    context = StoreContext(storage_dir=runtime.storage_dir, session_factory=sessions)
    ae = build_ae(config)
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
        (evt.EVT_CONN_OPEN, handle_connection_open),
    ]
    server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
    assert server is not None
    monitor = CompletionMonitor(
        config=config,
        session_factory=sessions,
        storage_dir=runtime.storage_dir,
        dispatcher=dispatcher,
    )
    monitor.start()
    log.info(
        "Listening as %s on %s:%d (quiet period %.1f s)",
        config.ae_title,
        config.host,
        server.server_address[1],
        config.quiet_period_s,
    )
    return Listener(server=server, monitor=monitor, dispatcher=dispatcher)
