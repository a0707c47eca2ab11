"""run/databases.py on a real server, through psql and through the driver (server/psql.py): the same
databases, the same checks, the same one-line errors."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from db_test_action.errors import DbTestActionError
from db_test_action.run.databases import Databases
from db_test_action.server.info import ServerInfo
from db_test_action.server.psql import find_psql


@pytest.fixture(params=["psql", "driver"])
def psql(request: pytest.FixtureRequest) -> Path | None:
    if request.param == "driver":
        return None
    found = find_psql()
    assert found is not None, "the server's bin directory has psql"
    return found


def _databases(info: ServerInfo) -> set[str]:
    with psycopg.connect(info.url("postgres"), autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def role(pg_server: ServerInfo) -> Iterator[str]:
    """A role that may log in, nothing more."""
    name = f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_create_and_drop_a_run_database_with_any_name(pg_server: ServerInfo, psql: Path | None) -> None:
    databases = Databases(pg_server, owns_server=True, psql=psql)
    name = f"dta \"{uuid.uuid4().hex[:6]}\" 'x'"
    url = databases.create(name)
    assert name in _databases(pg_server)
    with psycopg.connect(url, autocommit=True) as conn:  # cloned from template1: pgcrypto is there
        assert conn.execute("SELECT crypt('x', gen_salt('bf')) IS NOT NULL").fetchone() == (True,)
        assert databases.drop(name) is None  # WITH (FORCE): this open session does not stop it
    assert name not in _databases(pg_server)
    assert databases.drop(name) is None  # IF EXISTS


def test_an_external_superuser_clones_template1(pg_server: ServerInfo, psql: Path | None) -> None:
    databases = Databases(pg_server, owns_server=False, psql=psql)
    assert (databases.admin_db, databases.template, databases.major) == (
        "postgres",
        "template1",
        pg_server.version,
    )


def test_a_role_that_may_not_create_databases_is_told_to_get_createdb(
    pg_server: ServerInfo, psql: Path | None, role: str
) -> None:
    info = dataclasses.replace(pg_server, user=role)
    with pytest.raises(DbTestActionError, match=f"user '{role}' may not create databases; grant CREATEDB"):
        Databases(info, owns_server=False, psql=psql)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(role)))
    databases = Databases(info, owns_server=False, psql=psql)
    assert databases.template == pg_server.database  # no superuser: the extensions live in the target only


def test_a_template_in_use_and_a_closed_port_are_one_line_each(
    pg_server: ServerInfo, psql: Path | None
) -> None:
    busy = f"busy_{uuid.uuid4().hex[:6]}"
    databases = Databases(pg_server, owns_server=True, psql=psql)
    databases.create(busy)
    try:
        databases.template = busy
        with psycopg.connect(pg_server.url(busy)), pytest.raises(DbTestActionError) as caught:
            databases.create(f"clone_{uuid.uuid4().hex[:6]}")
        assert f"close other sessions on '{busy}'" in str(caught.value)
    finally:
        databases.drop(busy)
    closed = dataclasses.replace(pg_server, port=1)
    with pytest.raises(DbTestActionError, match="cannot connect; check the URL and that the server is up"):
        Databases(closed, owns_server=False, psql=psql)
