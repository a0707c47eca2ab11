"""Creating and listing notes through the API."""

from app import api, services
from app.api import Request

PASSWORD = "correct horse 1"


async def _headers(conn, workspace):
    await services.register_user(conn, workspace, "ana@example.com", PASSWORD)
    session = await services.login(conn, workspace, "ana@example.com", PASSWORD)
    return {"authorization": f"Bearer {session.token}", "x-csrf-token": session.csrf_token}


async def test_create_then_list_sorted(conn, workspace):
    headers = await _headers(conn, workspace)
    for title in ("b", "a", "c"):
        assert (
            await api.handle(conn, Request("POST", "/notes", {"title": title, "body": "x"}, headers))
        ).status == 201
    response = await api.handle(conn, Request("GET", "/notes", headers=headers))
    assert response.json == {"titles": ["a", "b", "c"]}


async def test_read_created_note(conn, workspace):
    headers = await _headers(conn, workspace)
    created = await api.handle(conn, Request("POST", "/notes", {"title": "t", "body": "the body"}, headers))
    response = await api.handle(conn, Request("GET", f"/notes/{created.json['id']}", headers=headers))
    assert response.json == {"title": "t", "body": "the body"}


async def test_note_without_title_is_400(conn, workspace):
    headers = await _headers(conn, workspace)
    assert (await api.handle(conn, Request("POST", "/notes", {"body": "x"}, headers))).status == 400


async def test_unknown_endpoint_is_404(conn, workspace):
    headers = await _headers(conn, workspace)
    assert (await api.handle(conn, Request("POST", "/notes/archive", {}, headers))).status == 404
