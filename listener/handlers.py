"""DICOM event handlers: C-ECHO and C-STORE. They receive their dependencies as arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

import compat
import db.receiving
from dicom_edge import set_tcp_nodelay, write_atomic
from dicom_edge.durable import flush_file, move_into_place
from listener.errors import (
    ImageTooLargeError,
    InvalidInstanceError,
    InvalidUIDError,
    MissingImageAttributeError,
    NotAnImageError,
    OutOfResourcesError,
)
from listener.inspection import ReceivedInstance, inspect_dataset, inspect_file
from listener.interruptions import AssociationSeries, QuietPeriods
from listener.recorder import InstanceRecorder, PendingRecord
from listener.resources import ResourceGuard
from listener.status import StoreStatus
from listener.storage import file_meta_bytes
from listener.tally import AssociationTally
from listener.text import printable

log = logging.getLogger(__name__)

ERROR_COMMENT_LENGTH = 64
#: Threads that read received files' headers while the handlers flush them: associations
#: receiving at once beyond this many wait for a free one.
READER_THREADS = 8


@dataclass(frozen=True)
class StoreContext:
    """What the C-STORE handler needs, bound once when the server starts."""

    storage_dir: Path
    recorder: InstanceRecorder
    guard: ResourceGuard
    max_image_pixels: int
    wait_for_database: bool = False
    record_timeout_s: float = 30.0
    fsync: bool = True
    quiet_periods: QuietPeriods = field(default_factory=QuietPeriods)
    """Shared with the completion monitor: restarted when an association is aborted."""
    associations: AssociationSeries = field(init=False)
    tally: AssociationTally = field(default_factory=AssociationTally)
    """Instances stored and refused per association, logged when it ends."""
    readers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(READER_THREADS, thread_name_prefix="header")
    )
    """Read received files' headers while the handler flushes them to disk (the disk's wait
    and the CPU's work overlap); shut down with the server."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "associations", AssociationSeries(self.quiet_periods))


def handle_echo(event: Event) -> int:
    """Answer C-ECHO with success."""
    return StoreStatus.SUCCESS


#: Seconds pynetdicom's network reactor sleeps when idle (its default, 1 ms, is paid twice
#: per instance because a sender waits for each response; see docs/benchmarks.md).
DUL_LOOP_DELAY_S = 0.0002


#: pynetdicom's logging of every PDU and DIMSE message it sends and receives (its "standard"
#: handlers): at INFO a line per image ("Received Store Request"), and at any level about
#: 0.3 ms of CPU per 512 KiB image spent formatting its DEBUG lines (docs/benchmarks.md).
MESSAGE_LOG_EVENTS = (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT)


def handle_connection_open(event: Event) -> None:
    """Turn Nagle's algorithm off and shorten the reactors' waits for this association.

    Without TCP_NODELAY every small PDU waits for a delayed ACK (about 40 ms). The network
    reactor sleeps less when idle, and the association's reactor serves a request as soon as
    it is whole instead of at its next 1 ms poll. pynetdicom's logging of every message is
    unbound too, unless its logger is at DEBUG: what an association stored is logged once,
    when it ends (:class:`listener.tally.AssociationTally`).
    """
    compat.set_reactor_delay(event.assoc, DUL_LOOP_DELAY_S)
    compat.wake_reactor_on_messages(event.assoc)
    set_tcp_nodelay(event)
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        for message_event in MESSAGE_LOG_EVENTS:
            bound = cast(
                list[tuple[Callable[..., object], object]], event.assoc.get_handlers(message_event)
            )
            for handler, _ in list(bound):  # notification events: a list of (handler, args)
                if handler.__module__ == "pynetdicom._handlers":
                    event.assoc.unbind(message_event, handler)


def handle_released(event: Event, context: StoreContext) -> None:
    """EVT_RELEASED: the sender ended the association normally."""
    context.associations.released(event)


def handle_connection_close(event: Event, context: StoreContext) -> None:
    """EVT_CONN_CLOSE: an association that ends without release restarts its series' quiet.

    What it stored and refused is logged (once per association, not per image).
    """
    context.associations.closed(event)
    context.tally.closed(event)


def handle_store(event: Event, context: StoreContext) -> int | Dataset:
    """Store one instance durably, queue its record, and only then answer success.

    pynetdicom wrote the data set to a file as it arrived (:mod:`listener.incoming`): the
    header is read from that file up to the pixel data, and the file is flushed and renamed
    into place. (An association whose incoming folder could not be made is received in memory
    and written out here.)
    """
    answer = _store(event, context)
    context.tally.count(event, stored=isinstance(answer, int) and answer == StoreStatus.SUCCESS)
    return answer


