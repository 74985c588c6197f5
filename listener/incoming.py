"""C-STORE data sets written to a file as their fragments arrive, never copied afterwards.

pynetdicom can write a received data set to a file (preamble, file meta, the data set as
received) while its fragments arrive (``STORE_RECV_CHUNKED_DATASET``, through
:func:`compat.receive_c_store_into_files`). Each association of the listener gets its own
folder under ``<storage>/.incoming`` on the storage's file system, so that the C-STORE
handler only has to check the file, flush it and rename it into place
(:func:`dicom_edge.durable.move_into_place`). The folder is made when the association's first
data set arrives (a C-ECHO, a health check's connection or a refused association makes
none), and goes when the connection closes, with whatever a cut association left in it; a
crash leaves ``.part`` files, removed at the next start (:mod:`listener.recovery`,
:func:`remove_leftovers`). Folder and file names carry the host name and the pid
(:func:`dicom_edge.durable.writer_tag`): listeners in separate containers may share the
storage volume, and a recovery removes only what the dead process left.

Which association a data set belongs to is known by the thread that receives it (the
association's network thread, pynetdicom's ``Association.dul``), hence one registry per
process, as pynetdicom's hook is one per process.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.events import Event

import compat
from dicom_edge import PART_SUFFIX
from dicom_edge.durable import host_tag, writer_tag

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"
"""The folder, in the storage folder, of data sets still arriving."""
FILE_MODE = 0o640
"""Permissions of a received file (as :func:`dicom_edge.write_atomic` gives)."""

#: Another host's incoming folder untouched this long is a crash's leftover (removed at start).
STALE_AFTER_S = 24 * 3600.0


@dataclass
class _Folder:
    """One association's incoming folder, made when its first data set arrives."""

    path: Path
    made: bool | None = None
    """None: not tried yet; False: it could not be made (its data sets stay in memory)."""


_folders: weakref.WeakKeyDictionary[threading.Thread, _Folder] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_serial = itertools.count(1)


def file_prefix() -> str:
    """The name prefix of this process's incoming files: hidden, with host and pid."""
    return f".c-store.{writer_tag()}."


def _place() -> tuple[Path, str] | None:
    """Called by pynetdicom in the receiving thread: this association's folder, if it has one.

    The folder is made here, at the association's first data set (only its own network
    thread asks for it).
    """
    folder = _folders.get(threading.current_thread())
    if folder is None:
        return None
    if folder.made is None:
        folder.made = make_folder(folder.path)
    return (folder.path, file_prefix()) if folder.made else None


def make_folder(path: Path) -> bool:
    """Make an association's incoming folder; False (logged) if it cannot be made."""
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        log.error("Cannot create %s (data sets stay in memory): %s", path, exc)
        return False
    return True


def start(event: Event, storage_dir: Path) -> None:
    """EVT_CONN_OPEN: this association's data sets will go to files in a folder of its own.

    The folder is made when the first data set arrives; if it cannot be made, the data sets
    stay in memory (the handler copes with both).
    """
    folder = _Folder(storage_dir / INCOMING_DIR / f"{writer_tag()}.{next(_serial)}")
    with _lock:
        # Idempotent; checked at every association in case something else took the hook.
        compat.receive_c_store_into_files(_place, suffix=PART_SUFFIX, mode=FILE_MODE)
        _folders[event.assoc.dul] = folder


def finish(event: Event) -> None:
    """EVT_CONN_CLOSE: remove the association's folder and what a cut data set left in it."""
    with _lock:
        folder = _folders.pop(event.assoc.dul, None)
    if folder is not None and folder.made:
        shutil.rmtree(folder.path, ignore_errors=True)


def remove_leftovers(storage_dir: Path, pid: int | None = None) -> None:
    """Remove the incoming folders this host's processes left (at start-up), or one's (it died).

    At start-up, another host's folder (a listener in another container sharing the volume)
    is removed only once it is :data:`STALE_AFTER_S` old: it may be receiving right now.
    """
    root = storage_dir / INCOMING_DIR
    if pid is not None:
        for folder in root.glob(f"{writer_tag(pid)}.*"):
            shutil.rmtree(folder, ignore_errors=True)
        return
    if not root.is_dir():
        return
    ours = f"{host_tag()}_"
    stale_before = time.time() - STALE_AFTER_S
    for folder in root.iterdir():
        try:
            stale = folder.stat().st_mtime < stale_before
        except OSError:
            continue
        if folder.name.startswith(ours) or stale:
            shutil.rmtree(folder, ignore_errors=True)
