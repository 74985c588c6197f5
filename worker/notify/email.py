"""E-mail over SMTP with STARTTLS or implicit TLS and login; no patient name unless allowed.

A username without TLS is refused at start-up (:class:`EmailDestination`): the password is
never sent in clear.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from worker.errors import ErrorCode, describe_network_error
from worker.notify.config import EmailDestination
from worker.notify.errors import NotificationError
from worker.notify.message import Notice
from worker.notify.tls import client_context
from worker.report import decimals_for

log = logging.getLogger(__name__)


def subject(notice: Notice) -> str:
    """``AI ICH TRIAGE: SUSPECTED - <accession>`` (the series UID when there is none);
    ``AI ICH TRIAGE: SUSPECTED (REVISED) - <accession>`` when it revises an earlier report."""
    reference = notice.identifiers.accession_number or notice.payload["series_instance_uid"]
    revised = " (REVISED)" if notice.revises is not None and notice.failure is None else ""
    return f"{notice.headline}{revised} - {reference}"


def body(notice: Notice, *, include_patient_name: bool) -> str:
    """The plain-text body."""
    payload = notice.payload
    lines = [notice.headline, ""]
    if notice.finding_text:
        lines += [notice.finding_text, ""]
    if notice.further_findings_text and notice.failure is None:
        lines += [notice.further_findings_text, ""]
    if notice.revision_text and notice.failure is None:
        lines += [notice.revision_text, ""]
    if notice.failure is not None:
        lines.append(f"Failure: {notice.failure} ({payload.get('error_code') or 'unknown'})")
        if payload.get("reason"):
            lines.append(f"Reason: {payload['reason']}")
        if notice.verdict is not None:
            lines.append(f"The verdict stands: {notice.verdict}")
        lines.append("")
    if include_patient_name and notice.identifiers.patient_name:
        lines.append(f"Patient name: {notice.identifiers.patient_name}")
    lines += [
        f"Accession number: {notice.identifiers.accession_number or '-'}",
        f"Study Instance UID: {payload['study_instance_uid']}",
        f"Series Instance UID: {payload['series_instance_uid']}",
    ]
    if notice.series_text:
        lines.append(f"Classified series: {notice.series_text}")
    if payload.get("probability") is not None:
        probability, threshold = float(payload["probability"]), float(payload["threshold"])
        places = decimals_for(probability=probability, threshold=threshold)  # as the SR says
        lines.append(f"Probability: {probability:.{places}f} (threshold {threshold:.{places}f})")
    if payload.get("model_version"):
        lines.append(f"Model: {payload['model_name']} {payload['model_version']}")
    if notice.series_url:
        lines.append(f"Series page: {notice.series_url}")
    if notice.preview_url:
        lines.append(f"Preview of the key slices (log in): {notice.preview_url}")
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
    if destination.attach_preview and notice.preview_path is not None:
        try:
            image = notice.preview_path.read_bytes()
        except OSError as exc:  # purged since: the message goes without it
            log.warning("Preview %s not attached: %s", notice.preview_path.name, exc)
        else:
            message.add_attachment(
                image, maintype="image", subtype="jpeg", filename="preview-not-for-diagnosis.jpg"
            )
    return message


def send(destination: EmailDestination, notice: Notice) -> None:
    """Send the notice's e-mail (implicit TLS, or STARTTLS, before any login).

    Raises:
        NotificationError: Connection, TLS, login or a refused recipient.
    """
    message = build_message(destination, notice)
    context = client_context(verify=destination.verify_tls, ca_file=destination.ca_file)
    try:
        with _connect(destination, context) as smtp:
            smtp.ehlo()
            if destination.starttls and not destination.implicit_tls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if destination.username:
                password = destination.password.get_secret_value() if destination.password else ""
                smtp.login(destination.username, password)
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        code, words = _smtp_failure(exc)
        raise NotificationError(
            f"The e-mail to {destination.name} was not accepted: {words}.",
            code=code,
            detail=repr(exc),
        ) from exc
    if refused:
        # Partly delivered: not counted as sent. The row names who did not get it, and is
        # retried (to every recipient, with the same Message-ID, which lets a mail client
        # drop the copy the others already have).
        who = ", ".join(
            f"{address} (SMTP {answer[0]})" for address, answer in sorted(refused.items())
        )
        raise NotificationError(
            f"The SMTP server of {destination.name} refused {len(refused)} of "
            f"{len(destination.recipients)} recipients: {who}; the others got the e-mail.",
            code=ErrorCode.REFUSED,
            detail=repr(refused),
        )
    log.info("E-mail %s: notification %s accepted", destination.name, notice.key)


def _connect(destination: EmailDestination, context: ssl.SSLContext) -> smtplib.SMTP:
    if destination.implicit_tls:
        return smtplib.SMTP_SSL(
            destination.host, destination.port, timeout=destination.timeout_s, context=context
        )
    return smtplib.SMTP(destination.host, destination.port, timeout=destination.timeout_s)


def _smtp_failure(exc: BaseException) -> tuple[ErrorCode, str]:
    """The code and our words for a failed SMTP exchange (reply codes, never reply text)."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return ErrorCode.LOGIN_FAILED, f"the server refused our login (SMTP {exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return ErrorCode.REFUSED, "the server refused every recipient"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ErrorCode.REFUSED, "the server does not offer STARTTLS or our login method"
    if isinstance(exc, smtplib.SMTPResponseException):
        return ErrorCode.REFUSED, f"the server answered SMTP {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return ErrorCode.NETWORK_ERROR, "the server closed the connection"
    return describe_network_error(exc)
