"""The pynetdicom pieces of the listener: its AE, and the association servers it runs.

:class:`ListenerServer` is pynetdicom's threaded server whose associations share its supported
contexts; :class:`BalancedServer` is one of several such servers, in several processes, that
accept from one listening socket (:mod:`listener.balance` picks which).
"""

from __future__ import annotations

import socket
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from listener.balance import AcceptBalance
from listener.config import ListenerConfig

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


class SharedContexts(list[PresentationContext]):
    """The server's supported contexts, shared by its associations instead of copied.

    pynetdicom deep-copies the server's contexts for every association; with every storage
    SOP class in every transfer syntax (about 170 contexts, 7,600 UIDs, each validated again)
    that took about 57 ms per association, 1 ms per image for a series sent over four
    associations. Negotiation only reads them (the accepted contexts are new objects), and
    nothing here changes them once the server runs.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list[PresentationContext]:
        """A new list of the same (read-only) contexts."""
        return list(self)


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, whose associations share its supported contexts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As pynetdicom's."""
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)


class BalancedServer(ListenerServer):
    """One of several association servers that accept from one listening socket.

    The listener's process binds the socket; its children receive it (``listening``) instead
    of binding. The socket is non-blocking: every process wakes on a new connection, the least
    busy takes it (:class:`listener.balance.AcceptBalance`) and the others' accept finds
    nothing, which socketserver ignores.
    """

    def __init__(
        self, *args: Any, balance: AcceptBalance, listening: socket.socket | None, **kwargs: Any
    ) -> None:
        """pynetdicom's arguments, then the shared counts and the inherited socket, if any."""
        self._balance = balance
        self._listening = listening
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """Bind as pynetdicom does, or take the inherited socket; then stop blocking on it."""
        if self._listening is None:
            super().server_bind()
        else:
            cast(socket.socket, self.socket).close()
            self.socket = self._listening
            self.server_address = self.socket.getsockname()
        cast(socket.socket, self.socket).setblocking(False)

    def server_activate(self) -> None:
        """Listen, unless the socket came from the listener's process (it listens already)."""
        if self._listening is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept if this process is (or may act as) the least busy; wrap in TLS if set.

        Raises:
            BlockingIOError: Another process took the connection (socketserver ignores it).
        """
        listening = cast(socket.socket, self.socket)
        self._balance.wait_for_turn(listening)
        client, address = listening.accept()
        client.setblocking(True)  # as pynetdicom's own accept leaves it
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True)
        self._balance.accepted(client)
        return client, address

    def service_actions(self) -> None:
        """pynetdicom's housekeeping, and the open-connection count kept true."""
        super().service_actions()
        self._balance.refresh()

    def server_close(self) -> None:
        """Close this process's handle only, as pynetdicom's ``shutdown()`` of the socket
        would stop it listening for the other processes too; then join request threads."""
        cast(socket.socket, self.socket).close()
        super().server_close()  # its shutdown() of the closed socket fails, and is ignored
