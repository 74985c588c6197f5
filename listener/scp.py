"""The pynetdicom pieces of the listener: its AE, and the association servers it runs.

:class:`ListenerServer` is pynetdicom's threaded server whose associations share its supported
contexts; :class:`BalancedServer` is one of several such servers, in several processes, that
accept from one listening socket (:mod:`listener.balance` picks which).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from listener.balance import AcceptBalance
from listener.config import ListenerConfig

log = logging.getLogger(__name__)

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
    """pynetdicom's threaded server, whose associations share its supported contexts, and
    whose TLS handshakes run in each connection's own thread.

    pynetdicom shakes hands in the thread that accepts, with no time limit: one client that
    connects and says nothing (a port scanner, say) stopped every other association.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As pynetdicom's."""
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; TLS comes later, in its thread (:meth:`process_request_thread`)."""
        client, address = cast(socket.socket, self.socket).accept()
        client.setblocking(True)  # as pynetdicom's own accept leaves it
        self.accepted(client)
        return client, address

    def accepted(self, client: socket.socket) -> None:
        """Hook: a connection was accepted (before any TLS handshake)."""

    def process_request_thread(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        client_address: tuple[str, int] | str,
    ) -> None:
        """Shake hands (TLS, within the network timeout), then run the association."""
        if self.ssl_context and isinstance(request, socket.socket):
            wrapped = self._handshake(request, client_address)
            if wrapped is None:
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(
        self, client: socket.socket, address: tuple[str, int] | str
    ) -> socket.socket | None:
        client.settimeout(self.ae.network_timeout)
        try:
            wrapped = cast(ssl.SSLContext, self.ssl_context).wrap_socket(client, server_side=True)
        except (OSError, ValueError) as exc:
            log.warning("TLS handshake with %s failed: %s", _host(address), exc)
            client.close()
            return None
        wrapped.settimeout(None)
        self.handshaken(client, wrapped)
        return wrapped

    def handshaken(self, raw: socket.socket, wrapped: socket.socket) -> None:
        """Hook: ``raw`` is now ``wrapped`` (TLS)."""


def _host(address: tuple[str, int] | str) -> str:
    return address if isinstance(address, str) else str(address[0])


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
        """Accept if this process is (or may act as) the least busy.

        Raises:
            BlockingIOError: Another process took the connection (socketserver ignores it).
        """
        self._balance.wait_for_turn(cast(socket.socket, self.socket))
        return super().get_request()

    def accepted(self, client: socket.socket) -> None:
        """Count the connection at once, so that the next one goes elsewhere."""
        self._balance.accepted(client)

    def handshaken(self, raw: socket.socket, wrapped: socket.socket) -> None:
        """Count the TLS socket instead of the raw one it took over."""
        self._balance.replaced(raw, wrapped)

    def service_actions(self) -> None:
        """pynetdicom's housekeeping, and the open-connection count kept true."""
        super().service_actions()
        self._balance.refresh()

    def server_close(self) -> None:
        """Close this process's handle only, as pynetdicom's ``shutdown()`` of the socket
        would stop it listening for the other processes too; then join request threads."""
        cast(socket.socket, self.socket).close()
        super().server_close()  # its shutdown() of the closed socket fails, and is ignored
