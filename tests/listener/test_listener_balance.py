"""Least-busy accept between receiving processes, and contexts shared between associations."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from listener.balance import VACANT, AcceptBalance
from tests.listener.helpers import LISTENER_AE, RunningListener, scu, wait_until


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1, non-blocking as the listener's is."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        yield sock


def test_slots_start_vacant_until_their_process_serves() -> None:
    parent = AcceptBalance.create(3)
    assert parent.snapshot() == [0, VACANT, VACANT]
    AcceptBalance.for_slot(parent.counts, 2)
    assert parent.snapshot() == [0, VACANT, 0]


def test_counts_open_connections_and_forgets_closed_ones() -> None:
    parent = AcceptBalance.create(2)
    child = AcceptBalance.for_slot(parent.counts, 1)
    first, second = socket.socketpair()
    with first, second:
        parent.accepted(first)
        assert parent.snapshot() == [1, 0]
        assert parent.another_is_less_busy()
        assert not child.another_is_less_busy()
        first.close()
        parent.refresh()
        assert parent.snapshot() == [0, 0]
        assert not parent.another_is_less_busy()


def test_a_tls_socket_is_counted_in_place_of_the_raw_one() -> None:
    balance = AcceptBalance.create(1)
    raw, peer = socket.socketpair()
    wrapped, other = socket.socketpair()  # stands for the TLS socket that takes ``raw`` over
    with peer, wrapped, other:
        balance.accepted(raw)
        raw.close()  # wrapping detaches it
        balance.refresh()  # which may come first: the raw socket is forgotten
        balance.replaced(raw, wrapped)
        assert balance.snapshot() == [1]


def test_a_dead_process_is_not_waited_for() -> None:
    parent = AcceptBalance.create(2)
    AcceptBalance.for_slot(parent.counts, 1)
    first, second = socket.socketpair()
    with first, second:
        parent.accepted(first)
        assert parent.another_is_less_busy()
        AcceptBalance.vacate(parent.counts, 1)
        assert not parent.another_is_less_busy()


def test_a_busier_process_waits_until_another_takes_the_connection(
    listening: socket.socket,
) -> None:
    parent = AcceptBalance.create(2)
    AcceptBalance.for_slot(parent.counts, 1)
    busy_end, other_end = socket.socketpair()
    with busy_end, other_end, socket.create_connection(listening.getsockname()):
        parent.accepted(busy_end)
        taken: list[socket.socket] = []

        def less_busy_process_accepts() -> None:
            time.sleep(0.1)
            taken.append(listening.accept()[0])

        thread = threading.Thread(target=less_busy_process_accepts)
        start = time.monotonic()  # before the thread starts its 0.1 s sleep
        thread.start()
        parent.wait_for_turn(listening, patience_s=30.0)
        waited = time.monotonic() - start
        thread.join()
        taken[0].close()
    assert 0.1 <= waited < 20.0  # returned once the connection was taken, not at patience
    with pytest.raises(BlockingIOError):  # so its accept finds nothing
        listening.accept()


def test_a_busier_process_takes_the_connection_when_nobody_else_does(
    listening: socket.socket,
) -> None:
    parent = AcceptBalance.create(2)
    AcceptBalance.for_slot(parent.counts, 1)  # serving, but never accepts here
    busy_end, other_end = socket.socketpair()
    with busy_end, other_end, socket.create_connection(listening.getsockname()):
        parent.accepted(busy_end)
        start = time.monotonic()
        parent.wait_for_turn(listening, patience_s=0.2)
        assert time.monotonic() - start >= 0.2
        client, _ = listening.accept()
        client.close()


def test_associations_share_the_servers_contexts_instead_of_copies(
    start_listener_for_test: Callable[..., RunningListener],
) -> None:
    running = start_listener_for_test(processes=1)
    server = running.listener.server
    assert copy.deepcopy(server.contexts)[0] is server.contexts[0]
    assoc = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        wait_until(lambda: len(server.active_associations) == 1, timeout_s=10)
        (accepted,) = server.active_associations
        assert accepted.acceptor.supported_contexts[0] is server.contexts[0]
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
