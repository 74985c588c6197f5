"""The console's key, from which the dashboard forms' CSRF tokens are derived.

Sessions themselves live in the database (``db.console_sessions``). A key made up per process
would make every open page's forms stale when the service restarts. Unless
``api.session_secret`` is set, the key is derived from the data folder's site key
(``db.site_key``, made once, mode 600), for this purpose only: one secret file per site, and
every console on the folder, after a restart or beside another, derives the same key.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from db.site_key import site_key

#: What the forms' key is derived for: no other use of the site key derives the same key.
PURPOSE = b"stroke-triage console forms v1"


def session_secret(configured: str | None, data_dir: Path) -> str:
    """``configured`` if set, else a key derived from the data folder's site key."""
    if configured:
        return configured
    return hmac.new(site_key(data_dir), PURPOSE, hashlib.sha256).hexdigest()
