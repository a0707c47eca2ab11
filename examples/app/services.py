"""The service layer: every function takes an AsyncConnection, so a test decides the transaction."""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

SESSION_TTL = timedelta(hours=8)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)


class AuthError(Exception):
    """Bad credentials, an unknown or expired session, or a CSRF token that does not match."""


class NotFound(Exception):
    """The object does not exist in the caller's workspace (other workspaces are invisible, not forbidden)."""


@dataclass(frozen=True)
class LoginSession:
    token: str
    csrf_token: str
    user_id: uuid.UUID
    workspace_id: uuid.UUID


def validate_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL_RE.match(email) or len(email) > 254:
        raise ValueError(f"not an email address: {email!r}")
    return email


def validate_password(password: str) -> str:
    if len(password) < 10 or password.isalpha() or password.isdigit():
        raise ValueError("password: at least 10 characters, not only letters or only digits")
    return password


async def create_workspace(
    conn: AsyncConnection, name: str, workspace_id: uuid.UUID | None = None
) -> uuid.UUID:
    workspace_id = workspace_id or uuid.uuid4()
    await conn.execute(
        text("INSERT INTO workspaces (id, name) VALUES (:id, :name)"), {"id": workspace_id, "name": name}
    )
    return workspace_id


async def register_user(
    conn: AsyncConnection, workspace_id: uuid.UUID, email: str, password: str
) -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO users (id, workspace_id, email, password_hash) "
            "VALUES (:id, :ws, :email, crypt(:pw, gen_salt('bf', 4)))"
        ),
        {
            "id": user_id,
            "ws": workspace_id,
            "email": validate_email(email),
            "pw": validate_password(password),
        },
    )
    return user_id


async def login(conn: AsyncConnection, workspace_id: uuid.UUID, email: str, password: str) -> LoginSession:
    row = (
        await conn.execute(
            text(
                "SELECT id FROM users WHERE workspace_id = :ws AND email = :email "
                "AND password_hash = crypt(:pw, password_hash)"
            ),
            {"ws": workspace_id, "email": email.strip().lower(), "pw": password},
        )
    ).first()
    if row is None:
        raise AuthError("invalid email or password")
    session = LoginSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), row.id, workspace_id)
    await conn.execute(
        text("INSERT INTO sessions (token, user_id, csrf_token, expires_at) VALUES (:t, :u, :c, :e)"),
        {
            "t": session.token,
            "u": row.id,
            "c": session.csrf_token,
            "e": datetime.now(timezone.utc) + SESSION_TTL,
        },
    )
    return session


async def authenticate(conn: AsyncConnection, token: str, *, now: datetime | None = None) -> LoginSession:
    row = (
        await conn.execute(
            text(
                "SELECT s.token, s.csrf_token, s.user_id, u.workspace_id, s.expires_at FROM sessions s "
                "JOIN users u ON u.id = s.user_id WHERE s.token = :t"
            ),
            {"t": token},
        )
    ).first()
    if row is None or row.expires_at <= (now or datetime.now(timezone.utc)):
        raise AuthError("unknown or expired session")
    return LoginSession(row.token, row.csrf_token, row.user_id, row.workspace_id)


async def logout(conn: AsyncConnection, token: str) -> None:
    await conn.execute(text("DELETE FROM sessions WHERE token = :t"), {"t": token})


async def check_csrf(conn: AsyncConnection, token: str, csrf_token: str | None) -> LoginSession:
    """The session, if the CSRF token matches it (constant-time); AuthError otherwise."""
    session = await authenticate(conn, token)
    if not csrf_token or not hmac.compare_digest(session.csrf_token.encode(), csrf_token.encode()):
        raise AuthError("CSRF token missing or wrong")
    return session


async def add_note(
    conn: AsyncConnection, session: LoginSession, title: str, body: str, key: str
) -> uuid.UUID:
    note_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO notes (id, workspace_id, author_id, title, body_encrypted) "
            "VALUES (:id, :ws, :author, :title, app_encrypt(:body, :key))"
        ),
        {
            "id": note_id,
            "ws": session.workspace_id,
            "author": session.user_id,
            "title": title,
            "body": body,
            "key": key,
        },
    )
    return note_id


async def read_note(
    conn: AsyncConnection, session: LoginSession, note_id: uuid.UUID, key: str
) -> tuple[str, str]:
    row = (
        await conn.execute(
            text(
                "SELECT title, app_decrypt(body_encrypted, :key) AS body FROM notes WHERE id = :id AND workspace_id = :ws"
            ),
            {"id": note_id, "ws": session.workspace_id, "key": key},
        )
    ).first()
    if row is None:
        raise NotFound(f"note {note_id}")
    return row.title, row.body


async def list_notes(conn: AsyncConnection, session: LoginSession) -> list[str]:
    rows = await conn.execute(
        text("SELECT title FROM notes WHERE workspace_id = :ws ORDER BY title"), {"ws": session.workspace_id}
    )
    return [r.title for r in rows]


async def raw_body(conn: AsyncConnection, note_id: uuid.UUID) -> bytes:
    """The stored ciphertext, as a database dump would show it."""
    return (
        await conn.execute(text("SELECT body_encrypted FROM notes WHERE id = :id"), {"id": note_id})
    ).scalar_one()
