"""The audit log: one row per admin action (who, what, on what, when, and the result).

Every function takes the caller's ``session``, flushes, and never commits.
"""

from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from db._query import utc
from db.models import AuditEntry


def record_action(
    *,
    session: Session,
    actor: str,
    action: str,
    target: str,
    result: str,
    detail: str | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Append one admin action to the audit log.

    Args:
        session: Database session.
        actor: Who acted (the API token's name, or ``cli:<user>``).
        action: What was done, e.g. ``job.requeue``.
        target: On what, e.g. ``job 12``.
        result: ``ok``, ``refused`` or ``error``.
        detail: A sentence on the outcome (no patient data).
        now: Current time.
    """
    entry = AuditEntry(
        at=utc(now), actor=actor, action=action, target=target, result=result, detail=detail
    )
    session.add(entry)
    session.flush()
    return entry


def _conditions(actor: str | None, action: str | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if actor:
        conditions.append(AuditEntry.actor == actor)
    if action:
        # "job" matches job.requeue; "job.requeue" only itself.
        conditions.append(
            or_(AuditEntry.action == action, AuditEntry.action.startswith(f"{action}."))
        )
    return conditions


def list_actions(
    *,
    session: Session,
    limit: int = 100,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
) -> list[AuditEntry]:
    """Return audit entries, newest first; optionally of one actor, one action (or family)."""
    statement = (
        select(AuditEntry)
        .where(*_conditions(actor, action))
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.execute(statement).scalars())


def count_actions(*, session: Session, actor: str | None = None, action: str | None = None) -> int:
    """How many entries :func:`list_actions` lists with these filters, over all pages."""
    statement = select(func.count(AuditEntry.id)).where(*_conditions(actor, action))
    return int(session.execute(statement).scalar_one())
