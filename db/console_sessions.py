"""Dashboard logins kept on the server: a login starts a row, logging out ends it.

The browser's cookie carries a random secret; only its SHA-256 is stored here. A session is
live while it is neither ended nor expired and its token is not revoked. Every function takes
the caller's ``session``, flushes, and never commits.
"""

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from db._query import utc
from db.models import ApiToken, ConsoleSession

#: Ended or expired sessions are kept this long (then deleted at the next login).
KEEP_ENDED = timedelta(days=30)


def start_session(
    *,
    session: Session,
    token_id: int,
    secret_sha256: str,
    lifetime: timedelta,
    now: datetime | None = None,
) -> None:
    """Record a new login of ``token_id``; sessions over for :data:`KEEP_ENDED` are deleted."""
    now = utc(now)
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now - KEEP_ENDED))
    session.add(
        ConsoleSession(
            secret_sha256=secret_sha256,
            token_id=token_id,
            started_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()


def live_session_token(
    *, session: Session, secret_sha256: str, now: datetime | None = None
) -> ApiToken | None:
    """Return the token of the live session with this secret; None if ended, expired or revoked."""
    statement = (
        select(ApiToken)
        .join(ConsoleSession, ConsoleSession.token_id == ApiToken.id)
        .where(
            ConsoleSession.secret_sha256 == secret_sha256,
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.expires_at > utc(now),
            ApiToken.revoked_at.is_(None),
        )
    )
    return session.execute(statement).scalar_one_or_none()


def end_session(*, session: Session, secret_sha256: str, now: datetime | None = None) -> bool:
    """End the session with this secret (logout); return whether a live one was ended."""
    ended = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.secret_sha256 == secret_sha256, ConsoleSession.ended_at.is_(None))
        .values(ended_at=utc(now))
        .returning(ConsoleSession.id)
    ).all()
    session.flush()
    return bool(ended)
