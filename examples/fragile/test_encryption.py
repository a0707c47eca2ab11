"""Note bodies are encrypted by pgcrypto inside PostgreSQL (app_encrypt/app_decrypt)."""

import pytest
from app import api, services
from sqlalchemy.exc import DBAPIError

PASSWORD = "correct horse 1"


async def _author(conn, workspace):
    await services.register_user(conn, workspace, "ana@example.com", PASSWORD)
    return await services.login(conn, workspace, "ana@example.com", PASSWORD)


@pytest.mark.parametrize("body", ["hello", "ünïcødé ✓", "x" * 5000])
async def test_round_trip(conn, workspace, body):
    author = await _author(conn, workspace)
    note = await services.add_note(conn, author, "t", body, api.ENCRYPTION_KEY)
    assert await services.read_note(conn, author, note, api.ENCRYPTION_KEY) == ("t", body)


async def test_stored_body_is_not_plaintext(conn, workspace):
    author = await _author(conn, workspace)
    note = await services.add_note(conn, author, "t", "attack at dawn", api.ENCRYPTION_KEY)
    assert b"attack at dawn" not in await services.raw_body(conn, note)


async def test_same_body_encrypts_differently(conn, workspace):
    author = await _author(conn, workspace)
    first = await services.add_note(conn, author, "a", "same", api.ENCRYPTION_KEY)
    second = await services.add_note(conn, author, "b", "same", api.ENCRYPTION_KEY)
    assert await services.raw_body(conn, first) != await services.raw_body(conn, second)


async def test_wrong_key_does_not_decrypt(conn, workspace):
    author = await _author(conn, workspace)
    note = await services.add_note(conn, author, "t", "secret", api.ENCRYPTION_KEY)
    with pytest.raises(DBAPIError, match="Wrong key"):
        async with conn.begin_nested():  # the failed statement rolls back to the savepoint only
            await services.read_note(conn, author, note, "not the key")
