"""What a client needs to reach a server (ours or external): the state file's content and the URL forms.

Kept apart from the launcher so the runner, the state file and the URL options share it without
importing the code that starts servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from db_test_action.errors import EXIT_USAGE, DbTestActionError

SUPERUSER = "postgres"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Everything a client (or `postgres stop`) needs; this is also the state file's content."""

    host: str
    port: int
    user: str
    database: str
    password: str | None = None
    data_dir: str | None = None  # None: not ours (external URL mode)
    pid: int | None = None
    version: int | None = None
    log_file: str | None = None  # the server's stderr: start-up and fatal messages
    server_log_dir: str | None = None  # the logging collector's directory
    server_log_format: str | None = None  # "jsonlog" (PostgreSQL 15+) or "csvlog"
    # What the suite expects: the URL's scheme (`url_driver`) and more variables holding the same URL.
    url_driver: str | None = None
    url_envs: tuple[str, ...] = ()
    owner_token: str | None = None  # also in data_dir's marker file: `postgres stop` deletes only that dir

    def url(self, database: str | None = None) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database or self.database, safe='')}"

    def suite_url(self, database: str | None = None) -> str:
        """The URL in the form the suite asked for (`--url-driver`): `postgresql+asyncpg://…`."""
        return with_driver(self.url(database), self.url_driver)

    def env(self) -> dict[str, str]:
        """The variables a test suite reads: DATABASE_URL (and --db-url-env names) plus libpq's PG* names."""
        url = self.suite_url()
        values = {
            "DATABASE_URL": url,
            **dict.fromkeys(self.url_envs, url),
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            values["PGPASSWORD"] = self.password
        return values


def parse_url(url: str) -> ServerInfo:
    """A `postgresql://` URL as ServerInfo; also accepts SQLAlchemy's `postgresql+asyncpg://`."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise DbTestActionError(
            f"--database-url: {redact(url)!r} is not a PostgreSQL URL; use postgresql://user@host:port/db",
            EXIT_USAGE,
        )
    return ServerInfo(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username or SUPERUSER),
        password=unquote(parts.password) if parts.password else None,
        database=unquote(parts.path.lstrip("/")) or "postgres",
    )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


DRIVERS = {
    "asyncpg": "postgresql+asyncpg",
    "psycopg": "postgresql+psycopg",
    "psycopg2": "postgresql+psycopg2",
}
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.")


def parse_url_driver(value: str) -> str | None:
    """`asyncpg`/`psycopg`/`psycopg2`, or a literal scheme such as `postgresql+asyncpg` or `postgres`."""
    text = value.strip().lower().removesuffix("://")
    if not text:
        return None
    if text in DRIVERS:
        return DRIVERS[text]
    if not text.startswith("postgres") or not set(text) <= _SCHEME_CHARS:
        raise DbTestActionError(
            f"--url-driver: {value!r} is not a driver or a postgres scheme; use asyncpg, psycopg, psycopg2 "
            "or a scheme such as postgresql+asyncpg",
            EXIT_USAGE,
        )
    return text


def with_driver(url: str, scheme: str | None) -> str:
    """The same URL under another scheme (None: unchanged)."""
    if not scheme:
        return url
    return scheme + url[url.index("://") :]


def parse_url_envs(value: str) -> tuple[str, ...]:
    """`TEST_DATABASE_URL, ASYNC_URL` → names; each must be a variable name."""
    names = tuple(n for n in value.replace(",", " ").split() if n)
    for name in names:
        if not (name[0].isalpha() or name[0] == "_") or not name.replace("_", "").isalnum():
            raise DbTestActionError(
                f"--db-url-env: {name!r} is not an environment variable name; use letters, digits and _, "
                "e.g. TEST_DATABASE_URL",
                EXIT_USAGE,
            )
    return names
