"""The console's key (CSRF tokens of the forms): configured, or derived from the site key."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

import db.tokens
from console.app import create_app
from console.session_key import session_secret
from console.tokens import new_token, token_sha256
from db.engine import SessionFactory
from db.enums import TokenScope
from db.site_key import KEY_FILE_NAME, site_key
from stroke_triage.settings import Settings
from tests.api.web import csrf_of


def test_a_configured_key_wins_and_nothing_is_written(tmp_path: Path) -> None:
    assert session_secret("from-the-settings", tmp_path) == "from-the-settings"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_the_key_comes_from_the_site_key_for_this_purpose_only(tmp_path: Path) -> None:
    first = session_secret(None, tmp_path / "data")
    assert len(first) >= 32
    assert session_secret(None, tmp_path / "data") == first
    mode = stat.S_IMODE((tmp_path / "data" / KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600  # the one key file of the site, readable by its owner only
    assert first not in (site_key(tmp_path / "data").hex(), "")  # derived, never the site key
    assert session_secret(None, tmp_path / "other") != first


def test_a_login_and_its_forms_survive_a_restart_of_the_console(
    database_url: str, factory: SessionFactory, tmp_path: Path, redis_url: str
) -> None:
    token = new_token()
    with factory() as session:
        db.tokens.create_token(
            session=session, name="reader", scope=TokenScope.READ, token_sha256=token_sha256(token)
        )
        session.commit()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=redis_url,
        task_queue=f"test-api-{uuid.uuid4().hex[:8]}",
    )
    with TestClient(create_app(settings.console_runtime())) as before:
        answer = before.post("/login", data={"token": token}, follow_redirects=False)
        assert answer.status_code == 303
        cookies = dict(answer.cookies)
        csrf = csrf_of(before.get("/").text)
    assert cookies
    other = settings.model_copy(update={"data_dir": tmp_path / "other"})
    with TestClient(create_app(other.console_runtime()), cookies=cookies) as elsewhere:
        # The session lives in the database; the forms' CSRF tokens come from the key.
        assert elsewhere.get("/api/series").status_code == 200
        assert elsewhere.post("/logout", data={"csrf": csrf}).status_code == 403
    with TestClient(
        create_app(settings.console_runtime()), cookies=cookies
    ) as after:  # a new process's app on the same data folder
        assert csrf_of(after.get("/").text) == csrf
        assert after.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
