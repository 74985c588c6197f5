"""HL7 v2.5.1 ORU^R01 over MLLP: built and parsed with hl7apy, acknowledged by the receiver.

The message control ID (MSH-10) is the notification's idempotency key, so an interface
engine can drop a resend it has already processed. ``AA``/``CA`` is success; ``AE``, ``AR``,
``CE``, ``CR``, an ACK for another message, or no ACK at all is a failure that is retried.

With ``tls = true`` the MLLP frames go over TLS (verified like the other channels). The Patient
ID (PID-3) and name (PID-5) are sent only with ``include_patient_identifiers = true``, as an
e-mail names the patient only with ``include_patient_name``.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from db.clock import utcnow
from worker.errors import ErrorCode, describe_network_error
from worker.notify.config import Hl7Destination
from worker.notify.errors import NotificationError
from worker.notify.message import Notice
from worker.notify.tls import client_context

log = logging.getLogger(__name__)

VERSION = "2.5.1"
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
ACCEPTED = frozenset({"AA", "CA"})
UNKNOWN_PATIENT = "UNKNOWN"
"""PID-3 and PID-5 when the patient's ID and name are not sent (``include_patient_identifiers``
is false) or absent."""
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
    msh.msh_7 = _timestamp(now or utcnow())
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = notice.key
    msh.msh_11 = destination.processing_id
    msh.msh_12 = VERSION
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    # PID-3 is required: without the opt-in (or a Patient ID) it says UNKNOWN, and the receiver
    # matches the order by accession number (OBR-3, OBR-18).
    identified = destination.include_patient_identifiers
    patient.pid.pid_3 = (_escape(ids.patient_id) if identified else "") or UNKNOWN_PATIENT
    # PID-5 is required too (hl7apy's strict validation): UNKNOWN unless opted in and known.
    name = patient_name_xpn(ids.patient_name) if identified else ""
    patient.pid.pid_5 = name or UNKNOWN_PATIENT
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.obr
    obr.obr_1 = "1"
    if ids.accession_number:
        obr.obr_3 = _escape(ids.accession_number)
        obr.obr_18 = _escape(ids.accession_number)
    # The service is named after the model's finding (AI ICH triage); old results say stroke.
    finding = str(payload.get("finding_name") or "stroke")
    obr.obr_4 = f"{_escape(finding.upper())}-AI^AI {_escape(finding)} triage^{CODING_SYSTEM}"
    obr.obr_7 = _hl7_time(payload.get("received_at"))
    obr.obr_22 = _hl7_time(payload.get("reported_at")) or _timestamp(now or utcnow())
    # HL7 table 0123: C, a correction of the final result sent before (the study's report was
    # revised by a better series); F otherwise.
    revised = notice.revises is not None and notice.failure is None
    obr.obr_25 = "C" if revised else "F"
    observations: list[tuple[str, str, str]] = []
    if notice.verdict is not None:
        observations.append(("ST", f"VERDICT^Triage verdict^{CODING_SYSTEM}", notice.verdict))
    if payload.get("probability") is not None:
        observations += [
            (
                "NM",
                f"PROB^Probability of the finding^{CODING_SYSTEM}",
                f"{payload['probability']:.4f}",
            ),
            ("NM", f"THRESH^Decision threshold^{CODING_SYSTEM}", f"{payload['threshold']:.4f}"),
        ]
    if payload.get("model_version"):
        model = f"{payload['model_name']} {payload['model_version']}"
        observations.append(("ST", f"MODEL^Model^{CODING_SYSTEM}", _escape(model)))
    observations.append(
        ("ST", f"STUDYUID^Study Instance UID^{CODING_SYSTEM}", payload["study_instance_uid"])
    )
    # Added after the original five, so that OBX set IDs 1-5 keep their meaning.
    if notice.finding_text:
        observations.append(
            ("ST", f"FINDING^Finding^{CODING_SYSTEM}", _escape(notice.finding_text))
        )
    if notice.failure is not None:
        observations.append(("ST", f"FAILURE^Failure^{CODING_SYSTEM}", str(notice.failure)))
    if payload.get("reason"):
        observations.append(("ST", f"REASON^Reason^{CODING_SYSTEM}", _escape(payload["reason"])))
    if notice.series_text:
        observations.append(
            ("ST", f"SERIES^Classified series^{CODING_SYSTEM}", _escape(notice.series_text))
        )
    if revised and notice.revision_text:
        observations.append(
            ("ST", f"REVISES^Revised report^{CODING_SYSTEM}", _escape(notice.revision_text))
        )
    if notice.preview_url:
        # RP: a reference pointer to an image (IM, JPEG) held by our console (it needs a token).
        observations.append(
            (
                "RP",
                f"PREVIEW^Preview of the key slices^{CODING_SYSTEM}",
                f"{_escape(notice.preview_url)}^{_escape(destination.sending_application)}^IM^JPEG",
            )
        )
    if notice.failure is None:
        # A multi-output model's further findings: a probability each, no verdict of their own.
        for further in payload.get("further_findings") or []:
            name = _escape(str(further["finding_name"]).upper())
            meaning = _escape(str(further["finding_meaning"]))
            observations.append(
                (
                    "NM",
                    f"PROB-{name}^Probability of {meaning}^{CODING_SYSTEM}",
                    f"{float(further['probability']):.4f}",
                )
            )
    for number, (value_type, code, value) in enumerate(observations, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(number)
        obx.obx_2 = value_type
        obx.obx_3 = code
        obx.obx_5 = value
        obx.obx_11 = "C" if revised else "F"  # HL7 table 0085, as OBR-25
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
            raise NotificationError(
                "The HL7 peer closed the connection without an ACK.", code=ErrorCode.BAD_ANSWER
            )
        data += chunk
        if len(data) > limit:
            raise NotificationError(
                "The HL7 peer sent a frame over 1 MiB.", code=ErrorCode.BAD_ANSWER
            )
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
        raise NotificationError(
            "The HL7 ACK could not be parsed.", code=ErrorCode.BAD_ANSWER, detail=repr(exc)
        ) from exc
    if acked != control_id:
        raise NotificationError(
            f"The HL7 ACK is for another message than {control_id}.",
            code=ErrorCode.BAD_ANSWER,
            detail=f"MSA-2 {acked!r}",
        )
    if code not in ACCEPTED:
        # The ACK code is from HL7 table 0008; its text (MSA-3) is the peer's, for the log.
        raise NotificationError(
            f"The HL7 peer answered {_ack_code(code)} to {control_id}.",
            code=ErrorCode.REFUSED,
            detail=f"MSA-3 {text!r}",
        )


def _ack_code(code: str) -> str:
    known = {"AE": "AE (application error)", "AR": "AR (application reject)"}
    known |= {"CE": "CE (commit error)", "CR": "CR (commit reject)"}
    return known.get(code, "an unknown acknowledgment code")


def send(destination: Hl7Destination, notice: Notice) -> None:
    """Send the ORU^R01 over MLLP (over TLS when ``tls`` is set) and wait for its ACK.

    Raises:
        NotificationError: No connection, a TLS failure, no ACK, or a negative ACK (AE/AR).
    """
    message = build_oru(destination, notice)
    try:
        with _connect(destination) as connection:
            connection.sendall(frame(message))
            ack = read_frame(connection)
    except OSError as exc:
        code, words = describe_network_error(exc)
        raise NotificationError(
            f"The HL7 destination {destination.name} is not reachable: {words}.",
            code=code,
            detail=repr(exc),
        ) from exc
    check_ack(ack, control_id=notice.key)
    log.info("HL7 %s: ORU %s acknowledged", destination.name, notice.key)


def _connect(destination: Hl7Destination) -> socket.socket:
    """A connection to the interface engine; with ``tls``, a verified TLS one."""
    connection = socket.create_connection(
        (destination.host, destination.port), timeout=destination.timeout_s
    )
    if not destination.tls:
        return connection
    context = client_context(verify=destination.verify_tls, ca_file=destination.ca_file)
    try:
        return context.wrap_socket(connection, server_hostname=destination.host)
    except OSError:
        connection.close()
        raise
