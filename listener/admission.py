"""Who may associate: our called AE title (when required), the calling-AE allow-list, IP pinning,
back-pressure, the association limit.

pynetdicom's own ``require_calling_aet`` cannot see the peer's address, so the decision is
taken in an ``EVT_REQUESTED`` handler, which runs after the A-ASSOCIATE-RQ is read and before
negotiation; it answers A-ASSOCIATE-RJ itself.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from enum import IntEnum

from pynetdicom.events import Event

import compat
import listener.metrics
from listener.balance import AcceptBalance
from listener.config import ListenerConfig
from listener.errors import OutOfResourcesError
from listener.resources import ResourceGuard

log = logging.getLogger(__name__)


class RejectResult(IntEnum):
    """A-ASSOCIATE-RJ result field."""

    PERMANENT = 0x01
    TRANSIENT = 0x02


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: result, source, diagnostic (PS3.8 9.3.4), and why, for the log."""

    result: RejectResult
    source: int
    diagnostic: int
    reason: str


def _networks(
    addresses: list[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(text, strict=False) for text in addresses]


class AdmissionPolicy:
    """Decides whether to accept an association request."""

    def __init__(
        self, *, config: ListenerConfig, guard: ResourceGuard, balance: AcceptBalance | None = None
    ) -> None:
        """Decide by ``config``; ``balance`` counts every receiving process's connections.

        With one process pynetdicom enforces ``max_associations`` itself; with several, each
        process's pynetdicom sees only its own, so the limit across them is checked here.
        """
        self._max_associations = config.max_associations
        # None: any called AE title is accepted (the default, as most PACS nodes do).
        self._called = config.ae_title.strip() if config.require_called_ae_title else None
        self._balance = balance
        self._allowed = {title.strip() for title in config.allowed_calling_ae_titles}
        self._pinned = {
            title.strip(): _networks(addresses)
            for title, addresses in config.calling_ae_addresses.items()
        }
        self._guard = guard

    def decide(
        self, *, calling_ae_title: str, address: str, called_ae_title: str | None = None
    ) -> Rejection | None:
        """Return why to reject the request, or None to accept it."""
        if self._called is not None and (called_ae_title or "").strip() != self._called:
            # Permanent, service user, called AE title not recognised (PS3.8 9.3.4).
            return Rejection(RejectResult.PERMANENT, 0x01, 0x07, "called AE title not recognised")
        title = calling_ae_title.strip()
        if self._allowed and title not in self._allowed:
            return Rejection(RejectResult.PERMANENT, 0x01, 0x03, "calling AE title not allowed")
        networks = self._pinned.get(title)
        if networks is not None and not _address_in(address, networks):
            return Rejection(
                RejectResult.PERMANENT, 0x01, 0x03, "calling AE title not allowed from address"
            )
        if self._balance is not None and self._balance.total_open() > self._max_associations:
            # Transient, service provider (presentation), local limit exceeded: retry later.
            return Rejection(
                RejectResult.TRANSIENT, 0x03, 0x02, "too many associations in all processes"
            )
        try:
            self._guard.check()
        except OutOfResourcesError as exc:
            # Transient, presentation related, temporary congestion: the sender retries later.
            return Rejection(RejectResult.TRANSIENT, 0x03, 0x01, str(exc))
        return None


def _address_in(
    address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def handle_association_request(event: Event, policy: AdmissionPolicy) -> None:
    """EVT_REQUESTED: reject the association here, or let negotiation go on."""
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    calling = primitive.calling_ae_title if primitive is not None else ""
    called = str(primitive.called_ae_title if primitive is not None else "").strip()
    title = str(calling).strip()
    address = str(assoc.requestor.address)
    rejection = policy.decide(calling_ae_title=title, address=address, called_ae_title=called)
    if rejection is None:
        return
    log.warning(
        "Association from %s at %s to %s rejected: %s",
        title or "(none)",
        address,
        called or "(none)",
        rejection.reason,
    )
    listener.metrics.association_refused(
        reason=rejection.reason, transient=rejection.result == RejectResult.TRANSIENT
    )
    compat.reject_and_close(
        assoc,
        result=int(rejection.result),
        source=rejection.source,
        diagnostic=rejection.diagnostic,
    )
