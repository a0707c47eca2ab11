"""/login, /me and /logout: status codes and session lifetime."""

from datetime import datetime, timedelta, timezone

import pytest
from app import api, services
from app.api import Request

PASSWORD = "correct horse 1"


async def _register(conn, workspace, email="ana@example.com"):
    await services.register_user(conn, workspace, email, PASSWORD)


async def _login(conn, workspace, email="ana@example.com", password=PASSWORD):
    body = {"workspace": str(workspace), "email": email, "password": password}
    return await api.handle(conn, Request("POST", "/login", body))


async def test_login_returns_session_and_csrf(conn, workspace):
    await _register(conn, workspace)
    response = await _login(conn, workspace)
    assert response.status == 200 and response.json["token"] and response.json["csrf"]


@pytest.mark.parametrize(
    "email,password", [("ana@example.com", "wrong password 1"), ("nobody@example.com", PASSWORD)]
)
async def test_bad_credentials_are_401(conn, workspace, email, password):
    await _register(conn, workspace)
    assert (await _login(conn, workspace, email, password)).status == 401


async def test_login_in_other_workspace_is_401(conn, workspace, other_workspace):
    await _register(conn, workspace)
    assert (await _login(conn, other_workspace)).status == 401


async def test_me_with_token(conn, workspace):
    await _register(conn, workspace)
    token = (await _login(conn, workspace)).json["token"]
    response = await api.handle(conn, Request("GET", "/me", headers={"authorization": f"Bearer {token}"}))
    assert response.status == 200 and response.json["workspace"] == str(workspace)


async def test_expired_session_is_rejected(conn, workspace):
    await _register(conn, workspace)
    session = await services.login(conn, workspace, "ana@example.com", PASSWORD)
    later = datetime.now(timezone.utc) + services.SESSION_TTL + timedelta(seconds=1)
    with pytest.raises(services.AuthError):
        await services.authenticate(conn, session.token, now=later)


async def test_logout_ends_the_session(conn, workspace):
    await _register(conn, workspace)
    body = (await _login(conn, workspace)).json
    headers = {"authorization": f"Bearer {body['token']}", "x-csrf-token": body["csrf"]}
    assert (await api.handle(conn, Request("POST", "/logout", headers=headers))).status == 204
    assert (await api.handle(conn, Request("GET", "/me", headers=headers))).status == 401


async def test_login_without_password_is_400(conn, workspace):
    response = await api.handle(
        conn, Request("POST", "/login", {"workspace": str(workspace), "email": "a@b.co"})
    )
    assert response.status == 400
