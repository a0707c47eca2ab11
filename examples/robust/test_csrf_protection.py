"""State-changing requests need the session's CSRF token; reads do not."""

import pytest
from app import api, services
from app.api import Request

PASSWORD = "correct horse 1"
WRITES = [("POST", "/notes", {"title": "t", "body": "b"}), ("POST", "/logout", {})]


async def _session(conn, workspace, email="ana@example.com"):
    await services.register_user(conn, workspace, email, PASSWORD)
    return await services.login(conn, workspace, email, PASSWORD)


def _bad_tokens(session, other):
    return {
        "missing": None,
        "empty": "",
        "wrong": "x" * 43,
        "other session's": other.csrf_token,
        "truncated": session.csrf_token[:-1],
        "session token": session.token,
    }


@pytest.mark.parametrize("method,path,body", WRITES)
@pytest.mark.parametrize(
    "kind", ["missing", "empty", "wrong", "other session's", "truncated", "session token"]
)
async def test_write_without_valid_csrf_is_forbidden(conn, workspace, method, path, body, kind):
    session = await _session(conn, workspace)
    other = await _session(conn, workspace, "bob@example.com")
    headers = {"authorization": f"Bearer {session.token}"}
    token = _bad_tokens(session, other)[kind]
    if token is not None:
        headers["x-csrf-token"] = token
    response = await api.handle(conn, Request(method, path, body, headers))
    assert response.status == 403


@pytest.mark.parametrize("method,path,body", WRITES)
async def test_write_with_csrf_is_accepted(conn, workspace, method, path, body):
    session = await _session(conn, workspace)
    headers = {"authorization": f"Bearer {session.token}", "x-csrf-token": session.csrf_token}
    response = await api.handle(conn, Request(method, path, body, headers))
    assert response.status in (201, 204)


@pytest.mark.parametrize("path", ["/notes", "/me"])
async def test_reads_need_no_csrf(conn, workspace, path):
    session = await _session(conn, workspace)
    response = await api.handle(
        conn, Request("GET", path, headers={"authorization": f"Bearer {session.token}"})
    )
    assert response.status == 200


async def test_csrf_token_differs_from_session_token(conn, workspace):
    session = await _session(conn, workspace)
    assert session.csrf_token != session.token


async def test_csrf_token_is_new_per_login(conn, workspace):
    first = await _session(conn, workspace)
    second = await services.login(conn, workspace, "ana@example.com", PASSWORD)
    assert first.csrf_token != second.csrf_token
