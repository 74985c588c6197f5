"""Token secrets: made here, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import secrets

#: Prefix of every token, so that a leaked one is easy to recognise and grep for.
TOKEN_PREFIX = "st_"


def new_token() -> str:
    """Return a new random token (32 bytes of entropy, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """Return the hex SHA-256 of a token, the only form in which it is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
