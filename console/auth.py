"""Who is asking: bearer tokens for the API, a signed cookie for the dashboard, and scopes."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from itsdangerous import BadSignature, URLSafeTimedSerializer

import db.tokens
from console.tokens import token_sha256
from db.engine import SessionFactory
from db.enums import TokenScope

#: Name of the dashboard's session cookie.
COOKIE_NAME = "stroke_triage_session"

#: A dashboard login lasts this long.
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


class Authenticator:
    """Checks bearer tokens and dashboard cookies against the token table."""

    def __init__(self, *, sessions: SessionFactory, secret: str) -> None:
        """Build it from the database sessions and the key that signs cookies."""
        self._sessions = sessions
        self._secret = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt="stroke-triage-console")

    def from_token(self, token: str) -> Principal | None:
        """Return the caller owning this (unrevoked) token, or None."""
        digest = token_sha256(token)
        with self._sessions() as session:
            found = db.tokens.find_active_token(session=session, token_sha256=digest)
            if found is None or not hmac.compare_digest(found.token_sha256, digest):
                return None
            db.tokens.touch_token(session=session, token_id=found.id)
            session.commit()
            return Principal(found.id, found.name, found.scope)

    def cookie_for(self, principal: Principal) -> str:
        """Return the signed cookie value of a logged-in caller (no secret inside)."""
        return self._serializer.dumps({"tid": principal.token_id})

    def from_cookie(self, value: str) -> Principal | None:
        """Return the caller of a signed cookie if its token is still valid, or None."""
        try:
            data = self._serializer.loads(value, max_age=COOKIE_MAX_AGE_S)
        except BadSignature:
            return None
        with self._sessions() as session:
            found = db.tokens.get_token(session=session, token_id=int(data["tid"]))
            if found is None or found.revoked_at is not None:
                return None
            return Principal(found.id, found.name, found.scope)

    def csrf_token(self, principal: Principal) -> str:
        """Return the CSRF token that the dashboard's forms must send back."""
        message = f"csrf:{principal.token_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def check_csrf(self, principal: Principal, sent: str) -> bool:
        """Return whether a form's CSRF token is the caller's."""
        return hmac.compare_digest(self.csrf_token(principal), sent)


def bearer_principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of an API request (bearer token, or dashboard cookie).

    Raises:
        HTTPException: 401 without a valid token.
    """
    auth: Authenticator = request.app.state.auth
    header = request.headers.get("authorization", "")
    principal = None
    if header.lower().startswith("bearer "):
        principal = auth.from_token(header[7:].strip())
    elif COOKIE_NAME in request.cookies:
        principal = auth.from_cookie(request.cookies[COOKIE_NAME])
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "A valid bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require_admin(principal: Principal) -> None:
    """Raise 403 unless the caller has the admin scope."""
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This action needs the admin scope.")
