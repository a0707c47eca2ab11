"""The capabilities the action exposes as inputs, through the real CLI on real servers.

The URL a suite expects (user, password, port, database, driver scheme, more variable names), server
settings and the locale; a fixed database name that is still fresh on every repeat; the report noticing
a suite that used a database of its own; `--fail-on regressions` against a base report.
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

PROBE = textwrap.dedent(
    """
    import json, os, psycopg
    url = os.environ["DATABASE_URL"]
    plain = "postgresql://" + url.split("://", 1)[1]
    with psycopg.connect(plain) as conn:
        row = conn.execute(
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "current_database(), current_setting('max_locks_per_transaction'), current_setting('TimeZone'), "
            "(SELECT datcollate FROM pg_database WHERE datname = current_database()), "
            "(SELECT string_agg(x, '') FROM (SELECT unnest(ARRAY['b','a','B','A']) AS x ORDER BY 1) s)"
        ).fetchone()
    print(json.dumps({"url": url, "extra": os.environ.get("TEST_DB_URL"), "row": row}))
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_hard_coded_url_settings_and_locale_reach_the_suite(cli, cli_env, data_root: Path) -> None:
    port = _free_port()
    settings = "max_locks_per_transaction=256\ntimezone=Asia/Tokyo"
    proc = subprocess.run(
        [*cli, "postgres", "--data-root", str(data_root), "--user", "app", "--password", "s3cret",
         "--port", str(port), "--database", "dbname", "--server-settings", settings,
         "--url-driver", "asyncpg", "--db-url-env", "TEST_DB_URL", "--", "python", "-c", PROBE],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["url"] == f"postgresql+asyncpg://app:s3cret@127.0.0.1:{port}/dbname"
    assert seen["extra"] == seen["url"]
    user, is_super, database, locks, tz, collate, order = seen["row"]
    assert (user, is_super, database) == ("app", True, "dbname")
    assert (locks, tz) == ("256", "Asia/Tokyo")
    # C.UTF-8 by default: byte order for ASCII, but a UTF-8 cluster (not C with SQL_ASCII ctype)
    assert collate == "C.UTF-8" and order == "ABab"


def test_password_is_required_on_tcp(cli, cli_env, data_root: Path) -> None:
    check = "import os, psycopg, sys; url = os.environ['DATABASE_URL'].replace(':s3cret@', ':wrong@');\n"
    check += (
        "try:\n    psycopg.connect(url)\nexcept psycopg.OperationalError as e:\n    print('refused', e)\n"
    )
    proc = subprocess.run(
        [*cli, "postgres", "--data-root", str(data_root), "--password", "s3cret", "--", "python", "-c", check],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "refused" in proc.stdout and "password authentication failed" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server-settings", "max_locks_per_transaction"], "--server-settings: 'max_locks_per_transaction' is not name=value"),
        (["--url-driver", "mysql"], "--url-driver: 'mysql' is not a driver or a postgres scheme"),
        (["--db-url-env", "1BAD"], "--db-url-env: '1BAD' is not an environment variable name"),
        (["--locale", "xx_NOPE.UTF-8"], "--locale xx_NOPE.UTF-8: initdb refused it"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_errors(cli, cli_env, data_root: Path, args, message) -> None:
    proc = subprocess.run(
        [*cli, "postgres", "--data-root", str(data_root), *args, "--", "true"],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_the_action_inputs_arrive_as_environment(cli, cli_env, data_root: Path) -> None:
    env = {**cli_env, "DB_TEST_ACTION_URL_DRIVER": "psycopg", "DB_TEST_ACTION_DATABASE": "fromenv",
           "DB_TEST_ACTION_SERVER_SETTINGS": "max_locks_per_transaction=128"}  # fmt: skip
    probe = "import os; print(os.environ['DATABASE_URL'])"
    proc = subprocess.run(
        [*cli, "postgres", "--data-root", str(data_root), "--", "python", "-c", probe],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:") and url.endswith("/fromenv")


HARD_CODED = {
    "conftest.py": textwrap.dedent(
        """
        import os, psycopg, pytest

        @pytest.fixture
        def conn():
            # a conftest that ignores DATABASE_URL's name and hard-codes its own
            url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + os.environ["SUITE_DB"]
            with psycopg.connect(url, autocommit=True) as c:
                yield c
        """
    ),
    "test_state.py": textwrap.dedent(
        """
        def test_table_is_new(conn):
            conn.execute("CREATE TABLE once (id int)")  # fails when a repeat sees the last run's table
        """
    ),
}


def _suite(tmp_path: Path, files: dict[str, str]) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir()
    for name, text in files.items():
        (suite / name).write_text(text)
    return suite


def test_a_fixed_database_name_is_fresh_on_every_repeat(cli, cli_env, data_root, tmp_path) -> None:
    suite = _suite(tmp_path, HARD_CODED)
    env = {**cli_env, "SUITE_DB": "appdb"}
    proc = subprocess.run(
        [*cli, "run", "--data-root", str(data_root), "--database", "appdb", "--repeat", "2",
         "--results-dir", "res", "--", "-q", "-p", "no:randomly"],
        cwd=suite, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "pytest on database appdb" in proc.stderr


def test_the_report_names_a_database_the_suite_used_instead_of_the_fresh_one(
    cli, cli_env, data_root, tmp_path
) -> None:
    files = dict(HARD_CODED)
    files["conftest.py"] += textwrap.dedent(
        """
        def pytest_sessionstart(session):
            url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(url, autocommit=True) as c:
                if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'pazpaz_test'").fetchone():
                    c.execute("CREATE DATABASE pazpaz_test")
        """
    )
    suite = _suite(tmp_path, files)
    env = {**cli_env, "SUITE_DB": "pazpaz_test"}
    run = subprocess.run(
        [*cli, "run", "--data-root", str(data_root), "--repeat", "2", "--results-dir", "res", "--no-fail",
         "--", "-q", "-p", "no:randomly"],
        cwd=suite, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = subprocess.run(
        [*cli, "report", "res", "--manifest", "res/manifest.json", "--markdown", "report.md", "--json", "r.json"],
        cwd=suite, env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # run 2 found run 1's table: passed once, failed once
    assert "FLAKY" in report.stdout.splitlines()[0] and 'relation "once" already exists' in report.stdout
    warning = "the suite used pazpaz_test, not the fresh database: repeats share state"
    assert warning in report.stdout
    md = (suite / "report.md").read_text()
    assert "the suite used `pazpaz_test`, not the fresh database: repeats share state" in md
    assert json.loads((suite / "r.json").read_text())["server"]["foreign_databases"] == ["pazpaz_test"]


def _junit(folder: Path, outcomes: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, outcome in outcomes.items():
        body = '<failure message="AssertionError: no">assert False</failure>' if outcome == "failed" else ""
        cases.append(
            f'<testcase classname="tests.test_x" name="{name}" file="tests/test_x.py" time="0.1">{body}</testcase>'
        )
    xml = f'<testsuites><testsuite name="pytest" time="1.0">{"".join(cases)}</testsuite></testsuites>'
    (folder / "shard-1-run-1.xml").write_text(xml)


def test_fail_on_regressions_flags_a_new_failure_and_ignores_an_old_one(cli, cli_env, tmp_path) -> None:
    def report(folder: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, "report", folder, *args], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    _junit(tmp_path / "base", {"test_old": "failed", "test_new": "passed", "test_ok": "passed"})
    assert report("base", "--json", "base.json", "--fail-on", "none").returncode == 0
    _junit(tmp_path / "same", {"test_old": "failed", "test_new": "passed", "test_ok": "passed"})
    same = report("same", "--base", "base.json", "--fail-on", "regressions")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "regressions (vs base): 0 new failing tests" in same.stdout

    _junit(tmp_path / "worse", {"test_old": "failed", "test_new": "failed", "test_ok": "passed"})
    worse = report("worse", "--base", "base.json", "--fail-on", "regressions", "--markdown", "w.md")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "regressions (vs base): 1 new failing tests" in worse.stdout
    md = (tmp_path / "w.md").read_text()
    assert "1 new failing test(s): `tests/test_x.py::test_new`" in md and "test_old`" not in md

    # no base report: nothing can be shown to be old, so every failure gates
    alone = report("same", "--fail-on", "regressions")
    assert alone.returncode == 1 and "no base: all new" in alone.stdout
