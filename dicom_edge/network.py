"""DICOM network peers: AE titles, the PACS destinations we send to, socket options."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # only for the annotation: the settings import this module, not pynetdicom
    from pynetdicom.events import Event

log = logging.getLogger(__name__)

AE_TITLE_MAX = 16


def check_ae_title(value: str) -> str:
    """Return the AE title stripped, or raise ValueError if DICOM does not allow it.

    An AE title is 1 to 16 characters of the default repertoire, without backslash or
    control characters, and not all spaces (leading and trailing spaces are insignificant).
    """
    text = value.strip()
    if not text or len(text) > AE_TITLE_MAX or "\\" in text or not text.isprintable():
        raise ValueError(
            f"AE title {value!r} is not valid: "
            "it must be 1 to 16 printable characters, no backslash."
        )
    return text


AETitle = Annotated[str, AfterValidator(check_ae_title)]
"""A validated, stripped DICOM AE title (for pydantic fields)."""


class PacsDestination(BaseModel):
    """A DICOM node that receives our reports by C-STORE, written ``AE@host:port``."""

    model_config = ConfigDict(frozen=True)

    ae_title: AETitle = Field(description="The PACS's AE title (called AE).")
    host: str
    port: int = Field(ge=1, le=65535)
    shadow: bool = Field(
        False, description="Also receives reports in shadow mode (e.g. a test PACS)."
    )

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> PacsDestination:
        """Parse ``AE@host:port``, for example ``ORTHANC@127.0.0.1:4242``.

        Raises:
            ValueError: If the text is not of that form.
        """
        ae_title, at, address = text.strip().partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and ae_title and host and port.isdigit()):
            raise ValueError(f"The destination {text!r} is not of the form AE@host:port.")
        if not 0 < int(port) < 65536:
            raise ValueError(f"The port {port} lies outside 1-65535.")
        return cls(ae_title=ae_title, host=host.strip("[]"), port=int(port))


def set_tcp_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: turn Nagle's algorithm off on the association's socket.

    Without TCP_NODELAY every small PDU (a C-STORE request, its response) waits for a
    delayed ACK, about 40 ms. pynetdicom has no socket-option setting; EVT_CONN_OPEN fires
    once the socket is connected and before the first PDU is sent.
    """
    transport = event.assoc.dul.socket
    try:
        if transport is not None and transport.socket is not None:
            transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("Could not set TCP_NODELAY: %s", exc)
