"""Every private attribute of a third-party library that stroke-triage relies on, in one place.

pynetdicom, kombu and prometheus_client offer no public way to do these few things. Each use is a
function here, so that an upgrade that moves one breaks one module, and ``tests/test_compat.py``
says which, loudly, before anything runs in production. The constraints file caps these
libraries below their next minor (or major) release; lift a cap only with that test green.
:mod:`compat.folder_queue` overrides two protected methods of kombu's filesystem channel (the
embedded folder queue), checked by ``tests/test_folder_queue.py``.

Nothing here is imported at the top of a module that the settings import: pynetdicom, kombu
and prometheus_client are imported by the functions that use them.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, cast


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


def receive_c_store_into_files(
    place: Callable[[], tuple[Path, str] | None], *, suffix: str, mode: int
) -> None:
    """Have pynetdicom write each received C-STORE data set to a file as its fragments arrive.

    ``place()``, called in the thread that receives (the association's network thread),
    names the folder and the file name prefix for the association it serves, or ``None``:
    then the data set stays in memory, as by default. The file (``suffix``, permissions
    ``mode``) holds the preamble, the file meta and the data set; ``Event.dataset_path`` names
    it in the C-STORE handler, and pynetdicom removes it after the handler unless the handler
    moved it away.

    pynetdicom's own switch, ``_config.STORE_RECV_CHUNKED_DATASET``, is process-wide (it would
    change every other SCP in the process, the demo's PACS for one) and its file goes to the
    system's temporary folder (not always the storage's file system, so no rename).
    ``pynetdicom.dimse_messages`` reads the switch through its module name ``_config`` and
    makes the file with its module name ``NamedTemporaryFile``: both are replaced there. Calling
    this again with the same ``place`` changes nothing; with another, ``place`` is replaced.
    """
    from pynetdicom import dimse_messages

    module: Any = dimse_messages  # two of its module-level names are replaced
    current = module._config
    if isinstance(current, _ChunkedWhere):
        if current.place is place and module.NamedTemporaryFile == current.make_file:
            return
        current = current.config
    hooked = _ChunkedWhere(current, place, suffix=suffix, mode=mode)
    module._config = hooked
    module.NamedTemporaryFile = hooked.make_file


class _ChunkedWhere:
    """pynetdicom's ``_config`` module, except that data sets go to files where a place is set."""

    def __init__(
        self,
        config: Any,
        place: Callable[[], tuple[Path, str] | None],
        *,
        suffix: str,
        mode: int,
    ) -> None:
        self.config = config
        self.place = place
        self._suffix = suffix
        self._mode = mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.config, name)

    @property
    def STORE_RECV_CHUNKED_DATASET(self) -> bool:  # noqa: N802 (pynetdicom's name)
        """pynetdicom's switch, on where ``place()`` names a folder."""
        return bool(self.config.STORE_RECV_CHUNKED_DATASET) or self.place() is not None

    def make_file(self, **kwargs: Any) -> Any:
        """``NamedTemporaryFile`` for pynetdicom: in the place's folder, with its prefix."""
        where = self.place()
        if where is None:
            return tempfile.NamedTemporaryFile(**kwargs)
        folder, prefix = where
        file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (pynetdicom closes it)
            **{**kwargs, "dir": folder, "prefix": prefix, "suffix": self._suffix}
        )
        os.fchmod(file.fileno(), self._mode)
        return file


#: The sleep at the top of pynetdicom's acceptor reactor loop (``Association._run_reactor``).
REACTOR_POLL_S = 0.001
_waking: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def wake_reactor_on_messages(assoc: Any) -> None:
    """Let this association's reactor serve a DIMSE message as soon as it is whole.

    pynetdicom's acceptor reactor (``Association._run_reactor``, in the association's own
    thread) sleeps ``time.sleep(0.001)`` before each look at its DIMSE queue, so a C-STORE
    request waits 0.5 ms on average before its handler runs. pynetdicom's ``association``
    module reads ``time`` by its module name: it is replaced, once, by one whose ``sleep``, in
    the reactor of an association named here, waits (as long at most) for a message to arrive
    on the association's DIMSE queue (``DIMSEServiceProvider.msg_queue``, a ``queue.Queue``)
    instead. Every other sleep is the real one.
    """
    from pynetdicom import association

    module: Any = association
    if not isinstance(module.time, _WakingTime):
        module.time = _WakingTime(module.time)
    _waking.add(assoc)


class _WakingTime:
    """The ``time`` module, except the reactor's poll of an association in ``_waking``."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def sleep(self, seconds: float) -> None:
        """``time.sleep``, or a wait for the DIMSE queue of this thread's association."""
        thread = threading.current_thread()
        if seconds != REACTOR_POLL_S or thread not in _waking:
            self._real.sleep(seconds)
            return
        messages = cast(Any, thread).dimse.msg_queue
        if messages.empty():
            # A message put between empty() and wait() is seen at the end of the wait, as
            # it would have been without this.
            with messages.not_empty:
                messages.not_empty.wait(seconds)