def _store(event: Event, context: StoreContext) -> int | Dataset:
    calling_ae = str(event.assoc.requestor.ae_title).strip()
    request = cast(C_STORE, event.request)
    sop_instance_uid = str(request.AffectedSOPInstanceUID)
    syntax = str(event.context.transfer_syntax)
    try:
        context.guard.check_disk()
        received = _received_file(event)
        if received is not None:
            instance, size = read_while_flushing(context, received, request, syntax)
            target = context.storage_dir / instance.relpath
            move_into_place(received, target, fsync=context.fsync, flushed=True)
        else:
            instance, size = _store_from_memory(event, context, syntax)
    except OutOfResourcesError as exc:
        return _refuse(StoreStatus.OUT_OF_RESOURCES, calling_ae, sop_instance_uid, exc)
    except InvalidUIDError as exc:
        return _refuse(StoreStatus.INVALID_UID, calling_ae, sop_instance_uid, exc)
    except NotAnImageError as exc:
        return _refuse(StoreStatus.NOT_AN_IMAGE, calling_ae, sop_instance_uid, exc)
    except MissingImageAttributeError as exc:
        return _refuse(
            StoreStatus.MISSING_CT_ATTRIBUTE, calling_ae, sop_instance_uid, exc, exc.keywords
        )
    except ImageTooLargeError as exc:
        return _refuse(StoreStatus.IMAGE_TOO_LARGE, calling_ae, sop_instance_uid, exc)
    except InvalidInstanceError as exc:
        return _refuse(StoreStatus.CANNOT_UNDERSTAND, calling_ae, sop_instance_uid, exc)
    except OSError as exc:
        return _refuse(StoreStatus.OUT_OF_RESOURCES, calling_ae, sop_instance_uid, exc)

    context.associations.stored(event, instance.series_instance_uid)
    ticket = context.recorder.submit(
        PendingRecord(
            instance=instance,
            calling_ae_title=calling_ae,
            record=db.receiving.InstanceRecord(
                sop_instance_uid=instance.sop_instance_uid,
                sop_class_uid=instance.sop_class_uid,
                path=instance.relpath.as_posix(),
                transfer_syntax_uid=syntax,
                size_bytes=size,
                received_at=datetime.now(UTC),
            ),
        )
    )
    if context.wait_for_database and not context.recorder.wait_for(
        ticket, context.record_timeout_s
    ):
        # The file is durable and will be recorded; the sender may safely send it again.
        if context.recorder.refused(ticket):
            log.error(
                "C-STORE of %s: the database refused its record (its file is recorded by the "
                "start-up scan)",
                sop_instance_uid,
            )
        else:
            log.error(
                "C-STORE of %s: database record not committed within %.0f s",
                sop_instance_uid,
                context.record_timeout_s,
            )
        return StoreStatus.OUT_OF_RESOURCES
    return StoreStatus.SUCCESS


def read_while_flushing(
    context: StoreContext, received: Path, request: C_STORE, syntax: str
) -> tuple[ReceivedInstance, int]:
    """Read and check the file's header in a reader thread while this one flushes the file.

    The flush's system call leaves the GIL to the reader, so the disk's wait and the header's
    CPU work overlap. (The other way round, a flush thread first had to win the GIL that the
    header read held, and the two hardly overlapped: 0.25-0.3 ms more per image, see
    docs/benchmarks.md.) Raises what either raises; the read never outlives the answer.
    Without flushes (``durability = os``) the header is read here.
    """

    def read() -> tuple[ReceivedInstance, int]:
        return inspect_file(
            received,
            transfer_syntax_uid=syntax,
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            max_image_pixels=context.max_image_pixels,
        )

    if not context.fsync:
        return read()
    reading = context.readers.submit(read)
    try:
        flush_file(received)
    finally:
        wait([reading])
    return reading.result()


def _received_file(event: Event) -> Path | None:
    """The file pynetdicom wrote the data set to, or None when it was kept in memory."""
    try:
        path = event.dataset_path
    except AttributeError:  # not a C-STORE request
        return None
    return None if path is None else Path(path)


def _store_from_memory(
    event: Event, context: StoreContext, syntax: str
) -> tuple[ReceivedInstance, int]:
    """Check a data set received in memory and write it durably with its file meta."""
    request = cast(C_STORE, event.request)
    stream = cast(BytesIO, request.DataSet)
    stream.seek(0)
    instance = inspect_dataset(
        stream,
        transfer_syntax_uid=syntax,
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=str(request.AffectedSOPInstanceUID),
        max_image_pixels=context.max_image_pixels,
    )
    meta = file_meta_bytes(
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_instance_uid,
        transfer_syntax_uid=syntax,
    )
    with stream.getbuffer() as body:
        write_atomic(context.storage_dir / instance.relpath, [meta, body], fsync=context.fsync)
        return instance, len(meta) + body.nbytes


def _refuse(
    status: StoreStatus,
    calling_ae: str,
    sop_instance_uid: str,
    exc: Exception,
    offending: tuple[str, ...] = (),
) -> Dataset:
    """Log a refusal and answer it with the status, an Error Comment and the offending tags."""
    log.warning(
        "C-STORE of %s from %s refused with 0x%04X (%s): %s",
        sop_instance_uid[:64],
        calling_ae,
        int(status),
        status.name,
        exc,
    )
    answer = Dataset()
    answer.Status = int(status)
    # Error Comment is LO: 64 characters, no backslash or control characters.
    answer.ErrorComment = printable(str(exc))[:ERROR_COMMENT_LENGTH]
    tags = [Tag(keyword) for keyword in offending]
    if tags:
        answer.OffendingElement = tags
    return answer
