"""API tokens: only the SHA-256 of each secret is stored, never the secret itself.

Every function takes the caller's ``session``, flushes, and never commits.
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from db._query import one, utc
from db.enums import TokenScope
from db.errors import DbError
from db.models import ApiToken

logger = logging.getLogger(__name__)


class TokenNameTakenError(DbError):
    """A token with this name exists already."""


def create_token(
    *,
    session: Session,
    name: str,
    scope: TokenScope,
    token_sha256: str,
    now: datetime | None = None,
) -> ApiToken:
    """Store a new token by the hash of its secret.

    Raises:
        TokenNameTakenError: The name is in use (revoked tokens keep their name).
    """
    exists = session.execute(select(ApiToken.id).where(ApiToken.name == name)).first()
    if exists is not None:
        raise TokenNameTakenError(f"A token named {name!r} exists already; choose another name.")
    token = ApiToken(name=name, scope=scope, token_sha256=token_sha256, created_at=utc(now))
    session.add(token)
    session.flush()
    logger.info("API token %s created with scope %s.", name, scope)
    return token


def find_active_token(*, session: Session, token_sha256: str) -> ApiToken | None:
    """Return the unrevoked token whose secret hashes to ``token_sha256``, or None."""
    statement = select(ApiToken).where(
        ApiToken.token_sha256 == token_sha256, ApiToken.revoked_at.is_(None)
    )
    return session.execute(statement).scalar_one_or_none()


#: ``last_used_at`` is rewritten at most this often: a write per API read would contend with
#: the listener's writes (one writer at a time on SQLite) for a date nobody needs to the second.
TOUCH_EVERY = timedelta(minutes=1)


def touch_token(*, session: Session, token_id: int, now: datetime | None = None) -> bool:
    """Record that a token was just used, unless that was recorded in the last minute.

    Returns:
        Whether a row was written (commit then).
    """
    now = utc(now)
    written: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - TOUCH_EVERY),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(written.rowcount)


def list_tokens(*, session: Session) -> list[ApiToken]:
    """Return every token, revoked ones included, oldest first."""
    return list(session.execute(select(ApiToken).order_by(ApiToken.id)).scalars())


def revoke_token(*, session: Session, name: str, now: datetime | None = None) -> ApiToken:
    """Revoke the token with this name; revoking twice keeps the first time.

    Raises:
        NotFoundError: No token has this name.
    """
    token = one(session, select(ApiToken).where(ApiToken.name == name), f"token named {name!r}")
    if token.revoked_at is None:
        token.revoked_at = utc(now)
        logger.info("API token %s revoked.", name)
    session.flush()
    return token


def get_token(*, session: Session, token_id: int) -> ApiToken | None:
    """Return the token with this id (revoked or not), or None."""
    return session.get(ApiToken, token_id)
