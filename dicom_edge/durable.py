"""Durable, atomic file writes: temporary file, fsync, rename, fsync of the folder.

A folder made for a file (a new study's, a new series') is itself an entry of its parent
folder, which is flushed too: under POSIX only an fsync of the parent makes that entry
survive a power cut. This costs one flush per new folder, none per file after the first.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

PART_SUFFIX = ".part"
"""Suffix of temporary files; a file with it is never whole."""


def writer_tag(pid: int | None = None) -> str:
    """``<host>_<pid>``: which process wrote a temporary file, in its name (this one by default).

    Listeners in separate containers may share a storage volume and have the same pid: the host
    name tells them apart, so that a recovery removes only the files of the process that died.
    The host part holds letters, digits and ``-`` only, the pid digits only: ``.<host>_<pid>.``
    matches no other writer's tag, and no part of a UID.
    """
    return f"{host_tag()}_{os.getpid() if pid is None else pid}"


@functools.cache
def host_tag() -> str:
    """This host's name as temporary file names carry it (letters, digits and ``-``)."""
    name = socket.gethostname()
    tag = re.sub(r"[^A-Za-z0-9-]", "-", name) or "host"
    if len(tag) > 40:  # a long FQDN: keep file names short, and distinct
        tag = f"{tag[:31]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return tag


def write_atomic(
    path: Path, data: bytes | Sequence[bytes | memoryview], *, fsync: bool = True
) -> Path:
    """Write ``data`` (bytes, or pieces in order) to ``path``, whole or not at all.

    The bytes go to a hidden temporary file in the same folder, are flushed to disk, and the
    file is renamed over ``path``; then the folder is flushed so that the rename survives a
    power cut (and the parent of each folder created for it, so that the folder does). A crash
    leaves at most a ``.<name>.<host>_<pid>.<random>.part`` file (:func:`writer_tag`).

    Args:
        path: The file to write; its folder (and its parents) are created if missing.
        data: The content, as bytes or as a sequence of pieces.
        fsync: Whether to flush the file and its folder to disk (off only for benchmarks
            and throw-away data).

    Returns:
        ``path``.
    """
    folder = path.parent
    temp = folder / f".{path.name}.{writer_tag()}.{os.urandom(4).hex()}{PART_SUFFIX}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    except FileNotFoundError:  # the folder's first file: create it (not a stat per write)
        make_folder(folder, fsync=fsync)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    pieces = [data] if isinstance(data, bytes) else data
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    _rename(temp, path, fsync=fsync)
    return path


def move_into_place(temp: Path, path: Path, *, fsync: bool = True, flushed: bool = False) -> Path:
    """Make a finished file durable and give it its name: fsync, rename, fsync of the folder.

    The same guarantee as :func:`write_atomic`, for a file already written in full elsewhere on
    the same file system (a C-STORE data set written as it arrived): once this returns,
    ``path`` holds the whole file and survives a power cut; if it raises, ``path`` is as
    before. ``temp`` is never copied.

    Args:
        temp: The finished file (its writer may still hold it open; nothing more is written).
        path: Its name from now on; its folder (and its parents) are created if missing.
        fsync: Whether to flush the file and the folder to disk.
        flushed: :func:`flush_file` has flushed ``temp`` already (while the caller did other
            work); only the rename and the folder's flush are left.

    Returns:
        ``path``.
    """
    if fsync and not flushed:
        flush_file(temp)
    _rename(temp, path, fsync=fsync)
    return path


def flush_file(path: Path) -> None:
    """fsync a finished file (its data and size) through a descriptor of its own."""
    fd = os.open(path, os.O_WRONLY)  # any descriptor flushes the file's data
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(folder: Path, *, fsync: bool = True) -> None:
    """Create ``folder`` and its missing parents; with ``fsync``, make each new entry durable.

    The parent of every folder created here is flushed (top down), so that a file answered as
    durable in ``folder`` is not lost with its folder's entry in a power cut.
    """
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    if fsync:
        for created in reversed(missing):
            _fsync_dir(created.parent)


def _rename(temp: Path, path: Path, *, fsync: bool) -> None:
    """Rename ``temp`` over ``path``, creating its folder if missing; fsync the folder."""
    folder = path.parent
    try:
        os.replace(temp, path)
    except FileNotFoundError:
        if folder.is_dir() or not temp.exists():
            raise
        make_folder(folder, fsync=fsync)  # the folder's first file (not a stat each)
        os.replace(temp, path)
    if fsync:
        _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
