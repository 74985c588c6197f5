"""Every private attribute of a third-party library that stroke-triage relies on, in one place.

pynetdicom, kombu and prometheus_client offer no public way to do these few things. Each use is a
function here, so that an upgrade that moves one breaks one module, and ``tests/test_compat.py``
says which, loudly, before anything runs in production. The constraints file caps these
libraries below their next minor (or major) release; lift a cap only with that test green.

Nothing here is imported at the top of a module that the settings import: pynetdicom, kombu
and prometheus_client are imported by the functions that use them.
"""

from __future__ import annotations

from types import FrameType
from typing import Any


def add_server(ae: Any, server: Any) -> None:
    """Register a server started by hand with its AE, as ``AE.start_server`` does.

    ``AE.shutdown()`` then stops it with the others (pynetdicom ``AE._servers``).
    """
    ae._servers.append(server)


def set_reactor_delay(assoc: Any, seconds: float) -> None:
    """Set how long this association's network reactor sleeps when idle.

    pynetdicom's default (1 ms, ``DULServiceProvider._run_loop_delay``) is paid twice per
    instance, because a sender waits for each response.
    """
    assoc.dul._run_loop_delay = seconds


def reject_and_close(assoc: Any, *, result: int, source: int, diagnostic: int) -> None:
    """Send an A-ASSOCIATE-RJ from an EVT_REQUESTED handler, then drop the connection.

    pynetdicom has no public way for a handler to reject; its own acceptor calls
    ``assoc.acse.send_reject`` and then ``assoc.kill()`` in the same way.
    """
    from pynetdicom import evt

    assoc.acse.send_reject(result, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def is_idle_in_kombu_polling(frame: FrameType | None) -> bool:
    """Whether a signal interrupted a Celery worker idle in kombu's polling loop.

    Compares the interrupted frame's code with kombu's virtual transport ``drain_events``
    (its implementation, not a public contract).
    """
    from kombu.transport.virtual.base import Transport

    return frame is not None and frame.f_code is Transport.drain_events.__code__


def prometheus_writes_to_files() -> bool:
    """Whether this process's prometheus_client values are file-backed (multiprocess mode).

    prometheus_client decides it once, at import, from ``PROMETHEUS_MULTIPROC_DIR``, and
    records it only as ``ValueClass._multiprocess``.
    """
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))
