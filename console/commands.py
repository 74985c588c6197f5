"""What the console's CLI commands do: tokens, the audit log, result exports, serving."""

from __future__ import annotations

import getpass

import db.audit
import db.tokens
from console.config import ConsoleRuntime
from console.records import result_records, to_csv, to_json
from console.sessions import read_only_sessions, writing_sessions
from console.table import format_table
from console.tokens import new_token, token_sha256
from db.enums import TokenScope


def create_token(runtime: ConsoleRuntime, *, name: str, scope: str) -> int:
    """Create a token, print it once, store only its hash; audited."""
    token = new_token()
    with writing_sessions(runtime.database_url)() as session:
        db.tokens.create_token(
            session=session, name=name, scope=TokenScope(scope), token_sha256=token_sha256(token)
        )
        db.audit.record_action(
            session=session,
            actor=f"cli:{getpass.getuser()}",
            action="token.create",
            target=f"token {name}",
            result="ok",
            detail=f"scope {scope}",
        )
        session.commit()
    print(token)
    print(f"Token {name!r} ({scope}) created. It is shown only now: keep it safe.")
    return 0


def list_tokens(runtime: ConsoleRuntime) -> int:
    """Print the tokens (names, scopes, dates; never the secrets)."""
    with read_only_sessions(runtime.database_url)() as session:
        rows = [
            [
                t.name,
                t.scope,
                f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "-",
                f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-",
            ]
            for t in db.tokens.list_tokens(session=session)
        ]
    if not rows:
        print("No tokens.")
        return 0
    print(format_table(["name", "scope", "created (UTC)", "last used", "revoked"], rows))
    return 0


def revoke_token(runtime: ConsoleRuntime, *, name: str) -> int:
    """Revoke a token by name; audited."""
    with writing_sessions(runtime.database_url)() as session:
        db.tokens.revoke_token(session=session, name=name)
        db.audit.record_action(
            session=session,
            actor=f"cli:{getpass.getuser()}",
            action="token.revoke",
            target=f"token {name}",
            result="ok",
        )
        session.commit()
    print(f"Token {name!r} revoked.")
    return 0


def print_audit(runtime: ConsoleRuntime, *, limit: int) -> int:
    """Print the audit log, newest first."""
    with read_only_sessions(runtime.database_url)() as session:
        rows = [
            [f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target, e.result, e.detail or ""]
            for e in db.audit.list_actions(session=session, limit=limit)
        ]
    if not rows:
        print("No audited actions.")
        return 0
    print(format_table(["at (UTC)", "who", "what", "target", "result", "detail"], rows))
    return 0


def print_result_records(runtime: ConsoleRuntime, *, limit: int, fmt: str) -> int:
    """Print the results as CSV or JSON: the same records as ``GET /api/results``."""
    with read_only_sessions(runtime.database_url)() as session:
        records = result_records(session=session, limit=limit)
    print(to_csv(records) if fmt == "csv" else to_json(records), end="" if fmt == "csv" else "\n")
    return 0
