"""Text from a received data set made safe to record and to answer with.

A scanner's free text may hold control characters: a NUL in Series Description (C strings
padded with zeros), an escape sequence, a line feed. PostgreSQL refuses a NUL in text for good,
and the record would be refused again from the file at every start; the others break logs and
the console's tables. They are replaced by spaces wherever text is recorded.
"""

from __future__ import annotations

import unicodedata


def recordable(text: str, length: int) -> str:
    """``text`` with each control character replaced by a space, stripped, at most ``length``."""
    scrubbed = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return scrubbed.strip()[:length].rstrip()


def printable(text: str) -> str:
    """``text`` as an Error Comment holds it (LO): printable ASCII without backslash."""
    return "".join(c if " " <= c <= "~" and c != "\\" else " " for c in text).strip()
