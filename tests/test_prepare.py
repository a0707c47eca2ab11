"""server/prepare.py on real servers: psql over our own server's socket, psycopg where psql is missing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from db_test_action.errors import DbTestActionError
from db_test_action.server.binaries import find_bin_dir
from db_test_action.server.launch import LaunchOptions, LocalServer


def _extensions(info) -> tuple[str, list[str]]:
    with psycopg.connect(info.url(), autocommit=True) as conn:
        return conn.execute(
            "SELECT current_database(), array_agg(extname::text ORDER BY extname) FROM pg_extension"
        ).fetchone()  # type: ignore[return-value]


@pytest.fixture
def bin_without_psql() -> Iterator[Path]:
    """The server's bin directory minus psql (links; world-readable, as root runs the server as postgres)."""
    folder = Path(tempfile.mkdtemp(prefix="dta-bin-"))
    folder.chmod(0o755)
    for tool in find_bin_dir().iterdir():
        if tool.name != "psql":
            (folder / tool.name).symlink_to(tool)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("database", ['we"ird db=1', "it's", "postgres", "dbname=x host=elsewhere"])
def test_any_database_name_gets_the_extensions_in_it_and_in_template1(database: str) -> None:
    with LocalServer(LaunchOptions(database=database, extensions=("pgcrypto", "citext"))) as info:
        assert _extensions(info) == (database, ["citext", "pgcrypto", "plpgsql"])
        with psycopg.connect(info.url("template1"), autocommit=True) as conn:
            names = conn.execute(
                "SELECT array_agg(extname::text ORDER BY extname) FROM pg_extension"
            ).fetchone()
        assert names == (["citext", "pgcrypto", "plpgsql"],)


def test_without_psql_the_driver_does_the_same(bin_without_psql: Path) -> None:
    with LocalServer(LaunchOptions(pg_bin=str(bin_without_psql), database="x'y")) as info:
        assert _extensions(info) == ("x'y", ["pgcrypto", "plpgsql"])


@pytest.mark.parametrize("psql", [True, False], ids=["psql", "psycopg"])
def test_a_missing_extension_is_named_with_its_package_and_nothing_is_left(
    psql: bool, bin_without_psql: Path, data_root: Path
) -> None:
    options = LaunchOptions(
        extensions=("pgcrypto", 'no"such'), data_root=str(data_root),
        pg_bin=None if psql else str(bin_without_psql),
    )  # fmt: skip
    with pytest.raises(DbTestActionError) as caught:
        LocalServer(options).start()
    assert 'extensions: no"such not available on 127.0.0.1:' in str(caught.value)
    assert "install postgresql-" in str(caught.value)
    assert not os.listdir(data_root)
