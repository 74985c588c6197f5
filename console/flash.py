"""How an admin button's result reaches the next page: a signed, short-lived query parameter.

The page shows the line only when the console itself signed it within the last minute, so a
crafted link (``/series/X?message=Report%20delivered``) cannot put words in the console's mouth.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

#: How long after the button a result is still shown (a reload later shows nothing).
MAX_AGE_S = 60


class Flash:
    """Signs and reads the one-line results of admin buttons."""

    def __init__(self, secret: str) -> None:
        """Sign with ``secret`` (the console's form key), for this purpose only."""
        self._serializer = URLSafeTimedSerializer(secret, salt="stroke-triage flash")

    def sign(self, text: str) -> str:
        """The query value that carries ``text``."""
        return self._serializer.dumps(text)

    def read(self, value: str | None) -> str | None:
        """The text of a value this console signed less than a minute ago; None otherwise."""
        if not value:
            return None
        try:
            text = self._serializer.loads(value, max_age=MAX_AGE_S)
        except BadSignature:  # forged, damaged or too old (SignatureExpired is one)
            return None
        return text if isinstance(text, str) else None
