"""kombu's filesystem transport (the embedded folder queue), with every message read whole.

kombu's ``filesystem`` channel writes a message in place: it opens the final ``.msg`` file, then
writes it. A consumer that lists the folder between the two reads an empty (or a partial) file
and raises ``JSONDecodeError`` out of Celery's consumer loop: the worker stops, and ``up`` with
it, and the message is lost (kombu issue #1551). Seen here in the end-to-end study test.

This channel writes each message under a hidden temporary name in the same folder, flushes it to
disk and renames it into place, so a consumer sees a message whole or not at all; and a message
that cannot be read all the same (a crash's leftover) is logged and dropped rather than stopping
the worker: its job is still in the database's outbox, and the listener's reconciler publishes
it again. Everything else is kombu's. The overridden methods are protected ones of kombu's
channel, hence this module in ``compat`` (``tests/test_folder_queue.py`` checks they still
exist).

Celery and kombu use it through ``broker_transport`` (:func:`transport_for`), never through the
URL's scheme: ``filesystem://`` stays the setting that users write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

TRANSPORT = "compat.folder_queue:Transport"
"""This transport, as kombu's ``transport`` argument and Celery's ``broker_transport`` name it."""


def transport_for(broker_url: str) -> str | None:
    """The transport for a broker URL: this one for the folder queue, else the URL's own."""
    return TRANSPORT if broker_url.startswith("filesystem://") else None


class Channel(filesystem.Channel):
    """kombu's filesystem channel, whose messages appear in the folder only once written."""

    # kombu's own signature; its base class names the message "message" (kombu's classes differ).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu's own name (the consumer takes messages in its sorted order, and by its queue).
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Hidden, and not ending in ".<queue>.msg": no consumer takes it while it is written.
        temporary = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(temporary, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))  # type: ignore[no-untyped-call]
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        try:
            return super()._get(queue)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # JSONDecodeError: an empty or cut message file
            log.error(
                "A message of queue %s could not be read (%s) and is dropped; the listener's "
                "reconciler publishes its job again",
                queue,
                exc,
            )
            raise Empty() from exc


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`."""

    Channel = Channel
