"""Finding PostgreSQL server binaries, and naming the package to install when they are missing.

Kept apart from the launcher because the action's install step and the error messages need the
same knowledge (where Debian/Ubuntu, RHEL and Homebrew put things) without starting anything.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from db_test_action.errors import EXIT_ENV, DbTestActionError

INSTALL_HINT = "install them: sudo apt-get install postgresql postgresql-contrib"

# Extensions shipped in the contrib package; everything else names its own package below.
CONTRIB_EXTENSIONS = frozenset(
    "adminpack amcheck autoinc bloom btree_gin btree_gist citext cube dblink dict_int dict_xsyn "
    "earthdistance file_fdw fuzzystrmatch hstore insert_username intagg intarray isn lo ltree "
    "moddatetime old_snapshot pageinspect pg_buffercache pg_freespacemap pg_prewarm pg_stat_statements "
    "pg_surgery pg_trgm pg_visibility pg_walinspect pgcrypto pgrowlocks pgstattuple postgres_fdw refint "
    "seg sslinfo tablefunc tcn tsm_system_rows tsm_system_time unaccent uuid-ossp xml2 plpgsql".split()
)
_OWN_PACKAGES = {
    "postgis": "postgresql-{major}-postgis-3",
    "vector": "postgresql-{major}-pgvector",
    "timescaledb": "timescaledb-2-postgresql-{major}",
    "pg_partman": "postgresql-{major}-partman",
    "pg_cron": "postgresql-{major}-cron",
}


def package_for_extension(name: str, major: int | None) -> str:
    """The Debian/Ubuntu package that ships an extension, for the 'missing extension' message."""
    m = str(major) if major else "N"
    if name in CONTRIB_EXTENSIONS:
        return "postgresql-contrib" if major is None else f"postgresql-contrib (or postgresql-{m})"
    template = _OWN_PACKAGES.get(name, "postgresql-{major}-" + name.replace("_", "-"))
    return template.format(major=m)


def _has_server(path: Path) -> bool:
    return (
        (path / "postgres").is_file() and (path / "initdb").is_file() and os.access(path / "initdb", os.X_OK)
    )


def server_major(bin_dir: Path) -> int:
    """Major version from `postgres --version` ("postgres (PostgreSQL) 15.18 (Debian …)")."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out.stdout)
    if not match:
        raise DbTestActionError(
            f"{bin_dir}/postgres: cannot read its version ({out.stdout.strip()!r}); point --pg-bin at a PostgreSQL bin directory",
            EXIT_ENV,
        )
    return int(match.group(1))


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _version_key(path: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(path))
    return tuple(int(n) for n in nums) or (0,)


def candidate_dirs(env: Mapping[str, str]) -> list[Path]:
    """Every plausible server bin dir, in the order we prefer them (dedup keeps the first)."""
    found: list[Path] = []
    bindir = _pg_config_bindir()
    if bindir:
        found.append(bindir)
    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/opt/postgresql@*/bin"):
        found.extend(sorted((Path(p) for p in glob.glob(pattern)), key=_version_key, reverse=True))
    on_path = shutil.which("postgres", path=env.get("PATH"))
    if on_path:
        found.append(Path(on_path).resolve().parent)
    found.append(Path("/usr/local/pgsql/bin"))
    unique: list[Path] = []
    for path in found:
        if path not in unique and _has_server(path):
            unique.append(path)
    return unique


def find_bin_dir(
    pg_bin: str | None = None, version: int | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """Resolve the server bin dir: --pg-bin/PG_BIN, pg_config, Debian/RHEL/Homebrew dirs, PATH.

    The order is the documented one: pg_config names the server the machine's admin chose, then the
    newest packaged version. With `version`, the first candidate of that major wins.
    """
    env = os.environ if env is None else env
    explicit = pg_bin or env.get("PG_BIN")
    if explicit:
        path = Path(explicit)
        if not _has_server(path):
            where = "--pg-bin" if pg_bin else "PG_BIN"
            raise DbTestActionError(
                f"{where}={explicit}: no initdb/postgres there; point it at the server's bin directory "
                "(e.g. /usr/lib/postgresql/16/bin)",
                EXIT_ENV,
            )
        if version is not None and server_major(path) != version:
            raise DbTestActionError(
                f"{explicit}: holds PostgreSQL {server_major(path)}, not {version}; "
                "drop --postgres-version or point --pg-bin elsewhere",
                EXIT_ENV,
            )
        return path
    candidates = candidate_dirs(env)
    if version is not None:
        for path in candidates:
            if server_major(path) == version:
                return path
        have = ", ".join(f"{server_major(p)} ({p})" for p in candidates) or "none"
        raise DbTestActionError(
            f"postgres: no PostgreSQL {version} server binaries (found: {have}); "
            f"install them: sudo apt-get install postgresql-{version} postgresql-contrib",
            EXIT_ENV,
        )
    if not candidates:
        raise DbTestActionError(
            "postgres: no PostgreSQL server binaries found (looked at PG_BIN, pg_config --bindir, "
            f"/usr/lib/postgresql/*/bin, PATH); {INSTALL_HINT}",
            EXIT_ENV,
        )
    return candidates[0]
