"""The console's cookie key: configured, or made once and kept in the data folder."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

import db.tokens
from console.app import create_app
from console.session_key import KEY_FILE_NAME, session_secret
from console.tokens import new_token, token_sha256
from db.engine import SessionFactory
from db.enums import TokenScope
from stroke_triage.settings import Settings


def test_a_configured_key_wins_and_nothing_is_written(tmp_path: Path) -> None:
    assert session_secret("from-the-settings", tmp_path) == "from-the-settings"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_the_key_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    first = session_secret(None, tmp_path / "data")
    assert len(first) >= 32
    assert session_secret(None, tmp_path / "data") == first
    mode = stat.S_IMODE((tmp_path / "data" / KEY_FILE_NAME).stat().st_mode)
    assert mode == 0o600


def test_a_login_survives_a_restart_of_the_console(
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
    assert cookies
    with TestClient(
        create_app(settings.console_runtime()), cookies=cookies
    ) as after:  # a new process's app
        assert after.get("/api/series").status_code == 200
    with TestClient(
        create_app(settings.model_copy(update={"data_dir": tmp_path / "other"}).console_runtime())
    ) as (elsewhere):
        elsewhere.cookies.update(cookies)
        assert elsewhere.get("/api/series").status_code == 401  # another folder, another key
