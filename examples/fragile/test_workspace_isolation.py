"""A workspace never sees another workspace's users, notes or sessions."""

import pytest
from app import api, services
from app.api import Request

PASSWORD = "correct horse 1"


async def _member(conn, workspace, email="ana@example.com"):
    await services.register_user(conn, workspace, email, PASSWORD)
    return await services.login(conn, workspace, email, PASSWORD)


@pytest.mark.parametrize(
    "title", ["roadmap", "salaries", "incident 42", "board minutes", "offsite", "pricing"]
)
async def test_note_of_other_workspace_is_not_found(conn, workspace, other_workspace, title):
    owner = await _member(conn, other_workspace, "owner@example.com")
    note = await services.add_note(conn, owner, title, "secret", api.ENCRYPTION_KEY)
    intruder = await _member(conn, workspace)
    with pytest.raises(services.NotFound):
        await services.read_note(conn, intruder, note, api.ENCRYPTION_KEY)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
async def test_listing_shows_only_own_workspace(conn, workspace, other_workspace, count):
    mine = await _member(conn, workspace)
    theirs = await _member(conn, other_workspace, "bob@example.com")
    for i in range(count):
        await services.add_note(conn, mine, f"mine {i}", "x", api.ENCRYPTION_KEY)
        await services.add_note(conn, theirs, f"theirs {i}", "x", api.ENCRYPTION_KEY)
    assert await services.list_notes(conn, mine) == [f"mine {i}" for i in range(count)]


@pytest.mark.parametrize("email", ["ana@example.com", "ANA@example.com"])
async def test_same_email_is_a_different_user_per_workspace(conn, workspace, other_workspace, email):
    await services.register_user(conn, workspace, "ana@example.com", PASSWORD)
    await services.register_user(conn, other_workspace, email, "another pass 2")
    with pytest.raises(services.AuthError):
        await services.login(conn, workspace, email, "another pass 2")


@pytest.mark.parametrize("path", ["/notes", "/me", "/notes/00000000-0000-4000-8000-00000000abcd", "/nowhere"])
async def test_api_answers_within_the_session_workspace(conn, workspace, other_workspace, path):
    session = await _member(conn, workspace)
    response = await api.handle(
        conn, Request("GET", path, headers={"authorization": f"Bearer {session.token}"})
    )
    if path == "/me":
        assert response.json["workspace"] == str(workspace)
    elif path == "/notes":
        assert response.json == {"titles": []}
    else:
        assert response.status == 404
