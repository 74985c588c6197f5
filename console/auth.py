"""Who is asking: API tokens, dashboard sessions kept on the server, and CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import db.console_sessions
import db.tokens
from console.tokens import token_sha256
from db.engine import SessionFactory
from db.enums import TokenScope
from db.rows import ApiToken

#: Name of the dashboard's session cookie.
COOKIE_NAME = "stroke_triage_session"

#: A dashboard login lasts this long (unless logged out earlier).
COOKIE_MAX_AGE_S = 12 * 3600


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name and scope."""

    token_id: int
    name: str
    scope: TokenScope

    @property
    def is_admin(self) -> bool:
        """Whether the caller may act and see patient name and ID."""
        return self.scope is TokenScope.ADMIN


def _principal(token: ApiToken) -> Principal:
    return Principal(token.id, token.name, token.scope)


class Authenticator:
    """Checks API tokens and dashboard sessions against the database."""

    def __init__(self, *, sessions: SessionFactory, secret: str) -> None:
        """Build it from the database sessions and the key that derives CSRF tokens."""
        self._sessions = sessions
        self._secret = secret.encode()

    def from_token(self, token: str) -> Principal | None:
        """Return the caller owning this (unrevoked) token, or None."""
        digest = token_sha256(token)
        with self._sessions() as session:
            # Looked up by the token's SHA-256: a timing side channel would reveal the hash of
            # a stored token at best, not a token.
            found = db.tokens.find_active_token(session=session, token_sha256=digest)
            if found is None:
                return None
            principal = _principal(found)
            if db.tokens.touch_token(session=session, token_id=found.id):
                session.commit()
            return principal

    def start_session(self, principal: Principal) -> str:
        """Start a dashboard session; return the cookie value (a random secret)."""
        cookie = secrets.token_urlsafe(32)
        with self._sessions() as session:
            db.console_sessions.start_session(
                session=session,
                token_id=principal.token_id,
                secret_sha256=token_sha256(cookie),
                lifetime=timedelta(seconds=COOKIE_MAX_AGE_S),
            )
            session.commit()
        return cookie

    def from_session(self, cookie: str) -> Principal | None:
        """Return the caller of a live session (not logged out, not expired, token valid)."""
        with self._sessions() as session:
            token = db.console_sessions.live_session_token(
                session=session, secret_sha256=token_sha256(cookie)
            )
            return None if token is None else _principal(token)

    def end_session(self, cookie: str) -> bool:
        """End a dashboard session on the server (logout); return whether it was live."""
        with self._sessions() as session:
            ended = db.console_sessions.end_session(
                session=session, secret_sha256=token_sha256(cookie)
            )
            session.commit()
        return ended

    def csrf_token(self, cookie: str) -> str:
        """Return the CSRF token of a session, which the dashboard's forms send back."""
        return hmac.new(self._secret, f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, cookie: str, sent: str) -> bool:
        """Return whether a form's CSRF token belongs to this session."""
        return hmac.compare_digest(self.csrf_token(cookie), sent)
