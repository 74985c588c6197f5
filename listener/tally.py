"""What each association stored and refused, logged once when it ends instead of per image."""

from __future__ import annotations

import logging
import threading
import time

from pynetdicom.events import Event

log = logging.getLogger(__name__)


class AssociationTally:
    """Instances stored and refused per open association (by the association's identity)."""

    def __init__(self) -> None:
        """No association counted yet."""
        self._counts: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def count(self, event: Event, *, stored: bool) -> None:
        """One C-STORE answered on the event's association: stored, or refused."""
        key = id(event.assoc)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0, 0, time.monotonic()]
            counts[0 if stored else 1] += 1

    def closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: log what the association stored and refused (if it sent anything)."""
        with self._lock:
            counts = self._counts.pop(id(event.assoc), None)
        if counts is None:
            return
        stored, refused, first = counts
        log.info(
            "Association from %s ended: %d instances stored, %d refused, in %.1f s",
            str(event.assoc.requestor.ae_title).strip(),
            stored,
            refused,
            time.monotonic() - first,
        )
