"""E-mail over SMTP with STARTTLS and login; no patient name unless the destination allows it."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from worker.notify.config import EmailDestination
from worker.notify.errors import NotificationError
from worker.notify.message import Notice
from worker.notify.tls import client_context

log = logging.getLogger(__name__)


def subject(notice: Notice) -> str:
    """``AI STROKE TRIAGE: SUSPECTED - <accession>`` (the series UID when there is none)."""
    reference = notice.identifiers.accession_number or notice.payload["series_instance_uid"]
    return f"AI STROKE TRIAGE: {notice.verdict} - {reference}"


def body(notice: Notice, *, include_patient_name: bool) -> str:
    """The plain-text body."""
    payload = notice.payload
    lines = [f"AI stroke triage: {notice.verdict}", ""]
    if include_patient_name and notice.identifiers.patient_name:
        lines.append(f"Patient name: {notice.identifiers.patient_name}")
    lines += [
        f"Accession number: {notice.identifiers.accession_number or '-'}",
        f"Study Instance UID: {payload['study_instance_uid']}",
        f"Series Instance UID: {payload['series_instance_uid']}",
    ]
    if payload.get("probability") is not None:
        lines.append(
            f"Probability: {payload['probability']:.3f} (threshold {payload['threshold']:.3f})"
        )
    if payload.get("model_version"):
        lines.append(f"Model: {payload['model_name']} {payload['model_version']}")
    if payload.get("reason"):
        lines.append(f"Reason: {payload['reason']}")
    if notice.series_url:
        lines.append(f"Series page: {notice.series_url}")
    lines += [
        f"Received: {payload.get('received_at') or '-'}",
        f"Reported: {payload.get('reported_at') or '-'}",
        "",
        "Not for clinical use: a triage aid; the images must be read by a radiologist.",
        f"Notification {notice.key}",
    ]
    return "\n".join(lines) + "\n"


def build_message(destination: EmailDestination, notice: Notice) -> EmailMessage:
    """The e-mail of one notice."""
    message = EmailMessage()
    message["Subject"] = subject(notice)
    message["From"] = destination.sender
    message["To"] = ", ".join(destination.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{notice.key}@stroke-triage>"
    message["X-Stroke-Triage-Idempotency-Key"] = notice.key
    message.set_content(body(notice, include_patient_name=destination.include_patient_name))
    return message


def send(destination: EmailDestination, notice: Notice) -> None:
    """Send the notice's e-mail.

    Raises:
        NotificationError: Connection, STARTTLS, login or a refused recipient.
    """
    message = build_message(destination, notice)
    try:
        with smtplib.SMTP(
            destination.host, destination.port, timeout=destination.timeout_s
        ) as smtp:
            smtp.ehlo()
            if destination.starttls:
                smtp.starttls(
                    context=client_context(
                        verify=destination.verify_tls, ca_file=destination.ca_file
                    )
                )
                smtp.ehlo()
            if destination.username:
                password = destination.password.get_secret_value() if destination.password else ""
                smtp.login(destination.username, password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotificationError(
            f"The e-mail to {destination.name} was not accepted: {type(exc).__name__}: {exc}"
        ) from exc
    if refused:
        raise NotificationError(f"The SMTP server of {destination.name} refused {sorted(refused)}.")
    log.info("E-mail %s: notification %s accepted", destination.name, notice.key)
