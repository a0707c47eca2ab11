"""What a client needs to reach a server (ours or external); also the content of a state file."""

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
    owner_token: str | None = None  # also in data_dir's marker file: `postgres stop` deletes only that dir

    def url(self, database: str | None = None) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(database or self.database, safe='')}"

    def env(self) -> dict[str, str]:
        """The variables a test suite reads: DATABASE_URL plus libpq's own PG* names."""
        values = {
            "DATABASE_URL": self.url(),
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
