"""C-STORE data sets written to a file as their fragments arrive, never copied afterwards.

pynetdicom can write a received data set to a file (preamble, file meta, the data set as
received) while its fragments arrive (``STORE_RECV_CHUNKED_DATASET``, through
:func:`compat.receive_c_store_into_files`). Each association of the listener gets its own
folder under ``<storage>/.incoming`` on the storage's file system, so that the C-STORE
handler only has to check the file, flush it and rename it into place
(:func:`dicom_edge.durable.move_into_place`). The folder goes when the connection closes,
with whatever a cut association left in it; a crash leaves ``.part`` files, removed at the
next start (:mod:`listener.recovery`, :func:`remove_leftovers`).

Which association a data set belongs to is known by the thread that receives it (the
association's network thread, pynetdicom's ``Association.dul``), hence one registry per
process, as pynetdicom's hook is one per process.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path

from pynetdicom.events import Event

import compat
from dicom_edge import PART_SUFFIX

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming"
"""The folder, in the storage folder, of data sets still arriving."""
FILE_MODE = 0o640
"""Permissions of a received file (as :func:`dicom_edge.write_atomic` gives)."""

_folders: weakref.WeakKeyDictionary[threading.Thread, Path] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_serial = itertools.count(1)


def file_prefix() -> str:
    """The name prefix of this process's incoming files: hidden, with the pid (see recovery)."""
    return f".c-store.{os.getpid()}."


def _place() -> tuple[Path, str] | None:
    """Called by pynetdicom in the receiving thread: this association's folder, if it has one."""
    folder = _folders.get(threading.current_thread())
    return None if folder is None else (folder, file_prefix())


def start(event: Event, storage_dir: Path) -> None:
    """EVT_CONN_OPEN: this association's data sets go to files in a folder of its own.

    If the folder cannot be made, its data sets stay in memory (the handler copes with both).
    """
    folder = storage_dir / INCOMING_DIR / f"{os.getpid()}.{next(_serial)}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        log.error("Cannot create %s (data sets stay in memory): %s", folder, exc)
        return
    with _lock:
        # Idempotent; checked at every association in case something else took the hook.
        compat.receive_c_store_into_files(_place, suffix=PART_SUFFIX, mode=FILE_MODE)
        _folders[event.assoc.dul] = folder


def finish(event: Event) -> None:
    """EVT_CONN_CLOSE: remove the association's folder and what a cut data set left in it."""
    with _lock:
        folder = _folders.pop(event.assoc.dul, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(storage_dir: Path, pid: int | None = None) -> None:
    """Remove the incoming folders of every process (at start-up), or of one (it died)."""
    root = storage_dir / INCOMING_DIR
    if pid is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for folder in root.glob(f"{pid}.*"):
        shutil.rmtree(folder, ignore_errors=True)
