"""Engine and schema: the async engine from DATABASE_URL, the pgcrypto wrapper functions, the tables."""

from __future__ import annotations

import os

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.models import Base

# Wrappers so the application (and reports, and psql users) call one name whatever the cipher options.
# s2k-count at its minimum keeps the example fast; a real deployment would keep pgcrypto's default.
CRYPTO_FUNCTIONS = (
    """
    CREATE OR REPLACE FUNCTION app_encrypt(plain text, key text) RETURNS bytea
    LANGUAGE sql VOLATILE STRICT
    AS $$ SELECT pgp_sym_encrypt(plain, key, 'cipher-algo=aes256, s2k-count=1024') $$
    """,
    """
    CREATE OR REPLACE FUNCTION app_decrypt(data bytea, key text) RETURNS text
    LANGUAGE sql STABLE STRICT
    AS $$ SELECT pgp_sym_decrypt(data, key) $$
    """,
)


def async_url(url: str | None = None) -> str:
    """DATABASE_URL (postgresql://…) as SQLAlchemy's asyncpg URL."""
    url = url or os.environ["DATABASE_URL"]
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgresql", "postgres") else url


def make_engine(url: str | None = None, *, pooled: bool = True) -> AsyncEngine:
    kwargs = {} if pooled else {"poolclass": NullPool}
    engine = create_async_engine(async_url(url), **kwargs)
    event.listen(engine.sync_engine, "do_connect", _name_connection)
    return engine


def _name_connection(dialect, conn_rec, cargs, cparams) -> None:  # type: ignore[no-untyped-def]
    """asyncpg ignores PGAPPNAME; pass it on, so the server log names the test (db-test-action sets it to
    `<worker> <node id>` around every test) and a report can tell which test collided with which."""
    name = os.environ.get("PGAPPNAME")
    if name:
        cparams.setdefault("server_settings", {})["application_name"] = name


async def install_functions(conn: AsyncConnection) -> None:
    for ddl in CRYPTO_FUNCTIONS:
        await conn.execute(text(ddl))


async def create_schema(conn: AsyncConnection) -> None:
    """What the migrations would do: functions, then tables."""
    await install_functions(conn)
    await conn.run_sync(Base.metadata.create_all)
