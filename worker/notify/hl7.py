"""HL7 v2.5.1 ORU^R01 over MLLP: built and parsed with hl7apy, acknowledged by the receiver.

The message control ID (MSH-10) is the notification's idempotency key, so an interface
engine can drop a resend it has already processed. ``AA``/``CA`` is success; ``AE``, ``AR``,
``CE``, ``CR``, an ACK for another message, or no ACK at all is a failure that is retried.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from worker.notify.config import Hl7Destination
from worker.notify.errors import NotificationError
from worker.notify.message import Notice

log = logging.getLogger(__name__)

VERSION = "2.5.1"
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
ACCEPTED = frozenset({"AA", "CA"})
CODING_SYSTEM = "99STROKETRIAGE"
"""A local coding system (HL7 table 0396 reserves ``99zzz`` for local codes)."""


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _hl7_time(iso: str | None) -> str:
    return _timestamp(datetime.fromisoformat(iso)) if iso else ""


def build_oru(destination: Hl7Destination, notice: Notice, *, now: datetime | None = None) -> str:
    """The ORU^R01 message of one notice, validated by hl7apy, in ER7 (segments end in CR)."""
    payload = notice.payload
    ids = notice.identifiers
    message = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msh = message.msh
    msh.msh_3 = destination.sending_application
    msh.msh_4 = destination.sending_facility
    msh.msh_5 = destination.receiving_application
    msh.msh_6 = destination.receiving_facility
    msh.msh_7 = _timestamp(now or datetime.now(UTC))
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = notice.key
    msh.msh_11 = destination.processing_id
    msh.msh_12 = VERSION
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    # PID-3 is required; a series without Patient ID is matched by accession number (OBR).
    patient.pid.pid_3 = _escape(ids.patient_id) or "UNKNOWN"
    if ids.patient_name:
        patient.pid.pid_5 = patient_name_xpn(ids.patient_name)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.obr
    obr.obr_1 = "1"
    if ids.accession_number:
        obr.obr_3 = _escape(ids.accession_number)
        obr.obr_18 = _escape(ids.accession_number)
    obr.obr_4 = f"STROKE-AI^AI stroke triage^{CODING_SYSTEM}"
    obr.obr_7 = _hl7_time(payload.get("received_at"))
    obr.obr_22 = _hl7_time(payload.get("reported_at")) or _timestamp(now or datetime.now(UTC))
    obr.obr_25 = "F"
    observations: list[tuple[str, str, str]] = [
        ("ST", f"VERDICT^Stroke triage verdict^{CODING_SYSTEM}", notice.verdict),
    ]
    if payload.get("probability") is not None:
        observations += [
            ("NM", f"PROB^Probability of stroke^{CODING_SYSTEM}", f"{payload['probability']:.4f}"),
            ("NM", f"THRESH^Decision threshold^{CODING_SYSTEM}", f"{payload['threshold']:.4f}"),
        ]
    if payload.get("model_version"):
        model = f"{payload['model_name']} {payload['model_version']}"
        observations.append(("ST", f"MODEL^Model^{CODING_SYSTEM}", _escape(model)))
    observations.append(
        ("ST", f"STUDYUID^Study Instance UID^{CODING_SYSTEM}", payload["study_instance_uid"])
    )
    if payload.get("reason"):
        observations.append(("ST", f"REASON^Reason^{CODING_SYSTEM}", _escape(payload["reason"])))
    for number, (value_type, code, value) in enumerate(observations, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(number)
        obx.obx_2 = value_type
        obx.obx_3 = code
        obx.obx_5 = value
        obx.obx_11 = "F"
    message.validate()
    return str(message.to_er7())


def patient_name_xpn(name: str) -> str:
    """A DICOM Person Name as an HL7 XPN, each component escaped.

    Only the first (alphabetic) group of the PN is used. DICOM orders the components family,
    given, middle, prefix, suffix; XPN orders them family, given, middle, suffix, prefix.
    """
    alphabetic = name.split("=", maxsplit=1)[0]
    family, given, middle, prefix, suffix = [*alphabetic.split("^"), "", "", "", ""][:5]
    components = [_escape(part.strip()) for part in (family, given, middle, suffix, prefix)]
    return "^".join(components).rstrip("^")


def _escape(text: str) -> str:
    # HL7 escape sequences for the delimiters (escape character first).
    for char, escaped in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\")):
        text = text.replace(char, escaped)
    return text.replace("~", "\\R\\").replace("\r", " ").replace("\n", " ")


def frame(message: str) -> bytes:
    """The MLLP frame of one message."""
    return START_BLOCK + message.encode("utf-8") + END_BLOCK


def read_frame(connection: socket.socket, *, limit: int = 1 << 20) -> str:
    """Read one MLLP frame and return the message in it.

    Raises:
        NotificationError: The peer closed the connection before a whole frame came.
    """
    data = b""
    while END_BLOCK not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise NotificationError("The HL7 peer closed the connection without an ACK.")
        data += chunk
        if len(data) > limit:
            raise NotificationError("The HL7 peer sent a frame over 1 MiB.")
    start = data.find(START_BLOCK)
    return data[start + 1 : data.index(END_BLOCK)].decode("utf-8", errors="replace")


def check_ack(ack: str, *, control_id: str) -> None:
    """Raise NotificationError unless ``ack`` accepts the message ``control_id``."""
    try:
        parsed = parse_message(ack.replace("\n", "\r"), find_groups=False)
        code = str(parsed.msa.msa_1.value)
        acked = str(parsed.msa.msa_2.value)
        text = str(parsed.msa.msa_3.value) if parsed.msa.msa_3.value else ""
    except (HL7apyException, AttributeError, IndexError) as exc:
        raise NotificationError(f"The HL7 ACK could not be parsed: {exc}") from exc
    if acked != control_id:
        raise NotificationError(f"The HL7 ACK is for message {acked!r}, not {control_id!r}.")
    if code not in ACCEPTED:
        raise NotificationError(f"The HL7 peer answered {code} to {control_id}: {text}".strip())


def send(destination: Hl7Destination, notice: Notice) -> None:
    """Send the ORU^R01 over MLLP and wait for its ACK.

    Raises:
        NotificationError: No connection, no ACK, or a negative ACK (AE/AR).
    """
    message = build_oru(destination, notice)
    try:
        with socket.create_connection(
            (destination.host, destination.port), timeout=destination.timeout_s
        ) as connection:
            connection.sendall(frame(message))
            ack = read_frame(connection)
    except OSError as exc:
        raise NotificationError(
            f"The HL7 destination {destination.name} is not reachable: {exc}"
        ) from exc
    check_ack(ack, control_id=notice.key)
    log.info("HL7 %s: ORU %s acknowledged", destination.name, notice.key)
